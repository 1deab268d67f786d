"""Run configs: a student's config derived from its teacher's by one rule; validation of options."""
from __future__ import annotations

import pytest

from distill.config import ConfigError, load_config
from distill.run import student_config


def test_student_config_carries_the_teachers_data_and_model_over_shared_settings():
    shared = {"data": {"crop": 100, "batch_size": 4}, "train": {"epochs": 3}, "model": {"emb_dim": 32}}
    # What a sweep's `teacher:` section or a teacher's --set does: data/model differ from the shared base.
    teacher = load_config(base=shared, overrides={"role": "teacher", "cache": "c", "data.split_seed": 7,
                                                  "data.crop": 60, "model.emb_dim": 16, "train.epochs": 9})
    assert shared["train"] == {"epochs": 3}  # overrides never write into the caller's base
    student = student_config(teacher, "embed", {"data.batch_size": 8}, shared=shared)
    assert (student.data.split_seed, student.data.crop, student.model.emb_dim) == (7, 60, 16)  # the teacher's
    assert student.train.epochs == 3 and student.cache == "c"  # shared, not the teacher's own training
    assert student.data.batch_size == 8  # a student's own override comes last
    with pytest.raises(ConfigError, match="must be a teacher run"):
        student_config(student, "embed")


@pytest.mark.parametrize("override, message", [
    ({"train.select": "f1"}, "train.select='f1' is not one of"),
    ({"data.p_target": 0.0}, "data.p_target must lie in"), ({"data.c_fa": -1.0}, "data.c_fa be > 0"),
])
def test_invalid_selection_and_costs_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=override)
