"""The committed index in columns (:class:`IndexTable`), and log rows turned into Arrow columns."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extract.cache.layout import LOCATION_COLUMNS, CacheError, jsonable

_LOC = LOCATION_COLUMNS[1:]  # the integer location columns


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
        return pa.array([None if v is None else json.dumps(v, default=jsonable) for v in values], pa.string()), True


def rows_table(rows: list[dict[str, Any]]) -> tuple[pa.Table, set[str]]:
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
