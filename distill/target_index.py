"""The per-item index of a teacher's ``targets.h5``: which rows (grid cells) belong to which item,
and the key the file was made for.

The file is written and read for students by :mod:`distill.train.targets`; the evaluation tools
read a teacher's outputs from it in bulk (:mod:`distill.eval.teacher_labels`), and ``eval`` sits
below ``train`` in the package order. So the index lives here, below both, in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np


@dataclass(frozen=True)
class TargetIndex:
    """Per item (in file order): its id, its first row and its row count; the file's key."""

    utt_ids: list[str]
    cell_offset: np.ndarray  # int64, item-major: an item's cells are rows [offset, offset + n)
    n_cells: np.ndarray
    key: dict  # teacher_sha256, cache_id, grid, labels, train_ids_sha256

    @classmethod
    def of(cls, utt_ids: list[str], n_cells: np.ndarray, key: dict) -> TargetIndex:
        n_cells = np.asarray(n_cells, dtype=np.int64)
        return cls(list(utt_ids), np.concatenate([[0], np.cumsum(n_cells)[:-1]]).astype(np.int64), n_cells, key)

    def write(self, h5: h5py.File) -> None:
        h5.create_dataset("utt_id", data=np.array(self.utt_ids, dtype=h5py.string_dtype()))
        h5.create_dataset("n_cells", data=self.n_cells)
        h5.create_dataset("cell_offset", data=self.cell_offset)
        h5.attrs["key"] = json.dumps(self.key, sort_keys=True)

    @classmethod
    def read(cls, h5: h5py.File) -> TargetIndex:
        utts = [u.decode() if isinstance(u, bytes) else str(u) for u in h5["utt_id"][:]]
        return cls(utts, h5["cell_offset"][:], h5["n_cells"][:], json.loads(h5.attrs["key"]))


def item_means(path: str | Path, field: str = "logits") -> tuple[TargetIndex, np.ndarray]:
    """The file's index and ``field`` averaged over each item's cells, (items, ...) in index order:
    the whole-item reading of a per-cell field (not of a per-segment one)."""
    with h5py.File(path, "r") as h5:
        index = TargetIndex.read(h5)
        if field not in h5 or len(h5[field]) != int(index.n_cells.sum()):
            raise ValueError(f"{path}: no per-cell {field!r} to average")
        values = h5[field][:].astype(np.float64)
    if not len(index.utt_ids):
        return index, values[:0]
    if (index.n_cells < 1).any():
        raise ValueError(f"{path}: an item without cells")
    sums = np.add.reduceat(values, index.cell_offset, axis=0)  # cells are item-major, contiguous
    return index, sums / index.n_cells.reshape(-1, *([1] * (values.ndim - 1)))
