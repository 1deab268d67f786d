"""Reading a cache: :class:`Cache` (by utt id or by row, picklable, fork-safe) and :func:`open_cache`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from common.hdf5 import H5Files
from extract.cache.index import load_index
from extract.cache.layout import ARRAY_FIELDS, CONFIG_FILE, FACE_DIM, SHARD_DIR, CacheError, config_hash


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
        shard = os.path.join(self.dir, SHARD_DIR, self.shard_name(position))  # a str: no pathlib per read
        for name in fields:
            if name == "fbank":
                a, n = fb_off, n_fb
            elif name in ("face", "face_found", "frame_times"):
                a, n = face_off, n_face
            else:
                raise KeyError(f"unknown field {name!r}; fields are {ARRAY_FIELDS}")
            stored = self._handles.dataset(shard, name)  # kept per open file: a lookup costs more than a crop
            data = stored[a : a + n] if n else np.zeros((0,) + stored.shape[1:], stored.dtype)
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
