"""Run configs: a student's config derived from its teacher's by one rule; validation of options."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import ConfigError, RunConfig, defaults_yaml, load_config, option_choices
from distill.run import student_config


def test_student_config_carries_the_teachers_data_and_model_over_shared_settings():
    shared = {"data": {"crop": 100, "batch_size": 4}, "train": {"epochs": 3}, "model": {"emb_dim": 32}}
    # What a sweep's `teacher:` section or a teacher's --set does: data/model differ from the shared base.
    teacher = load_config(
        base=shared,
        overrides={
            "role": "teacher",
            "cache": "c",
            "data.split_seed": 7,
            "data.crop": 60,
            "model.emb_dim": 16,
            "train.epochs": 9,
            "eval.score_norm": "asnorm",
            "augment.time_masks": 2,
        },
    )
    assert shared["train"] == {"epochs": 3}  # overrides never write into the caller's base
    student = student_config(teacher, "embed", {"data.batch_size": 8}, shared=shared)
    assert (student.data.split_seed, student.data.crop, student.model.emb_dim) == (7, 60, 16)  # the teacher's
    assert student.train.epochs == 3 and student.cache == "c"  # shared, not the teacher's own training
    assert student.eval.score_norm == "asnorm"  # scored like its teacher, so their metrics compare
    assert student.augment.time_masks == 0  # augmentation is each run's own training choice
    assert student.data.batch_size == 8  # a student's own override comes last
    with pytest.raises(ConfigError, match="must be a teacher run"):
        student_config(student, "embed")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train.select": "f1"}, "train.select='f1' is not one of"),
        ({"data.p_target": 0.0}, "data.p_target must lie in"),
        ({"data.c_fa": -1.0}, "data.c_fa be > 0"),
        ({"distill.target": "visual"}, "distill.target='visual' is not one of fused, audio"),
        ({"distill.audio_aux": -1.0}, "distill.audio_aux must be >= 0"),
        ({"data.n_folds": 2}, "data.n_folds must be 0"),
        ({"data.n_folds": 5, "data.fold": 5}, "fold lie in"),
        ({"eval.score_norm": "snorm"}, "eval.score_norm='snorm' is not one of none, asnorm"),
        ({"eval.top_k": 0}, "eval.top_k must be >= 1"),
        ({"train.min_steps": -1}, "train.min_steps must be >= 0"),
        ({"train.patience": -2}, "train.patience must be >= 0"),
        ({"augment.p_noise": 2}, "augment.p_noise must lie in"),
        ({"augment.snr": [5]}, "augment.snr must be"),
        ({"augment.time_masks": -1}, "augment.time_masks must be >= 0"),
    ],
)
def test_invalid_selection_and_costs_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=override)


def test_configs_base_yaml_is_the_defaults_written_out():
    base = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
    assert base.read_text() == defaults_yaml(), "regenerate: python -m distill.config > configs/base.yaml"
    assert load_config(base).to_dict() == RunConfig().validate().to_dict()


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.setting=sequential", r"data.setting='sequential' is not one of nonseq, seq"),
        ("train.amp=always", r"train.amp='always' is not one of auto, on, off"),
        ("model.face_norm=zca", r"model.face_norm='zca' is not one of none, standardize, whiten"),
        ("model.aggregator=lstm", r"model.aggregator='lstm' is not one of attention, bilstm, transformer"),
        ("distill.distance=l3", r"distill.distance='l3' is not one of cosine, l1, mse, smooth_l1"),
        ("model.embdim=8", r"unknown key\(s\) model.embdim"),
    ],
)
def test_closed_options_and_model_names_are_checked_when_the_config_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])
    assert load_config(overrides=["train.amp=off"]).train.amp == "off"  # not YAML's boolean False


def test_the_cli_offers_the_choices_the_config_accepts():
    from distill.cli import build_parser
    from distill.models import AGGREGATORS

    assert option_choices("data.setting") == ("nonseq", "seq")
    assert option_choices("model.aggregator") == tuple(AGGREGATORS.names())
    student = build_parser()._subparsers._group_actions[0].choices["student"]
    offered = {a.dest: tuple(a.choices) for a in student._actions if a.choices}
    assert offered["method"] == option_choices("distill.method")
    assert offered["distance"] == option_choices("distill.distance")
    assert offered["encoder_grad"] == option_choices("distill.encoder_grad")
    with pytest.raises(KeyError):
        option_choices("train.epochs")
