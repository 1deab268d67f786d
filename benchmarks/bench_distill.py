"""Training-side benchmark (``make bench-distill``), all on one synthetic cache in one run:

(a) student training steps/s reading the HDF5 cache vs the same batches held in memory
    (target: >= 0.9x, i.e. the loader is not the bottleneck);
(b) a student epoch with cached teacher targets vs with the teacher run live on every batch
    (target: <= 0.5x the time);
(c) loader RSS (main process + workers) over 10 epochs with several DataLoader workers
    (target: growth <= 5%; HDF5 handle/chunk caching is the known trap).

The EER/minDCF-at-1M-trials part is benchmarks/bench_metrics.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
import torch
from tqdm import tqdm

from distill.config import load_config
from distill.testing import make_lupi_items
from distill.train.trainer import Trainer, run_training
from extract.cache import build_cache


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", type=int, default=480, help="synthetic items (utterances)")
    p.add_argument("--frames", type=int, default=300, help="fbank frames per item (3 s)")
    p.add_argument("--n-mels", type=int, default=80)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for (a) and (c)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the training process (more than the free cores makes OpenMP spin)",
    )
    p.add_argument("--epochs-rss", type=int, default=10, help="epochs of the RSS measurement")
    p.add_argument(
        "--teacher-channels",
        type=int,
        default=256,
        help="teacher audio width for (b); the student keeps the default width (64)",
    )
    p.add_argument("--work", help="scratch directory; a fresh temp dir when not given")
    return p.parse_args()


def timed_epoch(trainer: Trainer, batches, epoch: int = 1) -> tuple[float, int]:
    started = time.perf_counter()
    trainer.train_epoch(batches, epoch)
    return time.perf_counter() - started, len(batches)


def rss_tree(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-distill-"))
    per_class = args.items // 10
    print(f"building a synthetic cache: {10 * per_class} items x {args.frames} frames x {args.n_mels} mels in {work}")
    items = make_lupi_items(
        10, per_class, n_frames=args.frames, n_mels=args.n_mels, fps=5, length_jitter=50, split_ratios=(0.6, 0.2, 0.2)
    )
    cache = build_cache(work / "cache", items)
    base = {"cache": str(cache), "train.epochs": 1, "train.threads": args.threads}

    print("training the teacher (1 epoch) and writing its targets ...")
    teacher_over = {**base, "role": "teacher", "model.audio_channels": args.teacher_channels}
    run_training(load_config(overrides=teacher_over), work / "teacher", progress=False)
    # (a) HDF5 loader vs the same batches from memory, loading in-process and in worker processes
    ratios = {}
    for workers in sorted({0, args.workers}):
        cfg = load_config(
            overrides={
                **base,
                "role": "student",
                "distill.method": "embed+softlabel",
                "distill.teacher": str(work / "teacher"),
                "data.num_workers": workers,
            }
        )
        trainer = Trainer(cfg, work / "student", progress=False)
        dataset = trainer.train_dataset()
        loader, sampler = trainer.train_loader(dataset)
        sampler.set_epoch(1)
        in_memory = list(loader)
        timed_epoch(trainer, in_memory)  # warm-up (allocator, kernels)
        t_hdf5, n = timed_epoch(trainer, loader)
        t_mem, _ = timed_epoch(trainer, in_memory)
        ratios[workers] = t_mem / t_hdf5
        print(
            f"(a) data.num_workers={workers}: steps/s HDF5 loader {n / t_hdf5:.2f}, in memory {n / t_mem:.2f} "
            f"-> ratio {ratios[workers]:.2f} (target >= 0.9)"
        )
    best_workers = max(ratios, key=ratios.get)
    ratio_a = ratios[best_workers]

    # (b) cached targets vs the teacher run live (same batches' worth of items, 0 workers both)
    single = load_config(
        overrides={
            **base,
            "role": "student",
            "distill.method": "embed+softlabel",
            "distill.teacher": str(work / "teacher"),
        }
    )
    results = {}
    for name, live in (("cached", False), ("live", True)):
        tr = Trainer(single, work / f"student-{name}", live_teacher=live, progress=False)
        ds = tr.train_dataset()
        ld, sm = tr.train_loader(ds)
        timed_epoch(tr, list(ld)[:2])  # warm-up
        results[name], _ = timed_epoch(tr, ld)
    ratio_b = results["cached"] / results["live"]
    print(
        f"(b) student epoch: cached targets {results['cached']:.2f} s, live teacher {results['live']:.2f} s "
        f"-> ratio {ratio_b:.2f} (target <= 0.5)"
    )

    # (c) RSS of the training loader (persistent workers) over epochs: main process + workers
    cfg = load_config(
        overrides={
            **base,
            "role": "student",
            "distill.method": "embed+softlabel",
            "distill.teacher": str(work / "teacher"),
            "data.num_workers": args.workers,
        }
    )
    trainer = Trainer(cfg, work / "student", progress=False)
    dataset = trainer.train_dataset()
    loader, sampler = trainer.train_loader(dataset)
    proc = psutil.Process()
    rss = []
    for epoch in tqdm(range(1, args.epochs_rss + 1), desc="(c) loader epochs"):
        sampler.set_epoch(epoch)
        peak = 0
        for i, _ in enumerate(loader):
            if i % 4 == 0:
                peak = max(peak, rss_tree(proc))
        rss.append(peak)
    growth = (rss[-1] - rss[0]) / rss[0]
    print(
        f"(c) loader RSS per epoch (MiB, main + {args.workers} workers): " + " ".join(f"{r / 2**20:.0f}" for r in rss)
    )
    print(f"(c) RSS growth epoch 1 -> {args.epochs_rss}: {100 * growth:+.1f}% (target <= 5%)")
    ok = ratio_a >= 0.9 and ratio_b <= 0.5 and growth <= 0.05
    print(
        f"bench-distill: hdf5/memory {ratio_a:.2f}x (num_workers={best_workers}), cached/live {ratio_b:.2f}x, "
        f"RSS {100 * growth:+.1f}% "
        f"-> {'all targets met' if ok else 'some targets missed'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
