"""Decoded frames from workers to the face consumer: through joblib's result pipe vs the frame spool.

``python benchmarks/bench_spool.py`` (about a minute on 2 cores): joblib workers return tasks of
decoded-looking items (16 clips of 56 frames at 256² × 3, 176 MB a task, as ``extract run`` at 25
fps makes them) either as they are (pickled through the pipe and unpickled by the driver) or
stashed in the spool (``extract.spool``: one ``.npy`` file per task, only its name returned); the
driver then maps each task's frames and reads them once, as the consumer's copy into its batch
buffer does. Both contenders make their frames the same way, so the difference is the transfer.
Prints seconds and GB/s per contender and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import joblib
import numpy as np

from extract.decode import Decoded
from extract.pipeline import Loaded, ManifestItem
from extract.spool import SHM, stash, unstashed


def make_task(n_items: int, frames: int, size: int, spool: str | None) -> list[Loaded]:
    items = []
    for i in range(n_items):
        pixels = np.full((frames, size, size, 3), i % 251, dtype=np.uint8)
        media = Decoded(np.zeros(16000, np.float32), pixels, np.arange(frames, dtype=np.float32), True)
        items.append(Loaded(ManifestItem(f"u{i}", f"/u{i}.mp4"), media, np.zeros((200, 80), np.float32), 2.0))
    return stash(items, spool) if spool else items


def receive(args: argparse.Namespace, spool: str | None) -> tuple[float, int]:
    parallel = joblib.Parallel(n_jobs=args.workers, return_as="generator_unordered", batch_size=1)
    began, nbytes = time.perf_counter(), 0
    tasks = (joblib.delayed(make_task)(args.items, args.frames, args.size, spool) for _ in range(args.tasks))
    for task in parallel(tasks):
        with unstashed(task) as items:
            nbytes += sum(
                int(np.asarray(x.media.frames).sum(dtype=np.uint64) >= 0) * x.media.frames.nbytes for x in items
            )
    return time.perf_counter() - began, nbytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--items", type=int, default=16, help="clips per task")
    p.add_argument("--frames", type=int, default=56, help="frames per clip")
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    receive(args, None)  # start the workers
    with tempfile.TemporaryDirectory(dir=SHM if SHM.is_dir() else None) as spool:
        results = {"pipe": receive(args, None), "spool": receive(args, spool)}
    for name, (seconds, nbytes) in results.items():
        print(f"{name:6} {seconds:6.2f} s  {nbytes / seconds / 1e9:5.2f} GB/s  ({nbytes / 1e9:.2f} GB)")
    print(f"spool / pipe: {results['spool'][0] / results['pipe'][0]:.2f}x the time")


if __name__ == "__main__":
    main()
