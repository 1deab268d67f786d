"""LUPI sanity: on a data-starved corpus, does the privileged channel (faces) reach the audio-only student?

Design (tests/lupi_data.py; decided from the principle, then measured across seeds):
learning using privileged information pays when the audio-only problem is data-starved: the
audio carries the latent ``z`` the label depends on, but a few labelled items are too little
supervision to find which audio directions carry it among louder nuisance directions. The face
shows ``z`` cleanly, so a teacher reading it classifies well and its embedding varies with ``z``
(within class too), giving an `embed` student a dense regression target per item where `none`
has one label. Hence: 6 classes, 4 labelled training items each, ``z`` mixed into the log-mels by a
fixed random map under unit frame noise, a 12-dimensional nuisance 3x louder than the signal
(orthogonal to it, redrawn every 10 frames), clean faces, clean and larger val/test splits (10
and 20 per class) so that selection and the reported accuracy are not dominated by sampling noise.

The nuisance drifts because a fixed per-utterance offset lets both students memorise the
training items by their offsets, after which neither labels nor targets teach anything (measured:
no gain for `embed` with fixed offsets). The teacher gets a wider visual branch than the tiny
students (it must read 512-d faces from 24 items); the students are identical except for their loss.

What holds, and is asserted: the teacher needs its video (accuracy ~0.96 with it, ~0.43 without).
What does not hold yet, and is a strict xfail: `embed` beating `none` by >= 0.10 accuracy on average
and on every seed. Measured on this design (student seeds 0-5): +0.11, +0.07, +0.06, -0.03, +0.07,
+0.02, i.e. a real but small and seed-dependent gain (mean +0.05); cosine distance at weight 1 (the
defaults), weight 3 and mse did not do better. When a change to the method or the trainer makes
the margin appear, this test passes unexpectedly and fails on purpose: then drop the marker.
"""
from __future__ import annotations

import numpy as np
import pytest

from distill.train import run_training
from lupi_data import LupiDesign, make_lupi_cache
from synthetic import tiny_config

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
#: Enough optimiser steps for 24 training items (6 per epoch at batch 4); same for every run.
SCHEDULE = {"train__epochs": 30, "data__batch_size": 4, "train__lr": 0.005}
MARGIN = 0.10


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Test metrics of one teacher and of `none` / `embed` students per seed, all on one cache."""
    root = tmp_path_factory.mktemp("lupi")
    cache = make_lupi_cache(root / "cache", LupiDesign(), seed=0)
    teacher_dir = root / "teacher"
    out = {"teacher": run_training(tiny_config(cache, "teacher", model__visual_dim=32, **SCHEDULE), teacher_dir,
                                   progress=False)}
    for method in ("none", "embed"):
        out[method] = [
            run_training(tiny_config(cache, "student", distill__method=method, distill__teacher=str(teacher_dir),
                                     train__seed=seed, **SCHEDULE), root / f"{method}-{seed}", progress=False)
            for seed in SEEDS]
    return out


def test_the_teacher_needs_its_video(runs):
    """The privileged channel carries the label: without faces the same teacher falls far behind."""
    teacher = runs["teacher"]
    assert teacher["accuracy"] >= 0.85, teacher
    assert teacher["accuracy"] - teacher["video_missing"]["accuracy"] >= 0.3, teacher
    best_student = max(m["accuracy"] for method in ("none", "embed") for m in runs[method])
    assert teacher["accuracy"] > best_student


@pytest.mark.xfail(strict=True, reason="measured gain of embed over none is ~+0.05 and seed-dependent "
                                       "(see the module docstring); no design found yet with a clear margin")
def test_embed_beats_audio_only_by_a_clear_margin(runs):
    none = np.array([m["accuracy"] for m in runs["none"]])
    embed = np.array([m["accuracy"] for m in runs["embed"]])
    gain = embed - none
    assert gain.mean() >= MARGIN and (gain > 0).all(), f"per-seed gain {gain.round(3)}, none {none}, embed {embed}"
