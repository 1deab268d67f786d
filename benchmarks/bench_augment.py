"""What augmentation costs per training step (``python benchmarks/bench_augment.py``), in one process:

(a) a student training step (loading the batch in the training process, ``data.num_workers=0``:
    the worst case, nothing hides the cost) with augmentation off, SpecAugment masks, noise from a
    noise cache, and both, interleaved batch by batch; medians of CPU time; ratio to "off";
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
from distill.data.dataset import collate
from distill.testing import make_lupi_items, make_noise_items
from distill.train.trainer import Trainer, run_training
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
    p.add_argument("--items", type=int, default=320, help="synthetic training items")
    p.add_argument("--frames", type=int, default=300, help="fbank frames per item (3 s)")
    p.add_argument("--noise-items", type=int, default=20, help="noise items of 10 s")
    p.add_argument("--batches", type=int, default=40, help="training steps per contender, interleaved")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--work", help="scratch directory; a fresh temp dir when not given")
    return p.parse_args()


def per_cell_ms(fn, n: int) -> float:
    """Median CPU ms of fn(i) over n calls."""
    times = []
    for i in range(n):
        started = time.process_time()
        fn(i)
        times.append(time.process_time() - started)
    return statistics.median(times) * 1000


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-augment-"))
    items = make_lupi_items(
        10, args.items // 10, n_frames=args.frames, n_mels=80, fps=5, length_jitter=50, split_ratios=(0.6, 0.2, 0.2)
    )
    cache = build_cache(work / "cache", items)
    noise = build_cache(work / "noise", make_noise_items([1000] * args.noise_items, seed=1))
    base = {"cache": str(cache), "train.epochs": 1, "train.threads": args.threads, "augment.noise": str(noise)}
    print(f"{len(items)} items x {args.frames} frames x 80 mels, noise {args.noise_items} x 10 s, in {work}")
    run_training(load_config(overrides={**base, "role": "teacher"}), work / "teacher", progress=False)

    trainers, datasets = {}, {}
    for name, over in CONTENDERS.items():
        plain = {k: v for k, v in base.items() if k != "augment.noise"}
        over = {**(base if "noise" in name else plain), **over}
        cfg = load_config(
            overrides={
                **over,
                "role": "student",
                "distill.method": "embed+softlabel",
                "distill.teacher": str(work / "teacher"),
            }
        )
        trainers[name] = Trainer(cfg, work / f"student-{name}", progress=False)
        datasets[name] = trainers[name].train_dataset()
    # Per batch, every contender in turn (rotating who goes first): load the batch (read + augment +
    # collate), then one training step; CPU time of this process, so other jobs on a shared
    # machine do not land in one contender's figure.
    bs = trainers["off"].cfg.data.batch_size
    names = list(CONTENDERS)
    load: dict[str, list[float]] = {name: [] for name in names}
    step: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(0)
    for b in range(args.batches + 2):  # the first two warm up (allocator, kernels, HDF5 handles)
        idx = rng.choice(len(datasets["off"]), bs, replace=False)
        for name in names[b % len(names) :] + names[: b % len(names)]:
            t0 = time.process_time()
            batch = collate([datasets[name][(b + 1, int(i))] for i in idx])
            t1 = time.process_time()
            trainers[name].train_epoch([batch], b + 1)
            t2 = time.process_time()
            if b >= 2:
                load[name].append(t1 - t0)
                step[name].append(t2 - t1)
    med = {name: (statistics.median(load[name]), statistics.median(step[name])) for name in names}
    off = sum(med["off"])
    print(
        f"(a) per training step (batch {bs}, {trainers['off'].cfg.data.crop} frames, medians of {args.batches} "
        f"batches, CPU ms of this process, loading in the training process):"
    )
    ratio = {}
    for name in names:
        ratio[name] = sum(med[name]) / off
        print(
            f"    {name:<12} load {1000 * med[name][0]:6.1f} + step {1000 * med[name][1]:6.1f} = "
            f"{1000 * sum(med[name]):6.1f} ms -> {ratio[name]:.3f}x off"
        )

    # (b) per cell: the loader's read (+ augmentation) vs a waveform route's reverb + Fbank
    n = 200
    clean, noisy = datasets["off"], datasets["noise+masks"]
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
    print(
        f"(b) per cell ({crop} frames): loader read {t_clean:.3f} ms, with noise+masks {t_aug:.3f} ms "
        f"(+{t_aug - t_clean:.3f} ms); a waveform route (0.5 s reverb + Fbank) {t_wave:.3f} ms"
    )
    print(
        f"bench-augment: per step noise+masks {ratio['noise+masks']:.3f}x off, masks {ratio['masks']:.3f}x, "
        f"noise {ratio['noise']:.3f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
