"""Shard files: the one writer of each, and the item it packs.

The commit protocol, writer's side (why the code is shaped this way):

* One writer per file. A worker task owns one :class:`ShardWriter`; it writes
  ``shards/.tmp-<id>.h5.<pid>``, fsyncs it and renames it to ``shards/<id>.h5`` only when complete, so a
  file with a final name is always whole. :meth:`ShardWriter.close` returns the index rows for its
  items; the driver commits them (:func:`extract.cache.commit_log.commit_rows`) only after that, so
  a committed row always points into a whole shard.
* Packed per-shard arrays with offsets in the index, rather than one HDF5 dataset per utterance:
  thousands of tiny datasets make h5py slow to open and read at VoxCeleb scale.
* Every dataset is chunked with the fletcher32 checksum filter, so flipped bytes raise on read
  instead of returning plausible garbage.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from common.files import atomic_write_bytes, tmp_path_for
from extract.cache.layout import FACE_DIM, SHARD_DIR, jsonable

_FBANK_CHUNK_ROWS = 512
_FACE_CHUNK_ROWS = 256


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
                    row[key] = jsonable(value)
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
