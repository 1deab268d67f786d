"""VoxCeleb2 scale: opening a 1.1 M-item cache, random reads, and loader-worker memory.

Old and new side by side, on the same files, in one run (ratios):

* **open**: an ``index.jsonl`` of ``--rows`` rows in the cache's own format (VoxCeleb2-like ids,
  paths, speakers, 16-item shards written in completion order; no shard files: opening reads the
  index alone). Each contender opens it in a fresh subprocess, which reports its open time and
  its peak RSS (imports included): *old* is the reader before the snapshot (every row through
  ``json.loads``, a DataFrame, a dict of positions and two lists of per-row dicts, reproduced in
  :func:`legacy_open`); *first open* is a cache from before snapshots (the log parsed once, the
  snapshot written); *snapshot* and *snapshot + tail* are every later open.
* **reads**: a real cache of ``--items`` items (random features, 16-item shards as extraction
  writes them) read at random, before and after ``extract compact``, and through the old reader.
* **workers**: 4 DataLoader workers (fork) over one epoch of a training GridDataset (each
  contender in a fresh process, so neither inherits the other's heap), each
  worker's RSS and USS (pages it holds alone: the copies) after its first batch and at the end of
  the epoch); the old dataset (a list of utt ids over the old reader) against the new one (rows
  over the columnar index). Twice: on the real cache, and on a ``--worker-rows``-row index whose
  rows point into that cache's shards, with an epoch of ``--epoch-samples`` random samples.

    python benchmarks/bench_scale.py                      # 1.1 M rows, 3,000 items (a few minutes)
    python benchmarks/bench_scale.py --rows 100000 --worker-rows 50000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from extract.cache import (
    ARRAY_FIELDS,
    INDEX_FILE,
    LOCATION_COLUMNS,
    SNAPSHOT_FILE,
    Cache,
    build_cache,
    commit_rows,
    config_hash,
    open_cache,
    read_index_rows,
    write_config,
    write_snapshot,
)

ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))


# --------------------------------------------------------------------------- the old reader, kept for the ratio


def legacy_open(cache_dir: Path) -> dict:
    """What ``Cache.__init__`` did before the snapshot (extract/cache.py at b51cb3d), minus the config."""
    import pandas as pd

    rows = read_index_rows(cache_dir)  # json.loads per line, the latest row per utt_id, sorted
    index = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["utt_id", *LOCATION_COLUMNS])
    index = index.set_index("utt_id", drop=False)
    index.index.name = None
    label_columns = [c for c in index.columns if c not in LOCATION_COLUMNS]
    return {
        "index": index,
        "position": {utt: i for i, utt in enumerate(index["utt_id"])},
        "records": index[label_columns].to_dict("records"),
        "loc": index[list(LOCATION_COLUMNS)].to_dict("records"),
    }


class LegacyCache(Cache):
    """A Cache whose lookups go through the old per-row Python objects (the new arrays are dropped)."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__(cache_dir)
        state = legacy_open(cache_dir)
        self._position, self._records, self._loc = state["position"], state["records"], state["loc"]
        self.legacy_index = state["index"]
        self.table = None  # nothing below may use the columnar index

    def read(self, utt_id: str, fields=ARRAY_FIELDS) -> dict:
        i = self._position[utt_id]
        loc = self._loc[i]
        out = dict(self._records[i])
        h5 = self._file(loc["shard"])
        for name in fields:
            a, n = (loc["fbank_offset"], loc["n_fbank"]) if name == "fbank" else (loc["face_offset"], loc["n_face"])
            data = h5[name][a : a + n]
            out[name] = data.astype(np.float32, copy=False) if data.dtype.kind == "f" else data
        return out


def legacy_dataset(cache: LegacyCache, utt_ids: list[str], grid, faces: bool):
    """The old GridDataset: a list of utt ids, read through the old cache."""
    import torch

    from distill.data.dataset import GridDataset

    class LegacyGridDataset(GridDataset):
        def __init__(self):  # the fields GridDataset.__getitem__ needs, filled the old way
            self.cache, self.old_ids = cache, list(utt_ids)
            self.labels = np.zeros(len(utt_ids), np.int64)
            self.grid, self.faces, self.train, self.seed, self.targets, self.epoch = grid, faces, True, 0, None, 0
            self.hop_s = 0.01
            self.n_frames = cache.legacy_index.loc[self.old_ids, "n_fbank"].to_numpy().astype(np.int64)
            self.n_cells = np.array([grid.n_cells(int(n)) for n in self.n_frames], dtype=np.int64)
            self.fields = ("fbank", "face", "face_found", "frame_times") if faces else ("fbank",)

        def __len__(self):
            return len(self.old_ids)

        def __getitem__(self, key):
            epoch, i = key if isinstance(key, tuple) else (None, key)
            item, cell = self.locate(i, epoch)
            utt = self.old_ids[item]
            arrays = self.cache.read(utt, fields=self.fields)
            rows = self.grid.frame_index(len(arrays["fbank"]), cell)
            sample = {
                "fbank": torch.from_numpy(arrays["fbank"][rows]),
                "label": 0,
                "item": item,
                "cell": cell,
                "utt_id": utt,
            }
            if self.faces:
                sample.update(self._faces(arrays, rows, len(arrays["fbank"])))
            return sample

    return LegacyGridDataset()


# --------------------------------------------------------------------------- a VoxCeleb2-sized index


def youtube_ids(rng: np.random.Generator, n: int) -> list[str]:
    return ["".join(row) for row in ALPHABET[rng.integers(0, len(ALPHABET), size=(n, 11))]]


def voxceleb2_rows(n_rows: int, seed: int = 0, shard_size: int = 16) -> list[dict]:
    """Index rows as `extract run` commits them for a VoxCeleb2 manifest: ~6,000 speakers, ~7 clips a video."""
    rng = np.random.default_rng(seed)
    n_speakers = max(2, round(n_rows / 184))  # 1,128,246 clips / 6,112 speakers
    speakers = [f"id{i:05d}" for i in rng.choice(10_000, n_speakers, replace=False)]
    genders = rng.choice(["m", "f"], n_speakers)
    per_speaker = rng.multinomial(n_rows, np.full(n_speakers, 1 / n_speakers))
    rows = []
    for s, (spk, count) in enumerate(zip(speakers, per_speaker)):
        videos = youtube_ids(rng, max(1, count // 7))
        clip = {}
        test = s % 52 == 0  # ~118 test speakers
        for v in rng.integers(0, len(videos), count):
            video = videos[v]
            clip[video] = clip.get(video, 0) + 1
            utt = f"{spk}/{video}/{clip[video]:05d}"
            duration = float(np.round(rng.gamma(4.0, 2.0) + 4.0, 2))
            part = "test" if test else "dev"
            rows.append(
                {
                    "utt_id": utt,
                    "duration": duration,
                    "has_video": True,
                    "path": f"{part}/mp4/{utt}.mp4",
                    "speaker": spk,
                    "video": video,
                    "subset": part,
                    "split": "test" if test else "train",
                    "gender": str(genders[s]),
                }
            )
    order = rng.permutation(len(rows))  # the manifest's order, then tasks finishing out of order
    chunks = [order[i : i + shard_size] for i in range(0, len(order), shard_size)]
    out = []
    for c in rng.permutation(len(chunks)):
        shard, fb, face = f"{uuid.UUID(int=int(rng.integers(2**63)) << 64 | int(c)).hex}.h5", 0, 0
        for i in chunks[c]:
            r = rows[i]
            n_fb, n_face = int(r["duration"] * 100), int(r["duration"] * 5)
            out.append(
                {
                    "utt_id": r["utt_id"],
                    "shard": shard,
                    "fbank_offset": fb,
                    "n_fbank": n_fb,
                    "face_offset": face,
                    "n_face": n_face,
                    **{k: v for k, v in r.items() if k != "utt_id"},
                }
            )
            fb, face = fb + n_fb, face + n_face
    return out


def write_index(cache_dir: Path, rows: list[dict]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    config = {"synthetic": True, "n_mels": 80, "hop_ms": 10.0, "dtype": "float16", "fps": 5.0}
    write_config(cache_dir, dict(config, hash=config_hash(config)))
    for i in range(0, len(rows), 100_000):
        commit_rows(cache_dir, rows[i : i + 100_000])


# --------------------------------------------------------------------------- open, in a fresh process


def _open_child(mode: str, cache_dir: str) -> None:
    import psutil

    import extract.cache  # noqa: F401 (measured: what importing it costs)

    proc = psutil.Process()
    rss_imports = proc.memory_info().rss
    began = time.perf_counter()
    if mode == "old":
        state = legacy_open(Path(cache_dir))
        n, probe = len(state["position"]), state["records"][state["position"][state["index"]["utt_id"].iloc[-1]]]
    else:
        cache = open_cache(cache_dir)
        n, probe = len(cache), cache.labels_at(len(cache) - 1)
    seconds = time.perf_counter() - began
    peak = peak_rss()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_imports": rss_imports,
                "rss": proc.memory_info().rss,
                "peak": peak,
                "items": n,
                "probe": probe["speaker"],
            }
        )
    )


def peak_rss() -> int:
    """This process's RSS high-water mark (VmHWM; ru_maxrss would carry the parent's over fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def workers_in_child(cache_dir: Path, legacy: bool, samples: int | None) -> dict:
    """worker_memory in a fresh process: the parent's heap would otherwise carry one contender's
    leftovers into the next."""
    out = subprocess.run(
        [sys.executable, __file__, "--_workers", "old" if legacy else "new", str(cache_dir), str(samples or 0)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def open_in_child(mode: str, cache_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--_open", mode, str(cache_dir)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- reads and workers on real shards


def real_cache(cache_dir: Path, n_items: int, n_mels: int = 40, seconds: float = 3.0) -> Path:
    rng = np.random.default_rng(1)
    rows = voxceleb2_rows(n_items, seed=1)
    items = (
        {
            "utt_id": r["utt_id"],
            "speaker": r["speaker"],
            "split": r["split"],
            "path": r["path"],
            "fbank": rng.standard_normal((int(seconds * 100), n_mels)).astype(np.float32),
            "face": rng.standard_normal((int(seconds * 5), 512)).astype(np.float32),
            "face_found": np.ones(int(seconds * 5), bool),
            "frame_times": np.arange(int(seconds * 5), dtype=np.float32) / 5,
        }
        for r in rows
    )
    return build_cache(cache_dir, items, shard_size=16)


def reads_per_second(cache, n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    utts = list(cache._position) if isinstance(cache, LegacyCache) else None
    picks = rng.integers(0, len(cache._position) if utts else len(cache), n)
    began = time.perf_counter()
    for i in picks:
        if utts is not None:
            cache.read(utts[i])
        else:
            cache.read_at(int(i))
    return n / (time.perf_counter() - began)


def big_index_over(real: Path, out: Path, n_rows: int) -> Path:
    """An n_rows index whose rows point, in turn, at the real cache's items (so reads are real)."""
    real_rows = read_index_rows(real)
    rows = voxceleb2_rows(n_rows, seed=2)
    for i, row in enumerate(rows):
        src = real_rows[i % len(real_rows)]
        row.update({k: src[k] for k in LOCATION_COLUMNS})
    shutil.copytree(real / "shards", out / "shards")
    write_index(out, rows)
    (out / "config.json").write_text((real / "config.json").read_text())
    write_snapshot(out)
    return out


def worker_memory(cache_dir: Path, legacy: bool, epoch_samples: int | None, workers: int = 4) -> dict:
    """Per-worker RSS/USS after the first batch and at the end of one epoch (fork, 4 workers)."""
    import psutil
    import torch
    from torch.utils.data import DataLoader

    from distill.config import DataConfig
    from distill.data.dataset import Grid, GridDataset, collate

    torch.set_num_threads(1)
    grid = Grid.from_config(DataConfig(setting="nonseq", crop=200, crop_hop=100, max_faces=8))
    if legacy:
        cache = LegacyCache(cache_dir)
        ds = legacy_dataset(cache, cache.legacy_index["utt_id"].tolist(), grid, faces=True)
    else:
        cache = open_cache(cache_dir)
        _ = cache.index  # the trainer builds it in the parent (splits, labels); workers must not copy it
        ds = GridDataset(cache, np.arange(len(cache)), np.zeros(len(cache), int), grid, faces=True, train=True)
    n = len(ds)
    order = np.random.default_rng(0).permutation(n)[: epoch_samples or n].tolist()
    loader = DataLoader(
        ds,
        batch_size=32,
        sampler=order,
        num_workers=workers,
        collate_fn=collate,
        multiprocessing_context="fork",
        persistent_workers=True,
    )
    me = psutil.Process()

    def sample() -> list[tuple[int, int]]:
        out = []
        for child in me.children():
            with_uss = child.memory_full_info()
            out.append((with_uss.rss, with_uss.uss))
        return out

    it = iter(loader)
    next(it)
    start = sample()
    for _ in it:
        pass
    end = sample()  # persistent workers: still alive after the epoch
    del it, loader
    rss0, uss0 = sum(s[0] for s in start), sum(s[1] for s in start)
    rss1, uss1 = sum(s[0] for s in end), sum(s[1] for s in end)
    return {
        "samples": len(order),
        "workers": len(start),
        "rss_start": rss0,
        "rss_end": rss1,
        "uss_start": uss0,
        "uss_end": uss1,
        "rss_growth": (rss1 - rss0) / rss0,
        "uss_per_worker_growth_mb": (uss1 - uss0) / len(start) / 2**20,
        "uss_end_per_worker_mb": uss1 / len(start) / 2**20,
    }


# --------------------------------------------------------------------------- report


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_100_000, help="index rows for the open test")
    p.add_argument(
        "--tail", type=int, default=5_000, help="rows committed after the snapshot (under SNAPSHOT_REFRESH_ROWS)"
    )
    p.add_argument("--items", type=int, default=3000, help="items in the real cache (reads, workers)")
    p.add_argument("--reads", type=int, default=3000, help="random reads per contender")
    p.add_argument("--worker-rows", type=int, default=200_000, help="index rows for the large-index worker test")
    p.add_argument("--epoch-samples", type=int, default=24_000, help="samples in that test's epoch")
    p.add_argument("--skip-old", action="store_true", help="no old-reader open (it needs ~3.5 GB at 1.1 M rows)")
    p.add_argument("--parts", default="open,reads,workers", help="which parts to run")
    p.add_argument("--_open", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--_workers", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._open:
        _open_child(*args._open)
        return 0
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on fewer cores: on purpose
    if args._workers:
        mode, path, samples = args._workers
        print(json.dumps(worker_memory(Path(path), mode == "old", int(samples) or None)))
        return 0

    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        tmp = Path(tmp)
        if "open" in parts:
            bench_open(args, tmp)
        if parts & {"reads", "workers"}:
            real = real_cache(tmp / "real", args.items)
        if "reads" in parts:
            bench_reads(args, tmp, real)
        if "workers" in parts:
            bench_workers(args, tmp, real)
    return 0


def bench_open(args: argparse.Namespace, tmp: Path) -> None:
    print(f"== open_cache on {args.rows:,} index rows (fresh process each; peak RSS includes the imports)")
    began = time.perf_counter()
    rows = voxceleb2_rows(args.rows + args.tail)
    big = tmp / "big"
    write_index(big, rows[: args.rows])
    log_mb = (big / INDEX_FILE).stat().st_size / 2**20
    print(
        f"   index.jsonl {log_mb:.0f} MB, {len({r['shard'] for r in rows[: args.rows]}):,} shards named "
        f"(built in {time.perf_counter() - began:.0f} s)"
    )
    results = {}
    if not args.skip_old:
        results["old (JSONL, dicts)"] = open_in_child("old", big)
    results["first open (no snapshot yet)"] = open_in_child("new", big)
    snap_mb = (big / SNAPSHOT_FILE).stat().st_size / 2**20
    results["snapshot"] = open_in_child("new", big)
    commit_rows(big, rows[args.rows :])
    results[f"snapshot + {args.tail:,}-row tail"] = open_in_child("new", big)
    print(f"   index.parquet {snap_mb:.0f} MB")
    base = results.get("old (JSONL, dicts)")
    for name, r in results.items():
        ratio = (
            f"  ({base['seconds'] / r['seconds']:.1f}x faster, {base['peak'] / r['peak']:.1f}x less peak RSS)"
            if base and r is not base
            else ""
        )
        print(
            f"   {name:32s} {r['seconds']:7.2f} s   peak RSS {mb(r['peak']):>9s} "
            f"(after imports {mb(r['rss_imports'])}, after open {mb(r['rss'])}){ratio}"
        )
    del rows
    shutil.rmtree(big)


def bench_reads(args: argparse.Namespace, tmp: Path, real: Path) -> None:
    print(f"\n== random reads (fbank + faces) on a real cache of {args.items:,} items")
    n_shards = len(list((real / "shards").glob("*.h5")))
    old = LegacyCache(real)
    r_old = reads_per_second(old, args.reads)
    old.close()
    r_new = reads_per_second(open_cache(real), args.reads)
    compacted = tmp / "compacted"
    shutil.copytree(real, compacted)
    from extract.compact import compact_cache

    summary = compact_cache(compacted, target_mb=64)
    r_compact = reads_per_second(open_cache(compacted), args.reads)
    print(f"   old reader, {n_shards} shards of 16 items   {r_old:8.0f} reads/s")
    print(f"   new reader, {n_shards} shards of 16 items   {r_new:8.0f} reads/s  ({r_new / r_old:.2f}x)")
    print(
        f"   new reader, compacted to {summary.shards_after} shards  {r_compact:8.0f} reads/s  "
        f"({r_compact / r_new:.2f}x "
        f"of uncompacted; compaction took {summary.seconds:.1f} s)"
    )


def bench_workers(args: argparse.Namespace, tmp: Path, real: Path) -> None:
    print("\n== 4 loader workers (fork) over one epoch: worker RSS and USS, first batch → end of epoch")
    wide = big_index_over(real, tmp / "wide", args.worker_rows)
    for label, path, samples in (
        (f"real cache, {args.items:,} items, full epoch", real, None),
        (f"{args.worker_rows:,}-row index, {args.epoch_samples:,} samples", wide, args.epoch_samples),
    ):
        for legacy in (True, False):
            r = workers_in_child(path, legacy, samples)
            print(
                f"   {label:42s} {'old' if legacy else 'new'}: RSS {mb(r['rss_start'])} → {mb(r['rss_end'])} "
                f"({100 * r['rss_growth']:+.1f}%), USS per worker +{r['uss_per_worker_growth_mb']:.0f} MB "
                f"(ends at {r['uss_end_per_worker_mb']:.0f} MB)"
            )


if __name__ == "__main__":
    raise SystemExit(main())
