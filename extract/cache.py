"""The feature cache: packed HDF5 shards plus an append-only index that is the commit log.

Durability rules (why the code is shaped this way):

* One writer per file. A worker task owns one :class:`ShardWriter`; it writes
  ``shards/.tmp-<id>.h5.<pid>``, fsyncs it and renames it to ``shards/<id>.h5`` only when complete, so a
  file with a final name is always whole.
* The driver alone appends rows to ``index.jsonl`` (:func:`commit_rows`), after the shard they
  point into is durable. An item exists when its row exists; a killed run resumes by skipping
  what the index holds, and shards no row names are orphans (:func:`remove_orphan_shards`).
* A later row for the same ``utt_id`` supersedes an earlier one (that is how ``--repair`` re-extracts
  an item, and ``extract compact`` moves one, without rewriting history).
* ``index.parquet`` is a derived snapshot of the log (:func:`write_snapshot`), covering a recorded
  prefix of it; readers take it plus the log after it (:func:`load_index`). It never decides what
  is committed, so a kill while it is written costs nothing but a rebuild.
* Packed per-shard arrays with offsets in the index, rather than one HDF5 dataset per utterance:
  thousands of tiny datasets make h5py slow to open and read at VoxCeleb scale.
* Every dataset is chunked with the fletcher32 checksum filter, so flipped bytes raise on read
  instead of returning plausible garbage.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from common.files import (
    TMP_PREFIX,
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
    sha256_text,
    tmp_path_for,
)
from common.hdf5 import H5Files

INDEX_FILE = "index.jsonl"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
SHARD_DIR = "shards"

ARRAY_FIELDS = ("fbank", "face", "face_found", "frame_times")
#: Index columns that locate an item's data; every other column is a label carried from the manifest.
LOCATION_COLUMNS = ("shard", "fbank_offset", "n_fbank", "face_offset", "n_face")
FACE_DIM = 512

_FBANK_CHUNK_ROWS = 512
_FACE_CHUNK_ROWS = 256


class CacheBusyError(RuntimeError):
    """Another process holds the cache's write lock."""


class CacheError(RuntimeError):
    """The cache directory is missing, incomplete, or does not hold what was asked for."""


@dataclass
class ItemFeatures:
    """One extracted item, as a worker produces it."""

    utt_id: str
    fbank: np.ndarray  # (T, n_mels) float32
    face: np.ndarray  # (F, 512) float32; rows where face_found is False are zeros, never a face
    face_found: np.ndarray  # (F,) bool
    frame_times: np.ndarray  # (F,) float32 seconds from clip start
    has_video: bool
    duration: float  # seconds of audio
    labels: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> ItemFeatures:
        """Build from the dict shape ``cache[utt_id]`` returns (labels are the remaining keys)."""
        item = dict(item)
        fbank = np.asarray(item.pop("fbank"), dtype=np.float32)
        face = np.asarray(item.pop("face", np.zeros((0, FACE_DIM))), dtype=np.float32)
        face = face if face.ndim == 2 else face.reshape(-1, FACE_DIM)
        n_face = len(face)
        found = np.asarray(item.pop("face_found", np.zeros(n_face, bool)), dtype=bool)
        times = np.asarray(item.pop("frame_times", np.zeros(n_face)), dtype=np.float32)
        has_video = bool(item.pop("has_video", n_face > 0))
        duration = float(item.pop("duration", len(fbank) * 0.01))  # 10 ms hop unless told otherwise
        return cls(str(item.pop("utt_id")), fbank, face, found, times, has_video, duration, item)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT or (not isinstance(value, (str, bytes, list, dict, tuple)) and pd.isna(value)):
        return None
    return value


def _check_item(item: ItemFeatures, dtype: np.dtype, face_dim: int = FACE_DIM) -> None:
    """Reject what would be stored wrongly, naming the item: shapes, and values the dtype can't hold."""
    name = item.utt_id
    if item.fbank.ndim != 2 or len(item.fbank) == 0:
        raise ValueError(f"{name}: fbank must be a non-empty (T, n_mels) array, got shape {item.fbank.shape}")
    n = len(item.face_found)
    width_ok = item.face.shape == (n, face_dim) or (n == 0 and item.face.size == 0)  # no frames: any empty shape
    if not width_ok or item.frame_times.shape != (n,):
        raise ValueError(
            f"{name}: face {item.face.shape}, face_found {item.face_found.shape} and frame_times "
            f"{item.frame_times.shape} disagree (expected ({n}, {face_dim}), ({n},), ({n},))"
        )
    for key in ("fbank", "face"):
        with np.errstate(over="ignore"):  # an overflow is exactly what this check reports
            stored = getattr(item, key).astype(dtype)
        if not np.isfinite(stored).all():
            raise ValueError(f"{name}: {key} has values that are not finite as {np.dtype(dtype).name}")


class ShardWriter:
    """Packs items into one shard file; the only writer of that file."""

    def __init__(self, cache_dir: str | os.PathLike, dtype: str = "float16", face_dim: int = FACE_DIM) -> None:
        self.cache_dir = Path(cache_dir)
        self.dtype = np.dtype(dtype)
        self.face_dim = face_dim  # width of the face embeddings (FaceNet: 512)
        self.shard_id = uuid.uuid4().hex
        self.shard_dir = self.cache_dir / SHARD_DIR
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.name = f"{self.shard_id}.h5"
        self.path = self.shard_dir / self.name
        self.tmp_path = tmp_path_for(self.path)
        self._items: list[ItemFeatures] = []
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: ItemFeatures | dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        if isinstance(item, dict):
            item = ItemFeatures.from_dict(item)
        _check_item(item, self.dtype, self.face_dim)
        self._items.append(item)

    def close(self) -> list[dict[str, Any]]:
        """Write, fsync and publish the shard; return the index rows for its items (not yet committed)."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        self._closed = True
        if not self._items:
            return []
        try:
            rows, image = self._build()
            # HDF5 builds the file in memory; the disk sees one plain write. A full disk is then an
            # ordinary OSError, and no half-written file is left open inside the HDF5 library
            # (which, after a failed write to disk, could crash the process at exit).
            atomic_write_bytes(self.path, image)
        except BaseException:
            self.abort()
            raise
        return rows

    def abort(self) -> None:
        self._closed = True
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _build(self) -> tuple[list[dict[str, Any]], bytes]:
        """The index rows and the bytes of the shard file (an in-memory HDF5 image)."""
        items = self._items
        fbank = np.concatenate([it.fbank for it in items]).astype(self.dtype)
        face = np.concatenate([it.face.reshape(-1, self.face_dim) for it in items]).astype(self.dtype)
        found = np.concatenate([it.face_found for it in items]).astype(bool)
        times = np.concatenate([it.frame_times for it in items]).astype(np.float32)
        rows: list[dict[str, Any]] = []
        fb_off = face_off = 0
        for it in items:
            row = {
                "utt_id": it.utt_id,
                "shard": self.name,
                "fbank_offset": fb_off,
                "n_fbank": len(it.fbank),
                "face_offset": face_off,
                "n_face": len(it.face_found),
                "has_video": bool(it.has_video),
                "duration": float(it.duration),
            }
            for key, value in it.labels.items():
                if key not in row:
                    row[key] = _jsonable(value)
            rows.append(row)
            fb_off += len(it.fbank)
            face_off += len(it.face_found)

        buffer = io.BytesIO()
        with h5py.File(buffer, "w", libver="latest") as h5:
            _put(h5, "fbank", fbank, _FBANK_CHUNK_ROWS)
            _put(h5, "face", face, _FACE_CHUNK_ROWS)
            _put(h5, "face_found", found, 4096)
            _put(h5, "frame_times", times, 4096)
            h5.create_dataset("utt_id", data=np.array([it.utt_id for it in items], dtype=h5py.string_dtype()))
            h5.attrs["n_items"] = len(items)
        return rows, buffer.getvalue()


def _put(h5: h5py.File, name: str, data: np.ndarray, chunk_rows: int) -> None:
    # Zero-length datasets cannot be chunked; they have nothing to checksum either.
    if len(data) == 0:
        h5.create_dataset(name, data=data)
        return
    chunks = (min(chunk_rows, len(data)),) + data.shape[1:]
    h5.create_dataset(name, data=data, chunks=chunks, fletcher32=True)


# --------------------------------------------------------------------------- the index (commit log)


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
        payload = "".join(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n" for row in rows)
        fh.write(payload.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read_index_rows(cache_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every committed row, later rows for an utt_id superseding earlier ones, sorted by utt_id.

    Parses the whole log into dicts: the reference reading of the commit log, for tests and small
    caches. Readers use :func:`load_index` (snapshot plus log tail), which agrees with this.

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


# --------------------------------------------------------------------------- the columnar snapshot
#
# index.jsonl stays the commit log; index.parquet is a derived, atomically replaced snapshot of it:
# the current row of every utt_id, sorted, plus (in its metadata) how many log bytes it covers and a
# fingerprint of the last of them. A reader takes the snapshot and parses only the log after it.
# Any snapshot, old or new, covers a prefix of the committed log, so a kill at any moment (even
# mid-write of the snapshot, which goes to a temporary name first) changes nothing a reader sees.

SNAPSHOT_FILE = "index.parquet"
SNAPSHOT_VERSION = 1
#: A reader that had to parse at least this many log rows after the snapshot writes a fresh one.
SNAPSHOT_REFRESH_ROWS = 10_000
_SNAPSHOT_META = b"avpi.index"
_FINGERPRINT_BYTES = 4096
_LOC = LOCATION_COLUMNS[1:]  # the integer location columns


def _fingerprint(log: Path, end: int) -> str:
    """sha256 of the log's last few KiB before ``end``: tells a log that grew from one rewritten."""
    start = max(0, end - _FINGERPRINT_BYTES)
    return sha256_file(log, start, end)


def _utf8_fixed(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow strings → a numpy ``S`` array of their UTF-8 bytes, without a Python object per value.

    Byte order of UTF-8 is code point order, so it sorts exactly as Python sorts the strings.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_fixed_size_binary(array.type):  # the snapshot's own layout: a plain view
        width = array.type.byte_width
        return np.frombuffer(array.buffers()[1], f"S{width}")[array.offset : array.offset + len(array)]
    array = array.cast(pa.large_binary())
    n = len(array)
    if n == 0:
        return np.zeros(0, "S1")
    if array.null_count:
        raise CacheError("the index has a row without a utt_id or shard")
    offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset : array.offset + n + 1]
    data = np.frombuffer(array.buffers()[2], np.uint8) if array.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max()), 1)
    out = np.zeros((n, width), np.uint8)
    for length in np.unique(lengths):  # ids come in a few lengths: one 2-D gather per length
        rows = np.flatnonzero(lengths == length)
        if length:
            out[rows, :length] = data[offsets[rows, None] + np.arange(length)]
    return out.view(f"S{width}").ravel()


def _label_array(name: str, values: list[Any]) -> tuple[pa.Array, bool]:
    """One label column as an Arrow array; values Arrow cannot type as one column go in as JSON text."""
    try:
        return pa.array(values), False
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else json.dumps(v, default=_jsonable) for v in values], pa.string()), True


def _rows_table(rows: list[dict[str, Any]]) -> tuple[pa.Table, set[str]]:
    """Log rows (in log order) as one table, and the columns that had to be stored as JSON text."""
    names = list(dict.fromkeys(["utt_id", *LOCATION_COLUMNS, *(k for row in rows for k in row)]))
    arrays, json_columns = [], set()
    for name in names:
        values = [row.get(name) for row in rows]
        if name in _LOC:
            arrays.append(pa.array(values, pa.int64()))
            continue
        array, as_json = _label_array(name, values)
        arrays.append(array)
        if as_json:
            json_columns.add(name)
    return pa.table(arrays, names=names), json_columns


_ARROW_JSON_TYPES = (
    pa.types.is_string,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_null,
)


def _parse_log(data: bytes, where: str, first_line: int = 1) -> tuple[pa.Table, set[str], int, int]:
    """The complete lines of ``data`` as a table (log order), its JSON columns, the bytes and lines they span.

    A torn last line (a kill mid-append) has no newline yet: it is not a row and not covered.
    Arrow's JSON reader parses in C++; a log it would type differently from ``json.loads`` (dates
    it would read as timestamps, nested values, mixed types) goes through ``json.loads``.
    """
    end = data.rfind(b"\n") + 1
    n_lines = data.count(b"\n", 0, end)
    if end == 0:
        table, json_columns = _rows_table([])
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
    table, json_columns = _rows_table(rows)
    return table, json_columns, end, n_lines


@dataclass
class IndexTable:
    """The committed index in columns: what a :class:`Cache` holds per item, with no Python object per item.

    ``ids`` are the sorted utt ids as UTF-8 bytes (looked up by binary search), locations are int
    arrays, the shard of row ``i`` is ``shard_names[shard[i]]``, and every other column (``has_video``,
    ``duration``, the manifest's labels) stays an Arrow array. Arrays like these are shared by
    forked loader workers page for page: reading them touches no reference count.
    """

    ids: np.ndarray  # (N,) S: UTF-8 utt ids, sorted, unique
    shard_names: np.ndarray  # (S,) S
    shard: np.ndarray  # (N,) int32 into shard_names
    locations: np.ndarray  # (N, 4) int64: fbank_offset, n_fbank, face_offset, n_face
    labels: dict[str, pa.ChunkedArray]  # column -> values, in index column order
    json_columns: frozenset[str] = frozenset()
    #: Row ``i``'s labels are at ``label_rows[i]`` of the label columns (None: at ``i``). Set by a
    #: merge, which appends the tail's labels instead of copying a million rows of strings.
    label_rows: np.ndarray | None = None

    @classmethod
    def from_log_table(cls, table: pa.Table, json_columns: Iterable[str] = ()) -> IndexTable:
        """From rows in log order: the latest row of each utt_id, sorted by utt_id."""
        ids = _utf8_fixed(table.column("utt_id")) if len(table) else np.zeros(0, "S1")
        order = np.argsort(ids, kind="stable")
        last = np.ones(len(order), bool)
        last[:-1] = ids[order][1:] != ids[order][:-1]  # the last of each run of one id: its latest row
        keep = order[last]
        return cls.from_table(table.take(pa.array(keep)), json_columns, ids=ids[keep])

    @classmethod
    def from_table(cls, table: pa.Table, json_columns: Iterable[str] = (), ids: np.ndarray | None = None) -> IndexTable:
        """From a table already sorted by utt_id with one row per item (a snapshot)."""
        labels = {n: _chunked(table.column(n)) for n in table.column_names if n not in ("utt_id", *LOCATION_COLUMNS)}
        if len(table) == 0:
            return cls(
                np.zeros(0, "S1"),
                np.zeros(0, "S1"),
                np.zeros(0, np.int32),
                np.zeros((0, 4), np.int64),
                labels,
                frozenset(json_columns),
            )
        ids = _utf8_fixed(table.column("utt_id")) if ids is None else ids
        shards = table.column("shard")
        if not pa.types.is_dictionary(shards.type):
            shards = shards.dictionary_encode()
        shards = shards.unify_dictionaries()
        codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in shards.chunks]).astype(np.int32)
        names = _utf8_fixed(shards.chunks[0].dictionary)
        locations = np.empty((len(table), len(_LOC)), np.int64)
        for k, name in enumerate(_LOC):
            locations[:, k] = table.column(name).to_numpy()
        return cls(ids, names, codes, locations, labels, frozenset(json_columns))

    def __len__(self) -> int:
        return len(self.ids)

    def label(self, name: str, position: int) -> Any:
        """One label of one row, as a Python value (JSON text decoded)."""
        row = int(position if self.label_rows is None else self.label_rows[position])
        value = self.labels[name][row].as_py()
        return json.loads(value) if name in self.json_columns and value is not None else value

    def label_column(self, name: str) -> pa.ChunkedArray:
        """One label column in row order."""
        values = self.labels[name]
        return values if self.label_rows is None else values.take(pa.array(self.label_rows))

    def position(self, utt_id: str) -> int:
        """Row of ``utt_id``, or -1."""
        key = utt_id.encode("utf-8")
        i = int(np.searchsorted(self.ids, key))
        return i if i < len(self.ids) and self.ids[i] == key else -1

    def merge(self, tail: IndexTable) -> IndexTable:
        """This index with the tail's rows put in: a tail row replaces the row of its utt_id.

        Raises pa.ArrowException when a label column changed type in the tail (the caller rebuilds).
        """
        if len(tail) == 0:
            return self
        if (tail.json_columns - self.json_columns) or (self.json_columns - tail.json_columns) & set(tail.labels):
            raise pa.ArrowInvalid("a label column changed its encoding")
        at = np.minimum(np.searchsorted(self.ids, tail.ids), max(len(self.ids) - 1, 0))
        clash = at[self.ids[at] == tail.ids] if len(self.ids) else at[:0]
        keep_mask = np.ones(len(self.ids), bool)
        keep_mask[clash] = False
        keep = np.flatnonzero(keep_mask)
        # tail ids are sorted and unique, none is among the kept: merging two sorted runs
        kept_ids = self.ids if len(clash) == 0 else self.ids[keep]
        order = np.insert(np.arange(len(keep)), np.searchsorted(kept_ids, tail.ids), len(keep) + np.arange(len(tail)))
        # where each kept row and each tail row lands; filled in place, so a million-row index is
        # not held three times over (base, concatenation, reordered copy) at the peak
        dest = np.empty(len(order), np.int64)
        dest[order] = np.arange(len(order))
        kept, landed = (lambda a: a) if len(clash) == 0 else (lambda a: a[keep]), dest[: len(keep)]

        def placed(base: np.ndarray, new: np.ndarray) -> np.ndarray:
            out = np.empty((len(order), *base.shape[1:]), np.result_type(base, new))
            out[landed] = kept(base)
            out[dest[len(keep) :]] = new
            return out

        ids = placed(self.ids, tail.ids)
        names, codes = np.unique(np.concatenate([self.shard_names, tail.shard_names]), return_inverse=True)
        shard = placed(codes[self.shard].astype(np.int32), codes[len(self.shard_names) + tail.shard].astype(np.int32))
        locations = placed(self.locations, tail.locations)
        n_base = len(next(iter(self.labels.values()))) if self.labels else 0
        labels = {}
        for name in dict.fromkeys([*self.labels, *tail.labels]):
            base, new = self.labels.get(name), tail.labels.get(name)
            kind = base.type if base is not None and not pa.types.is_null(base.type) else new.type
            base = base if base is not None else pa.chunked_array([pa.nulls(n_base, kind)])
            new = new if new is not None else pa.chunked_array([pa.nulls(len(tail), kind)])
            plain = kind.value_type if pa.types.is_dictionary(kind) else kind
            new_plain = new.type.value_type if pa.types.is_dictionary(new.type) else new.type
            if new_plain != plain and not pa.types.is_null(new_plain):  # a cast would change values' types
                raise pa.ArrowInvalid(f"label column {name!r} is {plain} in the snapshot, {new_plain} after it")
            if pa.types.is_dictionary(kind) and not pa.types.is_dictionary(new.type):
                new = new.cast(plain).dictionary_encode()
                new = pa.chunked_array([c.cast(kind) for c in new.chunks], kind)
            labels[name] = pa.chunked_array([*base.cast(kind).chunks, *new.cast(kind).chunks], kind)
        base_rows = np.arange(len(self.ids)) if self.label_rows is None else self.label_rows
        tail_rows = n_base + (np.arange(len(tail)) if tail.label_rows is None else tail.label_rows)
        label_rows = placed(base_rows.astype(np.int64), tail_rows.astype(np.int64))
        return IndexTable(
            ids,
            names.astype(f"S{max(names.dtype.itemsize, 1)}"),
            shard.astype(np.int32),
            locations,
            labels,
            self.json_columns | tail.json_columns,
            label_rows,
        )

    def to_table(self, for_snapshot: bool = False) -> pa.Table:
        """One row per item; ``for_snapshot``: utt_id as NUL-padded fixed-width bytes (read back as a view)."""
        ids = (
            pa.array(self.ids, pa.binary(self.ids.dtype.itemsize))
            if for_snapshot
            else pa.array(self.ids, pa.binary()).cast(pa.string())
        )
        names = pa.array(self.shard_names, pa.binary()).cast(pa.string())
        shard = (
            pa.DictionaryArray.from_arrays(pa.array(self.shard), names)
            if for_snapshot
            else names.take(pa.array(self.shard))
        )
        columns = {"utt_id": ids, "shard": shard, **{c: self.locations[:, k] for k, c in enumerate(_LOC)}}
        for name in self.labels:
            values = self.label_column(name)
            if for_snapshot and pa.types.is_string(values.type) and len(values) > 1:
                if pc.count_distinct(values).as_py() <= len(values) // 2:  # speakers, splits: stored once each
                    values = values.dictionary_encode()
            elif not for_snapshot and pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)
            columns[name] = values
        return pa.table(columns)


def _chunked(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])


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
    table, json_columns, used, n_lines = _parse_log(tail_bytes, str(log), first_line=covered_rows + 1)
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
    table, json_columns, used, n_lines = _parse_log(log.read_bytes(), str(log))
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


@contextlib.contextmanager
def cache_lock(cache_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the cache's exclusive write lock; a second writer is refused, not queued."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise CacheBusyError(
                f"{cache_dir} is being written by another `extract run` (pid {holder}); "
                "wait for it to finish (it resumes safely if killed), or use another --cache-root"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# --------------------------------------------------------------------------- config


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_text(blob)[:16]


def write_config(cache_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write config.json atomically (a reader never sees half a file)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_dir / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")


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


# --------------------------------------------------------------------------- reading


class Cache:
    """Read access to one cache directory.

    Picklable and fork-safe: HDF5 files are opened lazily, per process, on first read, and a
    pickled Cache carries no h5py object. Handles are kept in a small LRU with a small chunk cache,
    because per-file chunk caches over thousands of shards are what makes loader RSS grow. The
    index is held as an :class:`IndexTable` (numpy and Arrow arrays, no Python object per item), so
    loader workers reading it do not copy it page by page; ``index`` (a DataFrame) is built on
    first use and never pickled.
    """

    max_open_files = 32
    chunk_cache_bytes = 1 << 20

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.dir = Path(cache_dir)
        config_path = self.dir / CONFIG_FILE
        if not config_path.exists():
            raise CacheError(f"{self.dir} is not a feature cache: {CONFIG_FILE} is missing")
        self.config: dict[str, Any] = json.loads(config_path.read_text())
        self.cache_id: str = str(self.config.get("hash") or config_hash(self.config))
        self.table = load_index(self.dir)
        self._frame: pd.DataFrame | None = None
        self._handles = H5Files(self.max_open_files, self.chunk_cache_bytes)

    # -- pickling / processes (the handles pickle empty and reopen per process)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frame"] = None
        return state

    def _file(self, shard: str) -> h5py.File:
        return self._handles.get(self.dir / SHARD_DIR / shard)

    def close(self) -> None:
        self._handles.close()

    # -- the index
    @property
    def index(self) -> pd.DataFrame:
        """One row per item (sorted by utt_id, indexed by it): utt_id, locations, labels. Built on first use."""
        if self._frame is None:
            frame = self.table.to_table().to_pandas()
            for name in self.table.json_columns:
                frame[name] = pd.Series(
                    [json.loads(v) if isinstance(v, str) else None for v in frame[name]],
                    index=frame.index,
                    dtype=object,
                )
            frame.index = pd.Index(frame["utt_id"])
            frame.index.name = None  # `utt_id` stays a column only: groupby / merge on it are unambiguous
            self._frame = frame
        return self._frame

    def column(self, name: str) -> np.ndarray:
        """One label column (e.g. ``duration``, ``has_video``, ``speaker``) as a numpy array, in item order."""
        if name not in self.table.labels:
            raise KeyError(f"the cache index has no {name!r} column; columns: {', '.join(self.table.labels)}")
        return self.table.label_column(name).to_numpy(zero_copy_only=False)

    def position(self, utt_id: str) -> int:
        """The item's row in cache order (0 ≤ row < len(cache))."""
        i = self.table.position(utt_id) if isinstance(utt_id, str) else -1
        if i < 0:
            raise KeyError(f"{utt_id!r} is not in the cache {self.dir}")
        return i

    def positions(self, utt_ids: Iterable[str]) -> np.ndarray:
        """Rows of many items at once (int64), KeyError naming the first one missing."""
        keys = (
            np.array([u.encode("utf-8") for u in utt_ids], dtype="S")
            if not isinstance(utt_ids, np.ndarray)
            else np.char.encode(utt_ids.astype(str), "utf-8")
        )
        ids = self.table.ids
        if len(keys) == 0:
            return np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(ids, keys), max(len(ids) - 1, 0))
        bad = np.flatnonzero(ids[at] != keys) if len(ids) else np.arange(len(keys))
        if len(bad):
            raise KeyError(f"{keys[bad[0]].decode()!r} is not in the cache {self.dir}")
        return at.astype(np.int64)

    def utt_id(self, position: int) -> str:
        return self.table.ids[position].decode("utf-8")

    def utt_ids(self, positions: np.ndarray | None = None) -> list[str]:
        """Utt ids of rows (all rows by default), as a fresh list."""
        ids = self.table.ids if positions is None else self.table.ids[np.asarray(positions, dtype=np.int64)]
        return np.char.decode(ids, "utf-8").tolist() if len(ids) else []

    def shard_name(self, position: int) -> str:
        return self.table.shard_names[self.table.shard[position]].decode("utf-8")

    # -- mapping API
    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self) -> Iterator[str]:
        return (utt.decode("utf-8") for utt in self.table.ids)

    def __contains__(self, utt_id: object) -> bool:
        return isinstance(utt_id, str) and self.table.position(utt_id) >= 0

    def __getitem__(self, utt_id: str) -> dict[str, Any]:
        return self.read(utt_id)

    def __repr__(self) -> str:
        return f"Cache({str(self.dir)!r}, items={len(self)}, id={self.cache_id})"

    @property
    def n_mels(self) -> int:
        return int(self.config["n_mels"])

    @property
    def face_dim(self) -> int:
        """Width of the stored face embeddings: config.json's ``face_dim``, else the shards' arrays."""
        if "face_dim" in self.config:
            return int(self.config["face_dim"])
        for path in self.shard_paths()[:1]:
            shape = self._file(path.name)["face"].shape
            if len(shape) == 2 and shape[1]:
                return int(shape[1])
        return FACE_DIM

    def labels_at(self, position: int) -> dict[str, Any]:
        """utt_id and every label column of one row, as plain Python values."""
        out: dict[str, Any] = {"utt_id": self.utt_id(position)}
        for name in self.table.labels:
            out[name] = self.table.label(name, position)
        return out

    def read(self, utt_id: str, fields: Sequence[str] = ARRAY_FIELDS) -> dict[str, Any]:
        """The item's labels plus the requested arrays (float32 / bool), read with a slice each."""
        return self.read_at(self.position(utt_id), fields)

    def read_at(
        self,
        position: int,
        fields: Sequence[str] = ARRAY_FIELDS,
        *,
        labels: bool = True,
        frames: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """:meth:`read` by row; ``labels=False`` returns the arrays alone (the loaders' hot path).
        ``frames=(start, stop)`` reads only those fbank rows (a window of a long noise file)."""
        fb_off, n_fb, face_off, n_face = (int(v) for v in self.table.locations[position])
        if frames is not None:
            start, stop = frames
            if not 0 <= start <= stop <= n_fb:
                raise IndexError(f"{self.utt_id(position)!r} has {n_fb} fbank frames; asked for [{start}, {stop})")
            fb_off, n_fb = fb_off + start, stop - start
        out = self.labels_at(position) if labels else {}
        h5 = self._file(self.shard_name(position))
        for name in fields:
            if name == "fbank":
                a, n = fb_off, n_fb
            elif name in ("face", "face_found", "frame_times"):
                a, n = face_off, n_face
            else:
                raise KeyError(f"unknown field {name!r}; fields are {ARRAY_FIELDS}")
            data = h5[name][a : a + n] if n else np.zeros((0,) + h5[name].shape[1:], h5[name].dtype)
            if data.dtype.kind == "f":
                data = data.astype(np.float32, copy=False)
            out[name] = data
        return out

    def shard_paths(self) -> list[Path]:
        used = np.unique(self.table.shard, return_index=True)[1]  # first use of each shard, in item order
        codes = self.table.shard[np.sort(used)]
        return [self.dir / SHARD_DIR / name.decode("utf-8") for name in self.table.shard_names[codes]]

    def count_faces_found(self) -> tuple[int, int]:
        """(face frames with a face found, face frames) over the items with video.

        One read of ``face_found`` per shard, not one per item: on a VoxCeleb-sized cache the
        per-item loop spent minutes opening slices for a single number.
        """
        if len(self) == 0:
            return 0, 0
        n_face = self.table.locations[:, 3]
        rows = np.flatnonzero(self.column("has_video").astype(bool) & (n_face > 0))
        rows = rows[np.argsort(self.table.shard[rows], kind="stable")]
        codes, starts = np.unique(self.table.shard[rows], return_index=True)
        found = 0
        for code, group in zip(codes, np.split(rows, starts[1:])):
            mask = self._file(self.table.shard_names[code].decode("utf-8"))["face_found"][:]
            before = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
            start = self.table.locations[group, 2]
            found += int((before[start + n_face[group]] - before[start]).sum())
        return found, int(n_face[rows].sum())

    def check(self, utt_id: str) -> str | None:
        """Why the item does not read back whole and finite, or None when it does."""
        try:
            item = self.read(utt_id)
        except Exception as err:  # h5py raises OSError on a checksum mismatch, others on truncation
            return f"{type(err).__name__}: {err}"
        _, n_fb, _, n_face = self.table.locations[self.position(utt_id)]
        if item["fbank"].shape[0] != n_fb or item["face"].shape[0] != n_face:
            return "stored arrays are shorter than the index says"
        for name in ("fbank", "face", "frame_times"):
            if not np.isfinite(item[name]).all():
                return f"{name} has non-finite values"
        return None


def open_cache(cache_dir: str | os.PathLike) -> Cache:
    """Open a cache directory written by ``extract run`` or :func:`build_cache`."""
    return Cache(cache_dir)
