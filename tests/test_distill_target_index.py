"""The per-item index of targets.h5 and its bulk reading: written and read back as one record, and
per-item means equal to averaging each item's own rows."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from distill.target_index import TargetIndex, item_means

KEY = {"labels": ["a", "b", "c"], "cache_id": "x"}


def write(path, n_cells, logits=None):
    index = TargetIndex.of([f"u{i}" for i in range(len(n_cells))], np.array(n_cells), KEY)
    rows = int(np.sum(n_cells))
    logits = np.random.default_rng(0).normal(size=(rows, 3)).astype(np.float32) if logits is None else logits
    with h5py.File(path, "w") as h5:
        h5.create_dataset("logits", data=logits)
        index.write(h5)
    return index, logits


def test_the_index_reads_back_as_written(tmp_path):
    index, _ = write(tmp_path / "t.h5", [2, 1, 3])
    with h5py.File(tmp_path / "t.h5", "r") as h5:
        back = TargetIndex.read(h5)
    assert back.utt_ids == ["u0", "u1", "u2"] and back.key == KEY
    assert back.cell_offset.tolist() == [0, 2, 3] and back.n_cells.tolist() == [2, 1, 3]
    assert back.cell_offset.tolist() == index.cell_offset.tolist()


def test_item_means_average_each_items_own_cells(tmp_path):
    index, logits = write(tmp_path / "t.h5", [2, 1, 3])
    back, means = item_means(tmp_path / "t.h5")
    expected = [logits[a : a + n].mean(0) for a, n in zip(index.cell_offset, index.n_cells)]
    np.testing.assert_allclose(means, np.stack(expected), rtol=1e-6)
    assert back.utt_ids == index.utt_ids


def test_a_field_that_is_not_per_cell_or_an_item_without_cells_is_refused(tmp_path):
    write(tmp_path / "t.h5", [2, 1])
    with pytest.raises(ValueError, match="no per-cell 'agg'"):
        item_means(tmp_path / "t.h5", "agg")
    write(tmp_path / "z.h5", [2, 0, 1])
    with pytest.raises(ValueError, match="an item without cells"):
        item_means(tmp_path / "z.h5")
