"""``index.jsonl``, the commit log: the driver appends rows to it; readers parse it.

The commit protocol, driver's side (why the code is shaped this way):

* The driver alone appends rows (:func:`commit_rows`), after the shard they point into is durable.
  An item exists when its row exists; a killed run resumes by skipping what the index holds, and
  shards no row names are orphans (:func:`extract.cache.index.remove_orphan_shards`).
* A later row for the same ``utt_id`` supersedes an earlier one (that is how ``--repair`` re-extracts
  an item, and ``extract compact`` moves one, without rewriting history).
* A torn last line (a kill mid-append) is never a row: readers skip it, the next append cuts it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json

from extract.cache.index_table import rows_table
from extract.cache.layout import INDEX_FILE, LOCATION_COLUMNS, CacheError, jsonable


def commit_rows(cache_dir: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Append rows to the index and fsync. Driver only. A torn last line from a kill is cut first."""
    if not rows:
        return
    path = Path(cache_dir) / INDEX_FILE
    with open(path, "a+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                fh.seek(0)
                keep = fh.read().rfind(b"\n") + 1
                fh.truncate(keep)
                fh.seek(keep)
        payload = "".join(json.dumps(row, ensure_ascii=False, default=jsonable) + "\n" for row in rows)
        fh.write(payload.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read_index_rows(cache_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every committed row, later rows for an utt_id superseding earlier ones, sorted by utt_id.

    Parses the whole log into dicts: the reference reading of the commit log, for tests and small
    caches. Readers use :func:`extract.cache.index.load_index` (snapshot plus log tail), which
    agrees with this.

    Parallel workers commit in completion order; sorting makes the item order (and everything
    derived from it: training order, the cache identity that keys teacher targets) independent of
    how the cache was extracted.
    """
    path = Path(cache_dir) / INDEX_FILE
    if not path.exists():
        return []
    latest: dict[str, dict[str, Any]] = {}
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    # The last element is b"" after a clean write, or a torn partial line after a kill: never a row.
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CacheError(f"{path}: line {number} is not valid JSON ({err}); the index is corrupt") from err
        latest[row["utt_id"]] = row
    return [latest[utt] for utt in sorted(latest)]


_ARROW_JSON_TYPES = (
    pa.types.is_string,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_null,
)


def parse_log(data: bytes, where: str, first_line: int = 1) -> tuple[pa.Table, set[str], int, int]:
    """The complete lines of ``data`` as a table (log order), its JSON columns, the bytes and lines they span.

    A torn last line (a kill mid-append) has no newline yet: it is not a row and not covered.
    Arrow's JSON reader parses in C++; a log it would type differently from ``json.loads`` (dates
    it would read as timestamps, nested values, mixed types) goes through ``json.loads``.
    """
    end = data.rfind(b"\n") + 1
    n_lines = data.count(b"\n", 0, end)
    if end == 0:
        table, json_columns = rows_table([])
        return table, json_columns, 0, 0
    with contextlib.suppress(pa.ArrowException):
        table = pa_json.read_json(
            io.BytesIO(memoryview(data)[:end]), read_options=pa_json.ReadOptions(block_size=16 << 20)
        )
        if (
            "utt_id" in table.column_names
            and all(c in table.column_names for c in LOCATION_COLUMNS)
            and all(any(ok(f.type) for ok in _ARROW_JSON_TYPES) for f in table.schema)
            and table.num_rows == n_lines
        ):
            return table.combine_chunks(), set(), end, n_lines
    rows = []
    for number, line in enumerate(data[:end].split(b"\n")[:-1], start=first_line):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise CacheError(f"{where}: line {number} is not valid JSON ({err}); the index is corrupt") from err
    table, json_columns = rows_table(rows)
    return table, json_columns, end, n_lines
