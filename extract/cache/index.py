"""The committed index as readers load it: the columnar snapshot plus the commit log after it.

``index.jsonl`` stays the commit log; ``index.parquet`` is a derived, atomically replaced snapshot of
it: the current row of every utt_id, sorted, plus (in its metadata) how many log bytes it covers and
a fingerprint of the last of them. A reader takes the snapshot and parses only the log after it
(:func:`load_index`). Any snapshot, old or new, covers a prefix of the committed log, so a kill at
any moment (even mid-write of the snapshot, which goes to a temporary name first) changes nothing a
reader sees: the snapshot never decides what is committed, and a lost one costs only a rebuild.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.files import TMP_PREFIX, atomic_output, sha256_file
from extract.cache.commit_log import parse_log
from extract.cache.index_table import IndexTable
from extract.cache.layout import INDEX_FILE, LOCATION_COLUMNS, SHARD_DIR, SNAPSHOT_FILE

SNAPSHOT_VERSION = 1
#: A reader that had to parse at least this many log rows after the snapshot writes a fresh one.
SNAPSHOT_REFRESH_ROWS = 10_000
_SNAPSHOT_META = b"avpi.index"
_FINGERPRINT_BYTES = 4096


def _fingerprint(log: Path, end: int) -> str:
    """sha256 of the log's last few KiB before ``end``: tells a log that grew from one rewritten."""
    start = max(0, end - _FINGERPRINT_BYTES)
    return sha256_file(log, start, end)


def _read_snapshot(path: Path, log: Path, log_size: int) -> tuple[IndexTable, dict[str, Any]] | None:
    """The snapshot and its metadata, or None when it is missing, unreadable or not of this log."""
    try:
        schema = pq.read_schema(path)
        meta = json.loads((schema.metadata or {})[_SNAPSHOT_META])
        covered = int(meta["log_bytes"])
        if meta.get("version") != SNAPSHOT_VERSION or covered > log_size:
            return None
        if covered and _fingerprint(log, covered) != meta["log_fingerprint"]:
            return None
        # Locations first, labels second: the decoded location columns are freed before the
        # labels are decoded, which keeps the peak near what the index holds afterwards.
        core = ["utt_id", *LOCATION_COLUMNS]
        index = IndexTable.from_table(pq.read_table(path, columns=core, memory_map=True), meta["json_columns"])
        pa.default_memory_pool().release_unused()
        labels = pq.read_table(path, columns=[n for n in schema.names if n not in core], memory_map=True)
        index.labels = {name: labels.column(name) for name in labels.column_names}
        if len(index.ids) != len(labels):
            return None
        pa.default_memory_pool().release_unused()
        return index, meta
    except (OSError, KeyError, ValueError, TypeError, IndexError, pa.ArrowException):
        return None


def _load(cache_dir: Path) -> tuple[IndexTable, dict[str, Any], bool]:
    """(the index, what a snapshot of it would record, whether the snapshot on disk is fresh)."""
    log = cache_dir / INDEX_FILE
    size = log.stat().st_size if log.exists() else 0
    snap = _read_snapshot(cache_dir / SNAPSHOT_FILE, log, size) if size else None
    covered, covered_rows, base = 0, 0, None
    if snap is not None:
        base, meta = snap
        covered, covered_rows = meta["log_bytes"], meta["log_rows"]
    tail_bytes = b""
    if size > covered:
        with open(log, "rb") as fh:
            fh.seek(covered)
            tail_bytes = fh.read()
    table, json_columns, used, n_lines = parse_log(tail_bytes, str(log), first_line=covered_rows + 1)
    index = IndexTable.from_log_table(table, json_columns)
    if base is not None:
        try:
            index = base.merge(index)
            del base
            pa.default_memory_pool().release_unused()
        except pa.ArrowException:  # a label column changed type after the snapshot: rare, rebuild whole
            return _load_from_log(cache_dir)
    meta = {
        "version": SNAPSHOT_VERSION,
        "log_bytes": covered + used,
        "log_rows": covered_rows + n_lines,
        "json_columns": sorted(index.json_columns),
    }
    return index, meta, snap is not None and n_lines < SNAPSHOT_REFRESH_ROWS


def _load_from_log(cache_dir: Path) -> tuple[IndexTable, dict[str, Any], bool]:
    log = cache_dir / INDEX_FILE
    table, json_columns, used, n_lines = parse_log(log.read_bytes(), str(log))
    index = IndexTable.from_log_table(table, json_columns)
    return (
        index,
        {
            "version": SNAPSHOT_VERSION,
            "log_bytes": used,
            "log_rows": n_lines,
            "json_columns": sorted(index.json_columns),
        },
        False,
    )


def _write_snapshot(cache_dir: Path, index: IndexTable, meta: dict[str, Any]) -> Path:
    """Write the snapshot under a temporary name, fsync, rename: a reader sees the old one or the new one."""
    meta = dict(
        meta, log_fingerprint=_fingerprint(cache_dir / INDEX_FILE, meta["log_bytes"]) if meta["log_bytes"] else ""
    )
    table = index.to_table(for_snapshot=True).replace_schema_metadata({_SNAPSHOT_META: json.dumps(meta).encode()})
    for stale in cache_dir.glob(f"{TMP_PREFIX}{SNAPSHOT_FILE}.*"):  # left by a killed writer
        with contextlib.suppress(ValueError, OSError):
            if not _pid_alive(int(stale.name.rsplit(".", 1)[1])):
                stale.unlink()
    with atomic_output(cache_dir / SNAPSHOT_FILE) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return cache_dir / SNAPSHOT_FILE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_index(cache_dir: str | os.PathLike, *, refresh: bool = True) -> IndexTable:
    """The committed index: the snapshot plus the log rows after it (the whole log if there is no valid snapshot).

    With ``refresh`` a missing, stale or far-behind snapshot is rewritten, when the directory is
    writable; a read-only cache still opens (from the log alone if it has no snapshot).
    """
    cache_dir = Path(cache_dir)
    index, meta, fresh = _load(cache_dir)
    if refresh and not fresh and meta["log_bytes"]:
        with contextlib.suppress(OSError):  # read-only cache, full disk: the snapshot is only a speed-up
            _write_snapshot(cache_dir, index, meta)
    return index


def write_snapshot(cache_dir: str | os.PathLike, strict: bool = True) -> Path | None:
    """Bring ``index.parquet`` up to the whole committed log (end of ``extract run``, ``extract index``).

    None when the log is empty (nothing to snapshot). ``strict=False`` turns a failed write (full
    disk, read-only directory) into a warning: the items are committed either way, and the next
    open that can write will.
    """
    cache_dir = Path(cache_dir)
    index, meta, _ = _load(cache_dir)
    if not meta["log_bytes"]:
        return None
    try:
        return _write_snapshot(cache_dir, index, meta)
    except OSError as err:
        if strict:
            raise
        print(
            f"extract: warning: could not write {cache_dir / SNAPSHOT_FILE} ({err}); "
            "the items are committed, the next open writes it",
            file=sys.stderr,
        )
        return None


def committed_utt_ids(cache_dir: str | os.PathLike) -> set[str]:
    return set(np.char.decode(load_index(cache_dir).ids, "utf-8").tolist())


def remove_orphan_shards(cache_dir: str | os.PathLike) -> list[Path]:
    """Delete temp files and shards that no committed row names (leftovers of a killed run)."""
    shard_dir = Path(cache_dir) / SHARD_DIR
    if not shard_dir.is_dir():
        return []
    index = load_index(cache_dir)
    referenced = set(np.char.decode(index.shard_names[np.unique(index.shard)], "utf-8").tolist())
    removed = []
    for path in sorted(shard_dir.iterdir()):
        if path.name.startswith(TMP_PREFIX) or (path.suffix == ".h5" and path.name not in referenced):
            path.unlink()
            removed.append(path)
    return removed
