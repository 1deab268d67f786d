"""Teacher targets: written for every grid cell, and refused when they belong to other inputs."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from distill.data.dataset import Grid
from distill.run import RunData, RunDir
from distill.testing import make_lupi_cache, tiny_config
from distill.train.targets import (
    TARGETS_FILE,
    TRAIN_IDS,
    TargetMismatchError,
    TargetStore,
    cache_identity,
    open_targets,
)
from distill.train.trainer import Trainer, run_training
from extract.cache import open_cache


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    cache = make_lupi_cache(root / "cache", n_classes=3, per_class=8, n_frames=70, length_jitter=30)
    cfg = tiny_config(cache, "teacher", data__setting="seq")
    run_training(cfg, root / "teacher", progress=False)
    return root, cache, cfg


def test_targets_cover_every_cell_of_every_item(setup):
    root, cache, cfg = setup
    store = TargetStore(root / "teacher" / TARGETS_FILE)
    grid = Grid.from_config(cfg.data)
    c = open_cache(cache)
    with h5py.File(root / "teacher" / TARGETS_FILE) as h5:
        n_rows = len(h5["enc"])
        assert h5["enc"].shape[1:] == (cfg.data.n_segments, cfg.model.emb_dim)
        assert h5["agg"].shape == (n_rows, cfg.model.agg_dim) and h5["logits"].shape == (n_rows, 3)
    assert n_rows == sum(grid.n_cells(int(n)) for n in c.index["n_fbank"])
    for utt, n in zip(c.index["utt_id"], c.index["n_fbank"]):
        last = grid.n_cells(int(n)) - 1
        assert np.isfinite(store.lookup(utt, last)["enc"]).all()
        with pytest.raises(TargetMismatchError, match="grid cells"):
            store.lookup(utt, last + 1)


def test_student_refuses_targets_of_another_grid(setup, tmp_path):
    root, cache, _ = setup
    cfg = tiny_config(
        cache,
        "student",
        data__setting="seq",
        data__seg_hop=10,
        distill__method="embed",
        distill__teacher=str(root / "teacher"),
    )
    with pytest.raises(TargetMismatchError, match="seg_hop: teacher 15 vs student 10"):
        Trainer(cfg, tmp_path / "s", progress=False)


def test_student_refuses_targets_of_another_cache(setup, tmp_path):
    root, _, _ = setup
    # same extraction settings (so the same config hash), other items: still another cache
    other = make_lupi_cache(tmp_path / "other", n_classes=3, per_class=8, n_frames=70, seed=5)
    assert open_cache(other).cache_id == open_cache(root / "cache").cache_id
    cfg = tiny_config(
        other, "student", data__setting="seq", distill__method="softlabel", distill__teacher=str(root / "teacher")
    )
    with pytest.raises(TargetMismatchError, match="computed on cache .* this run uses cache"):
        Trainer(cfg, tmp_path / "s", progress=False)


def test_student_refuses_targets_of_a_retrained_teacher(setup, tmp_path):
    root, cache, _ = setup
    teacher = tmp_path / "teacher"
    shutil.copytree(root / "teacher", teacher)
    state = torch.load(teacher / RunDir.BEST, weights_only=True)
    state["model"] = {k: v + 1e-3 if v.dtype.is_floating_point else v for k, v in state["model"].items()}
    torch.save(state, teacher / RunDir.BEST)  # what retraining without refreshing targets.h5 would leave
    cfg = tiny_config(cache, "student", data__setting="seq", distill__method="embed", distill__teacher=str(teacher))
    with pytest.raises(TargetMismatchError, match="another teacher checkpoint"):
        Trainer(cfg, tmp_path / "s", progress=False)


def test_student_refuses_a_teacher_without_targets(setup, tmp_path):
    root, cache, _ = setup
    teacher = tmp_path / "teacher"
    shutil.copytree(root / "teacher", teacher)
    (teacher / TARGETS_FILE).unlink()
    cfg = tiny_config(cache, "student", data__setting="seq", distill__method="gkd", distill__teacher=str(teacher))
    with pytest.raises(TargetMismatchError, match="finished `distill teacher` run"):
        Trainer(cfg, tmp_path / "s", progress=False)


def test_matching_targets_open(setup):
    root, cache, cfg = setup
    data = RunData.load(cfg, open_cache(cache))
    store = open_targets(root / "teacher", cache_identity(data.cache), data.grid, data.labels.names)
    assert set(store.fields) == {"enc", "agg", "logits", "audio"}
    assert store.shapes["audio"] == store.shapes["enc"]  # the audio branch per segment, as wide as the fused one


def test_student_asking_for_audio_branch_targets_refuses_a_file_without_them(setup, tmp_path):
    """A targets file made before audio-branch targets were stored holds only the fused ones:
    ``distill.target: audio`` is refused (never silently given the fused embedding), ``fused`` reads it."""
    root, cache, _ = setup
    teacher = tmp_path / "teacher"
    shutil.copytree(root / "teacher", teacher)
    with h5py.File(teacher / TARGETS_FILE, "a") as h5:
        del h5["audio"]
    cfg = tiny_config(cache, "student", data__setting="seq", distill__method="embed", distill__teacher=str(teacher))
    Trainer(cfg, tmp_path / "fused", progress=False)
    cfg = tiny_config(
        cache,
        "student",
        data__setting="seq",
        distill__method="embed",
        distill__target="audio",
        distill__teacher=str(teacher),
    )
    with pytest.raises(TargetMismatchError, match="no audio-branch targets"):
        Trainer(cfg, tmp_path / "audio", progress=False)


# --- leakage guard: a student never holds out what the teacher trained on --------------------


def test_teacher_records_its_training_set(setup):
    root, cache, cfg = setup
    data = RunData.load(cfg, open_cache(cache))
    assert (root / "teacher" / TRAIN_IDS).read_text().splitlines() == sorted(data.utt_ids("train"))


def test_student_refuses_a_teacher_trained_on_its_heldout_items(setup, tmp_path):
    root, cache, _ = setup
    # No such column: the student falls back to a seeded speaker-id split, whose val/test items
    # include some the teacher trained on under the cache's own split.
    cfg = tiny_config(
        cache,
        "student",
        data__setting="seq",
        data__split_column="nosuch",
        distill__method="embed",
        distill__teacher=str(root / "teacher"),
    )
    with pytest.raises(
        TargetMismatchError,
        match=r"\d+ of this run's val/test items were in the teacher's "
        r"training set \(e\.g\. 'c\d+_u\d+'\)",
    ):
        Trainer(cfg, tmp_path / "s", progress=False)


@pytest.mark.filterwarnings("ignore:.*no verification")  # its tiny test split has no target trial, by design
def test_student_on_the_teachers_split_is_accepted_and_another_split_seed_refused(tmp_path):
    cache = make_lupi_cache(tmp_path / "cache", n_classes=3, per_class=8, n_frames=40, with_split=False)
    teacher = tmp_path / "teacher"
    run_training(tiny_config(cache, "teacher", train__epochs=1, data__split_seed=3), teacher, progress=False)

    def student(seed: int) -> Trainer:
        cfg = tiny_config(
            cache, "student", distill__method="softlabel", distill__teacher=str(teacher), data__split_seed=seed
        )
        return Trainer(cfg, tmp_path / f"s{seed}", progress=False)

    assert student(3).teacher is not None
    with pytest.raises(TargetMismatchError, match="val/test items were in the teacher's training set"):
        student(4)


def test_student_refuses_an_edited_or_missing_training_record(setup, tmp_path):
    root, cache, _ = setup
    teacher = tmp_path / "teacher"
    shutil.copytree(root / "teacher", teacher)
    cfg = tiny_config(cache, "student", data__setting="seq", distill__method="embed", distill__teacher=str(teacher))
    ids = (teacher / TRAIN_IDS).read_text().split()
    (teacher / TRAIN_IDS).write_text("".join(f"{u}\n" for u in ids[1:]))
    with pytest.raises(TargetMismatchError, match="not the training set its targets.h5 was made with"):
        Trainer(cfg, tmp_path / "s", progress=False)
    (teacher / TRAIN_IDS).unlink()
    with pytest.raises(TargetMismatchError, match="records no training set"):
        Trainer(cfg, tmp_path / "s", progress=False)
