"""``extract compact``: merge small shards into large ones, atomically.

Extraction writes one shard per task, because small tasks keep a kill cheap; loaders prefer a few
large files (fewer opens, fewer handles, more reads per open file). Compaction packs whole small
shards, in item order, into new shards of about ``target_mb`` each:

1. the new shard is written under a temporary name, fsynced and renamed (:class:`ShardWriter`);
2. its rows are committed to ``index.jsonl`` as superseding rows (the old rows stay in the log);
3. only after every bin is done are the old shards removed, as the orphans they now are.

A kill at any moment leaves a cache that opens to the same items with identical arrays: each
item's current row points either at its old shard (still there) or at a new one (whole, since it
was renamed before its rows were committed). A rerun finishes the job. Arrays are copied in their
stored dtype, so nothing is rounded twice. A shard that does not read back (checksum error,
truncation) is left as it is and named: ``extract verify`` / ``extract run --repair`` deal with it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from extract.cache.commit_log import commit_rows
from extract.cache.index import remove_orphan_shards, write_snapshot
from extract.cache.layout import SHARD_DIR
from extract.cache.lock import cache_lock
from extract.cache.reader import Cache, open_cache
from extract.cache.writer import ItemFeatures, ShardWriter, _check_item

#: Default size of a compacted shard. Compaction holds about three times this in memory.
DEFAULT_TARGET_MB = 128.0


@dataclass
class CompactSummary:
    cache_dir: Path
    shards_before: int = 0
    shards_after: int = 0
    merged: int = 0  # old shards packed into new ones
    written: int = 0  # new shards
    items: int = 0  # items moved
    unreadable: dict[str, str] = field(default_factory=dict)  # shard -> why it was left alone
    seconds: float = 0.0

    def line(self) -> str:
        left = (
            f", {len(self.unreadable)} unreadable shard(s) left alone (run `extract verify`)" if self.unreadable else ""
        )
        return (
            f"compact: {self.merged} shards merged into {self.written} ({self.items} items); "
            f"{self.shards_before} → {self.shards_after} shards{left} in {self.seconds:.1f} s → {self.cache_dir}"
        )


def _bins(sizes: dict[str, int], order: list[str], target: int) -> list[list[str]]:
    """Consecutive runs of shards under half the target, each run about ``target`` bytes; runs of one dropped."""
    bins, current, total = [], [], 0
    for name in order:
        if sizes[name] >= target // 2:
            continue
        current.append(name)
        total += sizes[name]
        if total >= target:
            bins.append(current)
            current, total = [], 0
    bins.append(current)
    return [b for b in bins if len(b) > 1]


def _shard_items(cache: Cache, name: str, rows: np.ndarray) -> list[ItemFeatures]:
    """Every current item of one shard, arrays in their stored dtype (one read per dataset)."""
    h5 = cache._file(name)
    data = {key: h5[key][:] for key in ("fbank", "face", "face_found", "frame_times")}
    items = []
    for row in rows:
        fb_off, n_fb, face_off, n_face = (int(v) for v in cache.table.locations[row])
        labels = cache.labels_at(int(row))
        utt = labels.pop("utt_id")
        has_video, duration = bool(labels.pop("has_video")), float(labels.pop("duration"))
        face = slice(face_off, face_off + n_face)
        items.append(
            ItemFeatures(
                utt,
                data["fbank"][fb_off : fb_off + n_fb],
                data["face"][face],
                data["face_found"][face],
                data["frame_times"][face],
                has_video,
                duration,
                labels,
            )
        )
    return items


def compact_cache(
    cache_dir: str | os.PathLike, target_mb: float = DEFAULT_TARGET_MB, progress: bool = False
) -> CompactSummary:
    """Merge the cache's small shards into shards of about ``target_mb``; see the module docstring."""
    if target_mb <= 0:
        raise ValueError(f"target_mb must be > 0, got {target_mb}")
    began = time.perf_counter()
    cache_dir = Path(cache_dir)
    summary = CompactSummary(cache_dir)
    with cache_lock(cache_dir):
        remove_orphan_shards(cache_dir)  # a killed compaction's leftovers first
        cache = open_cache(cache_dir)
        dtype = str(cache.config.get("dtype", "float16"))
        paths = cache.shard_paths()
        summary.shards_before = len(paths)
        sizes = {p.name: p.stat().st_size for p in paths if p.exists()}
        bins = _bins(sizes, [p.name for p in paths if p.name in sizes], int(target_mb * 2**20))
        # the current rows of each shard, in their stored order
        code_of = {name.decode("utf-8"): code for code, name in enumerate(cache.table.shard_names)}
        order = np.lexsort((cache.table.locations[:, 0], cache.table.shard))
        codes, starts = np.unique(cache.table.shard[order], return_index=True)
        rows_of = dict(zip(codes.tolist(), np.split(order, starts[1:])))
        try:
            for group in tqdm(bins, desc="compact", unit="shard-bin", disable=not progress):
                writer = ShardWriter(cache_dir, dtype=dtype)
                merged = []
                with writer:
                    for name in group:
                        try:  # the whole shard read and checked before any of it goes in
                            items = _shard_items(cache, name, rows_of[code_of[name]])
                            for item in items:
                                _check_item(item, writer.dtype)
                        except (OSError, ValueError) as err:  # ValueError: stored values not finite
                            summary.unreadable[name] = f"{type(err).__name__}: {err}"
                            continue
                        for item in items:
                            writer.add(item)
                        merged.append(name)
                    if len(merged) < 2:
                        writer.abort()
                        continue
                    rows = writer.close()
                commit_rows(cache_dir, rows)
                summary.merged += len(merged)
                summary.written += 1
                summary.items += len(rows)
        finally:
            cache.close()
            remove_orphan_shards(cache_dir)  # the merged shards, now that no current row names them
            write_snapshot(cache_dir)
    summary.shards_after = len(list((cache_dir / SHARD_DIR).glob("*.h5")))
    summary.seconds = time.perf_counter() - began
    return summary


__all__ = ["DEFAULT_TARGET_MB", "CompactSummary", "compact_cache"]
