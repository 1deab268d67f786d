"""``extract verify``: read every stored item back and name what is not whole and finite.

Shards are written with HDF5's fletcher32 checksum on every chunk, so flipped bytes surface as a
read error here rather than as plausible numbers in training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from extract.cache import SHARD_DIR, CacheError, open_cache


@dataclass
class VerifyReport:
    cache_dir: Path
    n_items: int = 0
    n_shards: int = 0
    bad_items: dict[str, str] = field(default_factory=dict)  # utt_id → reason
    bad_shards: dict[str, list[str]] = field(default_factory=dict)  # shard → its bad utt_ids
    missing_shards: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # files no index row names (ignored by readers)

    @property
    def ok(self) -> bool:
        return not self.bad_items

    def line(self) -> str:
        good = self.n_items - len(self.bad_items)
        if self.ok:
            return (
                f"verify: all {self.n_items} items in {self.n_shards} shards read back whole and finite "
                f"→ {self.cache_dir}"
            )
        shards = ", ".join(f"{s} ({len(u)} items)" for s, u in sorted(self.bad_shards.items()))
        return (
            f"verify: {good}/{self.n_items} items whole; corrupt shard(s): {shards}; "
            f"`extract run --repair` re-extracts them → {self.cache_dir}"
        )


def verify_cache(cache_dir: str | os.PathLike) -> VerifyReport:
    cache = open_cache(cache_dir)  # CacheError if config.json is missing
    report = VerifyReport(cache.dir, n_items=len(cache))
    referenced = {p.name for p in cache.shard_paths()}
    report.n_shards = len(referenced)
    shard_dir = cache.dir / SHARD_DIR
    report.missing_shards = sorted(s for s in referenced if not (shard_dir / s).is_file())
    if shard_dir.is_dir():
        report.orphans = sorted(p.name for p in shard_dir.iterdir() if p.name not in referenced)
    try:
        for row, utt in enumerate(cache):
            shard = cache.shard_name(row)
            reason = "shard file is missing" if shard in report.missing_shards else cache.check(utt)
            if reason is not None:
                report.bad_items[utt] = reason
                report.bad_shards.setdefault(shard, []).append(utt)
    finally:
        cache.close()
    return report


__all__ = ["VerifyReport", "verify_cache", "CacheError"]
