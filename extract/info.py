"""``extract info``: what a cache holds, what it cost on disk, and what failed."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from extract.cache import open_cache
from extract.run import FAILURES_FILE


def _reason_kind(reason: str) -> str:
    """Group reasons by their fixed part ("truncated: decoded 0.3 s of 1.0 s" → "truncated")."""
    return str(reason).split(":", 1)[0].split(" (", 1)[0]


def cache_info(cache_dir: str | os.PathLike) -> dict[str, Any]:
    cache = open_cache(cache_dir)  # columns only: no DataFrame of a million rows for a few sums
    n_items = len(cache)
    seconds = float(cache.column("duration").astype(float).sum()) if n_items else 0.0
    with_video = int(cache.column("has_video").astype(bool).sum()) if n_items else 0
    shard_paths = cache.shard_paths()
    shard_bytes = sum(p.stat().st_size for p in shard_paths if p.exists())
    hours = seconds / 3600
    found, frames = cache.count_faces_found() if n_items else (0, 0)
    cache.close()
    failures: dict[str, int] = {}
    failures_path = Path(cache_dir) / FAILURES_FILE
    if failures_path.exists() and failures_path.stat().st_size:
        table = pd.read_csv(failures_path, keep_default_na=False)
        failures = dict(
            Counter(f"{s}: {_reason_kind(r)}" for s, r in zip(table["stage"], table["reason"])).most_common()
        )
    cfg = cache.config
    return {
        "cache": str(cache.dir),
        "id": cache.cache_id,
        "items": n_items,
        "with_video": with_video,
        "hours": round(hours, 4),
        "shards": len(shard_paths),
        "bytes": shard_bytes,
        "bytes_per_hour": round(shard_bytes / hours) if hours else None,
        "face_found_rate": round(found / frames, 4) if frames else None,
        "face_frames": frames,
        "failures": failures,
        "settings": {k: cfg.get(k) for k in ("n_mels", "hop_ms", "fps", "frame_size", "dtype", "face_weights_identity")}
        | {"face_dim": cache.face_dim},  # 512 facenet, 128 dlib
        "versions": cfg.get("versions", {}),
    }


def format_info(info: dict[str, Any]) -> str:
    def size(n: float | None) -> str:
        if n is None:
            return "n/a"
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if n < 1024:
                return f"{n:.1f} {unit}"
            n /= 1024
        return f"{n:.1f} PiB"

    rate = info["face_found_rate"]
    lines = [
        f"cache        {info['cache']}",
        f"id           {info['id']}",
        f"items        {info['items']} ({info['with_video']} with video), {info['hours']:.3f} h of audio",
        f"shards       {info['shards']}, {size(info['bytes'])} ({size(info['bytes_per_hour'])} per hour)",
        f"faces found  {'n/a' if rate is None else f'{100 * rate:.1f}%'} of {info['face_frames']} frames",
        "settings     " + ", ".join(f"{k}={v}" for k, v in info["settings"].items()),
    ]
    if info["failures"]:
        lines.append(f"failures     {sum(info['failures'].values())} in the latest run:")
        lines += [f"  {n:6d}  {kind}" for kind, n in info["failures"].items()]
    else:
        lines.append("failures     none in the latest run")
    return "\n".join(lines)


__all__ = ["cache_info", "format_info"]
