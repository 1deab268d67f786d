"""What augmentation costs per training step (``python benchmarks/bench_augment.py``), in one process:

(a) student training epochs with augmentation off, SpecAugment masks, noise from a noise cache, and
    both, interleaved over rounds (medians), read by the loader in the training process
    (``data.num_workers=0``: the worst case, nothing hides the cost); ratio to "off" per step;
(b) per cell: the loader's read with and without augmentation, and what a waveform route would
    cost instead (reverberation by FFT convolution with a 0.5 s impulse response, then speechbrain's
    Fbank on the cell's audio), the reference for docs/training.md's choice of no waveform store.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distill.config import load_config
from distill.testing import make_lupi_items
from distill.train import Trainer, run_training
from extract.cache import build_cache
from extract.config import ExtractConfig
from extract.fbank import LogMel

CONTENDERS = {
    "off": {},
    "masks": {"augment.time_masks": 2, "augment.freq_masks": 2},
    "noise": {"augment.p_noise": 1.0},
    "noise+masks": {"augment.p_noise": 1.0, "augment.time_masks": 2, "augment.freq_masks": 2},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", type=int, default=960, help="synthetic training items")
    p.add_argument("--frames", type=int, default=300, help="fbank frames per item (3 s)")
    p.add_argument("--noise-items", type=int, default=20, help="noise items of 10 s")
    p.add_argument("--rounds", type=int, default=3, help="epochs per contender, interleaved")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers (0: augmentation in the training process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--work", help="scratch directory; a fresh temp dir when not given")
    return p.parse_args()


def noise_items(n: int, n_mels: int = 80, frames: int = 1000) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"utt_id": f"noise{i:03d}", "fbank": rng.normal(10.0, 6.0, (frames, n_mels)).astype(np.float32),
             "face": np.zeros((0, 512), np.float32), "face_found": np.zeros(0, bool),
             "frame_times": np.zeros(0, np.float32), "has_video": False, "duration": frames / 100} for i in range(n)]


def per_cell_ms(fn, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - started) / n * 1000


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-augment-"))
    items = make_lupi_items(10, args.items // 10, n_frames=args.frames, n_mels=80, fps=5, length_jitter=50,
                            split_ratios=(0.6, 0.2, 0.2))
    cache = build_cache(work / "cache", items)
    noise = build_cache(work / "noise", noise_items(args.noise_items))
    base = {"cache": str(cache), "train.epochs": 1, "train.threads": args.threads, "augment.noise": str(noise),
            "data.num_workers": args.workers}
    print(f"{len(items)} items x {args.frames} frames x 80 mels, noise {args.noise_items} x 10 s, in {work}")
    run_training(load_config(overrides={**base, "role": "teacher"}), work / "teacher", progress=False)

    trainers, loaders = {}, {}
    for name, over in CONTENDERS.items():
        plain = {k: v for k, v in base.items() if k != "augment.noise"}
        over = {**(base if "noise" in name else plain), **over}
        cfg = load_config(overrides={**over, "role": "student", "distill.method": "embed+softlabel",
                                     "distill.teacher": str(work / "teacher")})
        trainers[name] = Trainer(cfg, work / f"student-{name}", progress=False)
        loaders[name] = trainers[name].train_loader(trainers[name].train_dataset())
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    steps = 0
    for r in range(args.rounds + 1):  # round 0 warms up (allocator, kernels, HDF5 handles)
        for name, (loader, sampler) in loaders.items():
            sampler.set_epoch(r + 1)
            started = time.perf_counter()
            trainers[name].train_epoch(loader, r + 1)
            if r:
                times[name].append(time.perf_counter() - started)
            steps = len(loader)
    off = statistics.median(times["off"]) / steps
    print(f"(a) per training step (batch {trainers['off'].cfg.data.batch_size}, median of {args.rounds} epochs of "
          f"{steps} steps, num_workers={args.workers}):")
    for name in CONTENDERS:
        step = statistics.median(times[name]) / steps
        print(f"    {name:<12} {1000 * step:7.1f} ms  -> {step / off:.3f}x off")

    # (b) per cell: the loader's read (+ augmentation) vs a waveform route's reverb + Fbank
    n = 200
    clean, noisy = loaders["off"][0].dataset, loaders["noise+masks"][0].dataset
    t_clean = per_cell_ms(lambda i: clean[(1, i % len(clean))], n)
    t_aug = per_cell_ms(lambda i: noisy[(1, i % len(noisy))], n)
    crop = trainers["off"].cfg.data.crop
    logmel = LogMel(ExtractConfig())
    rng = np.random.default_rng(0)
    wave = rng.standard_normal((16, 160 * crop)).astype(np.float32)
    rir = (rng.standard_normal((16, 8000)) * np.exp(-np.arange(8000) / 1600)).astype(np.float32)

    def waveform_route(i: int) -> None:
        x = torch.from_numpy(wave[i % 16])
        h = torch.from_numpy(rir[i % 16])
        size = len(x) + len(h) - 1
        y = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(h, size), size)[: len(x)]
        logmel(y.numpy())

    t_wave = per_cell_ms(waveform_route, n)
    print(f"(b) per cell ({crop} frames): loader read {t_clean:.3f} ms, with noise+masks {t_aug:.3f} ms "
          f"(+{t_aug - t_clean:.3f} ms); a waveform route (0.5 s reverb + Fbank) {t_wave:.3f} ms")
    ratio = {name: statistics.median(times[name]) / steps / off for name in CONTENDERS}
    print(f"bench-augment: per step noise+masks {ratio['noise+masks']:.3f}x off, masks {ratio['masks']:.3f}x, "
          f"noise {ratio['noise']:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
