"""The crop/segment grid and the datasets over the cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from distill.config import DataConfig
from distill.data.dataset import Grid, GridDataset, Labels, assign_splits, collate
from distill.testing import make_lupi_cache, make_lupi_items
from extract.cache import build_cache, open_cache


def nonseq(crop=10, hop=4, max_faces=3) -> Grid:
    return Grid.from_config(DataConfig(setting="nonseq", crop=crop, crop_hop=hop, max_faces=max_faces))


def seq(seg_len=4, seg_hop=2, n_segments=3, hop=5) -> Grid:
    return Grid.from_config(
        DataConfig(setting="seq", crop_hop=hop, seg_len=seg_len, seg_hop=seg_hop, n_segments=n_segments, max_faces=2)
    )


def test_grid_starts_cover_the_tail_and_wrap_short_items():
    grid = nonseq(crop=10, hop=4)
    assert grid.starts(10).tolist() == [0]
    assert grid.starts(20).tolist() == [0, 4, 8, 10]  # last cell aligned with the end
    assert grid.frame_index(20, 3).tolist() == list(range(10, 20))
    assert grid.frame_index(6, 0).tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]  # shorter than a crop: wraps


def test_seq_grid_cells_are_windows_of_segments():
    grid = seq(seg_len=4, seg_hop=2, n_segments=3, hop=5)
    assert grid.cell_len == 8
    rows = grid.frame_index(30, 1)
    assert rows.shape == (3, 4)
    assert rows[:, 0].tolist() == [5, 7, 9] and rows[2].tolist() == [9, 10, 11, 12]


def test_face_index_picks_frames_inside_the_rows_and_pads_with_a_mask():
    grid = nonseq(max_faces=3)
    face_frame = np.array([0, 5, 12, 15, 30])
    idx, mask = grid.face_index(np.arange(10, 20), face_frame)
    assert idx[mask].tolist() == [2, 3] and mask.tolist() == [True, True, False]
    idx, mask = grid.face_index(np.arange(0, 40), face_frame)  # 5 faces, room for 3: thinned evenly
    assert mask.all() and idx.tolist() == [0, 2, 4]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return open_cache(
        make_lupi_cache(
            tmp_path_factory.mktemp("data") / "cache", n_classes=3, per_class=4, n_frames=50, length_jitter=20
        )
    )


def test_training_cells_are_a_function_of_seed_epoch_and_item(cache):
    utts = list(cache)
    labels = np.zeros(len(utts), int)
    grid = nonseq(crop=10, hop=5)
    a = GridDataset(cache, utts, labels, grid, faces=False, train=True, seed=1)
    b = GridDataset(cache, utts, labels, grid, faces=False, train=True, seed=1)

    def cells(ds):
        return [ds.locate(i)[1] for i in range(len(ds))]

    assert cells(a) == cells(b)
    epochs = []
    for epoch in range(3):
        epochs.append([a.locate(i, epoch)[1] for i in range(len(a))])
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    assert all(0 <= c < n for c, n in zip(epochs[0], a.n_cells))


def test_eval_dataset_visits_every_cell_once(cache):
    utts = list(cache)
    ds = GridDataset(cache, utts, np.zeros(len(utts), int), nonseq(crop=10, hop=5), faces=False, train=False)
    seen = {ds.locate(i) for i in range(len(ds))}
    assert len(seen) == len(ds) == int(ds.n_cells.sum())


def test_student_samples_hold_fbank_only_and_match_the_cache(cache):
    utts = list(cache)
    grid = nonseq(crop=10, hop=5)
    ds = GridDataset(cache, utts, np.arange(len(utts)), grid, faces=False, train=False)
    sample = ds[3]
    item, cell = ds.locate(3)
    assert "face" not in sample and sample["fbank"].shape == (10, 20)
    full = cache[utts[item]]["fbank"]
    np.testing.assert_array_equal(sample["fbank"].numpy(), full[grid.frame_index(len(full), cell)])


@pytest.mark.parametrize("grid", [nonseq(crop=55, hop=7), seq(seg_len=10, seg_hop=15, n_segments=4, hop=9)])
def test_a_cell_reads_only_its_span_of_fbank_rows_and_wrapped_cells_the_whole_item(cache, grid, monkeypatch):
    """Lengths 30-70 frames against cells of 55 frames (crops, or 4 segments of 10 frames 15 apart):
    a long item reads the cell's span, a shorter one (wrapped) the rows it wraps over; every cell
    equals the full item's rows."""
    reads = []
    read_at = type(cache).read_at
    monkeypatch.setattr(
        cache, "read_at", lambda row, *a, **k: reads.append(k.get("frames")) or read_at(cache, row, *a, **k)
    )
    utts = list(cache)
    ds = GridDataset(cache, utts, np.arange(len(utts)), grid, faces=True, train=False)
    for i in range(len(ds)):
        item, cell = ds.locate(i)
        full = cache[utts[item]]
        rows = grid.frame_index(len(full["fbank"]), cell)
        sample = ds[i]
        np.testing.assert_array_equal(sample["fbank"].numpy(), full["fbank"][rows])
        first, stop = reads[-1]
        assert (first, stop) == (rows.min(), rows.max() + 1)  # the rows the cell holds, no more
        if len(full["fbank"]) > grid.cell_len:
            assert stop - first == grid.cell_len
    assert {len(cache[u]["fbank"]) > grid.cell_len for u in utts} == {True, False}  # both cases ran


def test_teacher_seq_samples_carry_per_segment_faces_with_masks(cache):
    utts = list(cache)
    ds = GridDataset(
        cache,
        utts,
        np.zeros(len(utts), int),
        seq(seg_len=10, seg_hop=10, n_segments=3, hop=10),
        faces=True,
        train=False,
    )
    batch = collate([ds[i] for i in range(4)])
    assert batch["fbank"].shape == (4, 3, 10, 20)
    assert batch["face"].shape == (4, 3, 2, 512) and batch["face_mask"].dtype == torch.bool
    for b in range(4):  # a segment holds exactly the faces whose timestamp falls in its fbank rows
        item, cell = ds.locate(b)
        stored = cache[utts[item]]
        face_frames = np.floor(stored["frame_times"] / 0.01 + 1e-6).astype(int)
        rows = ds.grid.frame_index(len(stored["fbank"]), cell)
        expected = [min(2, np.isin(face_frames, seg).sum()) for seg in rows]
        assert batch["face_mask"][b].sum(-1).tolist() == expected
    assert batch["face"][~batch["face_mask"]].abs().sum() == 0
    assert isinstance(batch["utt_id"], list) and len(batch["utt_id"]) == 4


def test_items_without_video_give_all_false_masks(tmp_path):
    items = make_lupi_items(2, 2, n_frames=30)
    for it in items:
        it.update(
            face=np.zeros((0, 512), np.float32),
            face_found=np.zeros(0, bool),
            frame_times=np.zeros(0, np.float32),
            has_video=False,
        )
    cache = open_cache(build_cache(tmp_path / "c", items))
    ds = GridDataset(cache, list(cache), np.zeros(4, int), nonseq(crop=10), faces=True, train=True)
    sample = ds[0]
    assert not sample["face_mask"].any() and sample["face"].shape == (3, 512)


def test_fallback_split_when_the_cache_has_no_split_column(tmp_path):
    cache = open_cache(make_lupi_cache(tmp_path / "c", n_classes=3, per_class=6, n_frames=20, with_split=False))
    splits = assign_splits(cache.index, DataConfig(task="speaker", split_seed=0))
    assert set(splits) == {"train", "val", "test"}
    per_speaker = cache.index.assign(split=splits).groupby("speaker")["split"].nunique()
    assert (per_speaker == 3).all()  # identification: every speaker in every split
    again = assign_splits(cache.index, DataConfig(task="speaker", split_seed=0))
    assert splits.equals(again)


def test_labels_come_from_the_train_split_and_unknowns_are_minus_one(cache):
    splits = cache.index["split"].copy()
    labels = Labels.from_train(cache.index, splits, "speaker")
    assert labels.names == ["spk0", "spk1", "spk2"]
    assert labels.encode(cache.index["speaker"].replace({"spk2": "stranger"})).min() == -1
    with pytest.raises(ValueError, match="no 'accent' column"):
        Labels.from_train(cache.index, splits, "accent")


def test_persistent_workers_follow_the_epoch_through_tagged_indices(cache):
    from torch.utils.data import DataLoader, DistributedSampler

    from distill.data.dataset import EpochTaggedSampler

    utts = list(cache)
    ds = GridDataset(cache, utts, np.zeros(len(utts), int), nonseq(crop=10, hop=5), faces=False, train=True, seed=3)
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=3)
    loader = DataLoader(
        ds,
        batch_size=4,
        sampler=EpochTaggedSampler(sampler),
        num_workers=2,
        persistent_workers=True,
        collate_fn=collate,
    )
    for epoch in (1, 2, 3):
        sampler.set_epoch(epoch)
        got = {(int(i), int(c)) for b in loader for i, c in zip(b["item"], b["cell"])}
        assert got == {ds.locate(i, epoch) for i in range(len(ds))}


def test_a_dataset_by_rows_equals_one_by_utt_ids(cache):
    utts = list(cache)[::2]
    by_ids = GridDataset(cache, utts, np.arange(len(utts)), nonseq(), faces=True, train=False)
    by_rows = GridDataset(cache, cache.positions(utts), np.arange(len(utts)), nonseq(), faces=True, train=False)
    assert by_ids.utt_ids == by_rows.utt_ids == utts and len(by_ids) == len(by_rows)
    for i in (0, len(by_ids) // 2, len(by_ids) - 1):
        a, b = by_ids[i], by_rows[i]
        assert a["utt_id"] == b["utt_id"] and torch.equal(a["fbank"], b["fbank"]) and torch.equal(a["face"], b["face"])
    with pytest.raises(KeyError, match="nope"):
        GridDataset(cache, ["nope"], np.zeros(1), nonseq(), faces=False, train=True)


def test_what_a_loader_worker_receives_holds_no_python_object_per_item(cache):
    """Workers copy the pages of every Python object they touch: per item, only numpy arrays may travel."""
    import pickle

    n = len(cache)
    ds = GridDataset(cache, list(cache), np.zeros(n, int), nonseq(), faces=True, train=False)
    _ = cache.index  # the parent's DataFrame stays in the parent
    shipped = pickle.loads(pickle.dumps(ds))
    objects = [*vars(shipped).values(), *vars(shipped.cache).values(), *vars(shipped.cache.table).values()]
    for value in objects:
        assert not (isinstance(value, (list, tuple, dict, set, pd.DataFrame)) and len(value) >= n), type(value)
        assert not (isinstance(value, np.ndarray) and value.dtype == object)
    assert shipped[0]["utt_id"] == ds[0]["utt_id"]
