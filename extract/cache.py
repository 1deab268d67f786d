"""The feature cache: packed HDF5 shards plus an append-only index that is the commit log.

Durability rules (why the code is shaped this way):

* One writer per file. A worker task owns one :class:`ShardWriter`; it writes
  ``shards/.tmp-<id>.h5``, fsyncs it and renames it to ``shards/<id>.h5`` only when complete, so a
  file with a final name is always whole.
* The driver alone appends rows to ``index.jsonl`` (:func:`commit_rows`), after the shard they
  point into is durable. An item exists when its row exists; a killed run resumes by skipping
  what the index holds, and shards no row names are orphans (:func:`remove_orphan_shards`).
* A later row for the same ``utt_id`` supersedes an earlier one (that is how ``--repair`` re-extracts
  an item without rewriting history).
* Packed per-shard arrays with offsets in the index, rather than one HDF5 dataset per utterance:
  thousands of tiny datasets make h5py slow to open and read at VoxCeleb scale.
* Every dataset is chunked with the fletcher32 checksum filter, so flipped bytes raise on read
  instead of returning plausible garbage.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import h5py
import numpy as np
import pandas as pd

INDEX_FILE = "index.jsonl"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
SHARD_DIR = "shards"
TMP_PREFIX = ".tmp-"

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
    def from_dict(cls, item: dict[str, Any]) -> "ItemFeatures":
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        self.tmp_path = self.shard_dir / f"{TMP_PREFIX}{self.name}"
        self.path = self.shard_dir / self.name
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
            with open(self.tmp_path, "wb") as fh:
                fh.write(image)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(self.tmp_path, self.path)
            _fsync_dir(self.shard_dir)
        except BaseException:
            self.abort()
            raise
        return rows

    def abort(self) -> None:
        self._closed = True
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

    def __enter__(self) -> "ShardWriter":
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
    return {row["utt_id"] for row in read_index_rows(cache_dir)}


def remove_orphan_shards(cache_dir: str | os.PathLike) -> list[Path]:
    """Delete temp files and shards that no committed row names (leftovers of a killed run)."""
    shard_dir = Path(cache_dir) / SHARD_DIR
    if not shard_dir.is_dir():
        return []
    referenced = {row["shard"] for row in read_index_rows(cache_dir)}
    removed = []
    for path in sorted(shard_dir.iterdir()):
        if path.name.startswith(TMP_PREFIX) or (path.suffix == ".h5" and path.name not in referenced):
            path.unlink()
            removed.append(path)
    return removed


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
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_config(cache_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write config.json atomically (a reader never sees half a file)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"{TMP_PREFIX}{CONFIG_FILE}"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, cache_dir / CONFIG_FILE)


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
    return cache_dir


# --------------------------------------------------------------------------- reading


class Cache:
    """Read access to one cache directory.

    Picklable and fork-safe: HDF5 files are opened lazily, per process, on first read, and a
    pickled Cache carries no h5py object. Handles are kept in a small LRU with a small chunk cache,
    because per-file chunk caches over thousands of shards are what makes loader RSS grow.
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
        rows = read_index_rows(self.dir)
        self.index = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["utt_id", *LOCATION_COLUMNS])
        self.index = self.index.set_index("utt_id", drop=False)
        self.index.index.name = None
        self._position = {utt: i for i, utt in enumerate(self.index["utt_id"])}
        self._label_columns = [c for c in self.index.columns if c not in LOCATION_COLUMNS]
        self._records = self.index[self._label_columns].to_dict("records")
        self._loc = self.index[list(LOCATION_COLUMNS)].to_dict("records")
        self._handles: OrderedDict[str, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    # -- pickling / processes
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        return state

    def _file(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():  # forked: inherited handles belong to the parent
            self._handles = OrderedDict()
            self._pid = os.getpid()
        h5 = self._handles.get(shard)
        if h5 is None:
            h5 = h5py.File(self.dir / SHARD_DIR / shard, "r", rdcc_nbytes=self.chunk_cache_bytes)
            self._handles[shard] = h5
            if len(self._handles) > self.max_open_files:
                _, oldest = self._handles.popitem(last=False)
                oldest.close()
        else:
            self._handles.move_to_end(shard)
        return h5

    def close(self) -> None:
        for h5 in self._handles.values():
            h5.close()
        self._handles.clear()

    # -- mapping API
    def __len__(self) -> int:
        return len(self._position)

    def __iter__(self) -> Iterator[str]:
        return iter(self._position)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._position

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

    def labels(self, utt_id: str) -> dict[str, Any]:
        return dict(self._records[self._row(utt_id)])

    def _row(self, utt_id: str) -> int:
        try:
            return self._position[utt_id]
        except KeyError:
            raise KeyError(f"{utt_id!r} is not in the cache {self.dir}") from None

    def read(self, utt_id: str, fields: Sequence[str] = ARRAY_FIELDS) -> dict[str, Any]:
        """The item's labels plus the requested arrays (float32 / bool), read with a slice each."""
        i = self._row(utt_id)
        loc = self._loc[i]
        out = dict(self._records[i])
        h5 = self._file(loc["shard"])
        for name in fields:
            if name == "fbank":
                a, n = loc["fbank_offset"], loc["n_fbank"]
            elif name in ("face", "face_found", "frame_times"):
                a, n = loc["face_offset"], loc["n_face"]
            else:
                raise KeyError(f"unknown field {name!r}; fields are {ARRAY_FIELDS}")
            data = h5[name][a : a + n] if n else np.zeros((0,) + h5[name].shape[1:], h5[name].dtype)
            if data.dtype.kind == "f":
                data = data.astype(np.float32, copy=False)
            out[name] = data
        return out

    def shard_paths(self) -> list[Path]:
        return [self.dir / SHARD_DIR / name for name in dict.fromkeys(self.index["shard"])]

    def count_faces_found(self) -> tuple[int, int]:
        """(face frames with a face found, face frames) over the items with video.

        One read of ``face_found`` per shard, not one per item: on a VoxCeleb-sized cache the
        per-item loop spent minutes opening slices for a single number.
        """
        rows = self.index[self.index["has_video"].astype(bool) & (self.index["n_face"] > 0)]
        found = 0
        for shard, group in rows.groupby("shard", sort=False):
            mask = self._file(shard)["face_found"][:]
            before = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
            start = group["face_offset"].to_numpy(np.int64)
            found += int((before[start + group["n_face"].to_numpy(np.int64)] - before[start]).sum())
        return found, int(rows["n_face"].sum())

    def check(self, utt_id: str) -> str | None:
        """Why the item does not read back whole and finite, or None when it does."""
        try:
            item = self.read(utt_id)
        except Exception as err:  # h5py raises OSError on a checksum mismatch, others on truncation
            return f"{type(err).__name__}: {err}"
        loc = self._loc[self._row(utt_id)]
        if item["fbank"].shape[0] != loc["n_fbank"] or item["face"].shape[0] != loc["n_face"]:
            return "stored arrays are shorter than the index says"
        for name in ("fbank", "face", "frame_times"):
            if not np.isfinite(item[name]).all():
                return f"{name} has non-finite values"
        return None


def open_cache(cache_dir: str | os.PathLike) -> Cache:
    """Open a cache directory written by ``extract run`` or :func:`build_cache`."""
    return Cache(cache_dir)
