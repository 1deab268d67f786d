"""What a cache directory holds, shared by every part that reads or writes one.

Its files, the index's location columns and array fields, ``config.json`` and the hash that names
the directory, how a label value is written as JSON, and the error for a directory that does not
hold what it should.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.files import atomic_write_text, sha256_text

INDEX_FILE = "index.jsonl"  # the commit log (extract.cache.commit_log)
SNAPSHOT_FILE = "index.parquet"  # its derived columnar snapshot (extract.cache.index)
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"  # held by the one writer (extract.cache.lock)
SHARD_DIR = "shards"  # <id>.h5 files, one per ShardWriter (extract.cache.writer)

ARRAY_FIELDS = ("fbank", "face", "face_found", "frame_times")
#: Index columns that locate an item's data; every other column is a label carried from the manifest.
LOCATION_COLUMNS = ("shard", "fbank_offset", "n_fbank", "face_offset", "n_face")
FACE_DIM = 512


class CacheError(RuntimeError):
    """The cache directory is missing, incomplete, or does not hold what was asked for."""


def jsonable(value: Any) -> Any:
    """A label value as the index stores it: numpy scalars as Python ones, NaN / NaT / NA as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT or (not isinstance(value, (str, bytes, list, dict, tuple)) and pd.isna(value)):
        return None
    return value


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_text(blob)[:16]


def write_config(cache_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write config.json atomically (a reader never sees half a file)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_dir / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
