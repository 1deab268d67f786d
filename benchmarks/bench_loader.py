"""How fast the HDF5 cache feeds a GPU: training items/s of one DataLoader worker, old reader vs new,
and how many workers a GPU needs for a given rate.

On a synthetic cache shaped like VoxCeleb2 after extraction (utterances of 4-12 s, 100 fbank
frames/s, 80 mels stored as float16 in 16-item shards, faces at 5 fps, 512-d), one epoch of a
training ``GridDataset`` on 3 s crops (300 frames) in random order, batched by the trainer's
``collate``. One process (``num_workers=0``) measures what one loader worker delivers.

Contenders, side by side in this process on the same files:

* *old*: the reader as it was (:class:`LegacyCache`): every read looks each dataset up by name in
  its shard file and reads the whole utterance, of which the dataset keeps the crop;
* *new*: dataset objects kept per open file (``common.hdf5.H5Files.dataset``) and only the cell's
  span of fbank rows read.

Each on the cache as extraction leaves it (16-item shards: more files than the reader keeps open,
``Cache.max_open_files``, so nearly every random read opens one, as at VoxCeleb2 scale) and after
``extract compact`` (a few large shards, all held open); on the first also with every file kept
open, to show what the opens cost. Then ``--workers`` loader processes of the new reader on the
compacted cache, to see it scale with cores (it cannot scale past the machine's free cores).

    python benchmarks/bench_loader.py                     # 4,000 items (~40 s to build), ~3 min
    python benchmarks/bench_loader.py --items 20000 --workers 1 2 4 8 --target 4000
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from distill.config import DataConfig
from distill.data.dataset import Grid, GridDataset, collate
from extract import open_cache
from extract.cache import build_cache
from extract.cache.reader import Cache
from extract.compact import compact_cache


class LegacyCache(Cache):
    """The reader before dataset objects were kept: a name lookup per field and read, and the whole
    utterance read (the dataset used to crop it in memory; ``frames`` is applied after the read)."""

    def read_at(
        self,
        position: int,
        fields: Sequence[str] = ("fbank",),
        *,
        labels: bool = True,
        frames: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        fb_off, n_fb, face_off, n_face = (int(v) for v in self.table.locations[position])
        h5 = self._file(self.shard_name(position))
        out: dict[str, Any] = self.labels_at(position) if labels else {}
        for name in fields:
            a, n = (fb_off, n_fb) if name == "fbank" else (face_off, n_face)
            data = h5[name][a : a + n] if n else np.zeros((0,) + h5[name].shape[1:], h5[name].dtype)
            out[name] = data.astype(np.float32, copy=False) if data.dtype.kind == "f" else data
        if frames is not None:
            out["fbank"] = out["fbank"][frames[0] : frames[1]]
        return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", type=int, default=4000, help="utterances in the synthetic cache")
    p.add_argument("--seconds", type=float, nargs=2, default=(4.0, 12.0), help="utterance length range (mean 8 s)")
    p.add_argument("--crop", type=int, default=300, help="fbank frames per training crop (3 s)")
    p.add_argument("--n-mels", type=int, default=80)
    p.add_argument("--fps", type=float, default=5.0, help="face frames per second (extraction's default)")
    p.add_argument("--shard-size", type=int, default=16, help="items per shard (extract run's default)")
    p.add_argument("--compact-mb", type=float, default=64.0, help="extract compact's target shard size")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--samples", type=int, default=2000, help="items timed per measurement")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader worker counts to time")
    p.add_argument("--target", type=float, default=4000.0, help="items/s a GPU should be fed")
    p.add_argument("--work", help="scratch directory (caches already built there are reused)")
    return p.parse_args()


def synthetic_items(n: int, seconds: tuple[float, float], n_mels: int, fps: float, seed: int = 0):
    """VoxCeleb2-like items: random log-mels and unit face vectors (the values do not matter here)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        frames = int(rng.uniform(*seconds) * 100)
        n_face = max(1, int(frames / 100 * fps))
        face = rng.standard_normal((n_face, 512)).astype(np.float32)
        yield {
            "utt_id": f"id{i // 20:05d}/clip{i:07d}",
            "fbank": rng.normal(0.0, 4.0, (frames, n_mels)).astype(np.float32),
            "face": face / np.linalg.norm(face, axis=1, keepdims=True),
            "face_found": np.ones(n_face, bool),
            "frame_times": (np.arange(n_face) / fps).astype(np.float32),
            "has_video": True,
            "duration": frames / 100,
            "speaker": f"id{i // 20:05d}",
            "split": "train",
        }


def caches(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """The cache as extraction writes it, and a compacted copy."""
    small = work / f"cache-{args.items}-{args.n_mels}-{args.shard_size}"
    if not (small / "config.json").is_file():
        started = time.perf_counter()
        items = synthetic_items(args.items, tuple(args.seconds), args.n_mels, args.fps)
        build_cache(small, items, shard_size=args.shard_size)
        print(f"built {small} in {time.perf_counter() - started:.0f} s")
    large = work / f"{small.name}-compact{args.compact_mb:g}"
    if not (large / "config.json").is_file():
        shutil.copytree(small, large)
        compact_cache(large, args.compact_mb)
    return {f"{args.shard_size}-item shards": small, f"compacted to {args.compact_mb:g} MB": large}


def dataset(cache, crop: int, faces: bool) -> GridDataset:
    grid = Grid.from_config(DataConfig(crop=crop, crop_hop=crop // 2))
    rows = np.arange(len(cache))
    return GridDataset(cache, rows, np.zeros(len(rows), np.int64), grid, faces=faces, train=True, seed=0)


def loader_rate(ds: GridDataset, batch: int, samples: int, workers: int) -> float:
    """Items/s of a DataLoader over ``samples`` random items, after its first batch (worker start-up)."""
    sampler = RandomSampler(ds, num_samples=samples + batch, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate)
    it = iter(loader)
    next(it)
    started, n = time.perf_counter(), 0
    for b in it:
        n += len(b["utt_id"])
    return n / (time.perf_counter() - started)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-loader-"))
    work.mkdir(parents=True, exist_ok=True)
    dirs = caches(args, work)
    first = open_cache(next(iter(dirs.values())))
    mean_s = float(np.mean(first.table.locations[:, 1])) / 100
    print(
        f"{len(first)} items, mean {mean_s:.1f} s, {args.n_mels} mels (float16), faces at {args.fps:g} fps; "
        f"training crops of {args.crop} frames, batches of {args.batch}, {args.samples} random items per figure"
    )
    need: dict[tuple[str, str], float] = {}
    for role, faces in (("student (fbank)", False), ("teacher (fbank + faces)", True)):
        print(f"\n{role}: items/s in one process, old reader vs new; then the new one in 1 loader worker")
        for label, path in dirs.items():
            n_shards = len(list((path / "shards").glob("*.h5")))
            old = loader_rate(dataset(LegacyCache(path), args.crop, faces), args.batch, args.samples, 0)
            ds = dataset(open_cache(path), args.crop, faces)
            new = loader_rate(ds, args.batch, args.samples, 0)
            worker = loader_rate(ds, args.batch, args.samples, 1)
            need[role, label] = worker
            print(
                f"  {label:<22} ({n_shards:>4} files)  old {old:6,.0f}  new {new:6,.0f} ({new / old:.2f}x)  "
                f"1 worker {worker:6,.0f} (batches cross a process: {worker / new:.2f}x of in-process)"
            )
            if n_shards > Cache.max_open_files:  # what the file opens cost: the same reads with every file kept open
                held = open_cache(path)
                held._handles.max_open = n_shards
                rate = loader_rate(dataset(held, args.crop, faces), args.batch, args.samples, 0)
                print(f"  {'':<22} {'':>12}  new, all {n_shards} files kept open: {rate:6,.0f} ({rate / new:.2f}x)")
        ds = dataset(open_cache(dirs[list(dirs)[-1]]), args.crop, faces)
        for w in args.workers:
            rate = loader_rate(ds, args.batch, args.samples, workers=w)
            print(f"  {w} loader worker(s), compacted: {rate:6,.0f} items/s ({rate / w:,.0f} per worker)")
    print(f"\nloader workers for {args.target:,.0f} items/s, at the 1-worker rate (given as many free cores):")
    for (role, label), rate in need.items():
        print(f"  {role:<24} {label:<22} {math.ceil(args.target / rate):>3} ({rate:,.0f} items/s each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
