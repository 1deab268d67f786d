"""configs/paper: one sweep per task x setting with the abstract's method, its baselines and the control.

These files use data.seq_span / data.max_segments / data.eval_span (the whole-utterance settings):
on a branch without them, loading fails on exactly those keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.models import build_network
from distill.sweep import SweepSpec

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
FILES = sorted(PAPER.glob("*.yaml"))


def test_one_paper_config_per_task_and_setting():
    assert [p.stem for p in FILES] == ["emotion-nonseq", "emotion-seq", "speaker-nonseq", "speaker-seq"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_paper_config_is_the_abstracts_method_with_its_baselines(path, tmp_path):
    spec = SweepSpec.load(path, cache=str(tmp_path / "cache"))
    assert spec.combos == [tuple(path.stem.split("-"))]
    task, setting = spec.combos[0]
    methods = {v.name: v.method for v in spec.variants}
    assert methods == {"none": "none", "softlabel": "softlabel", "embed": "embed"}
    assert spec.controls == ["audio_teacher"] and len(spec.seeds) >= 3  # paired tests need seeds
    fold = 0 if spec.folds else None
    if task == "emotion":  # IEMOCAP leave-one-session-out, the session column of the iemocap recipe
        assert (spec.folds.column, spec.folds.k) == ("session", 0)
    teacher = spec.teacher_config(task, setting, fold=fold)
    control = spec.teacher_config(task, setting, "audio_teacher", fold=fold)
    assert control.model.face_dropout == 1.0 and teacher.model.face_dropout == 0.0
    assert teacher.distill.face_recon == 0.0  # the paper's teacher: cross-entropy on labels only
    students = {
        v.name: spec.student_config(task, setting, v, spec.seeds[0], tmp_path / "t", fold=fold) for v in spec.variants
    }
    embed = students["embed"]
    # the abstract: the encoder learns from the teacher's encoder embeddings (and, in seq, the aggregator's
    # from the teacher's aggregated ones); the task header from the ground-truth labels
    assert embed.distill.weight_enc > 0 and embed.distill.task_weight > 0 and embed.distill.encoder_grad == "joint"
    assert embed.distill.weight_agg > 0 if setting == "seq" else True
    for student in students.values():  # the data and model sections are the teacher's: same split, grid, sizes
        assert student.data == teacher.data and student.model == teacher.model
    if setting == "seq":
        assert teacher.data.seq_span == "utterance" and teacher.model.aggregator
    else:
        assert teacher.data.eval_span == "utterance"
    assert teacher.model.audio_channels >= 512 and teacher.model.emb_dim >= 96  # recipe size, not the CPU demo's
    for role, cfg in (("teacher", teacher), ("student", embed)):  # the sizes assemble into networks
        net = build_network(cfg.model, role=role, setting=setting, n_mels=80, n_classes=4)
        assert sum(p.numel() for p in net.parameters()) > 1_000_000
