"""A whole cache written at once from in-memory items: synthetic caches for tests and benchmarks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from extract.cache.commit_log import commit_rows
from extract.cache.index import write_snapshot
from extract.cache.layout import FACE_DIM, config_hash, write_config
from extract.cache.lock import cache_lock
from extract.cache.writer import ItemFeatures, ShardWriter


def build_cache(
    cache_dir: str | os.PathLike,
    items: Iterable[dict[str, Any] | ItemFeatures],
    config: dict[str, Any] | None = None,
    shard_size: int = 64,
    dtype: str = "float16",
) -> Path:
    """Write a valid cache straight from in-memory items: synthetic caches for tests and benchmarks."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    writer: ShardWriter | None = None
    n_mels = None
    face_dim = int((config or {}).get("face_dim", 0)) or None
    with cache_lock(cache_dir):
        for item in items:
            if isinstance(item, dict):
                item = ItemFeatures.from_dict(item)
            n_mels = n_mels or item.fbank.shape[1]
            face_dim = face_dim or (item.face.shape[1] if len(item.face) else None)
            writer = writer or ShardWriter(cache_dir, dtype=dtype, face_dim=face_dim or FACE_DIM)
            writer.add(item)
            if len(writer) >= shard_size:
                commit_rows(cache_dir, writer.close())
                writer = None
        if writer is not None:
            commit_rows(cache_dir, writer.close())
        if config is None:
            config = {"synthetic": True, "n_mels": n_mels, "hop_ms": 10.0, "dtype": dtype}
        config = {"face_dim": face_dim or FACE_DIM, **config}
        config.setdefault("hash", config_hash(config))
        write_config(cache_dir, config)
        write_snapshot(cache_dir)
    return cache_dir
