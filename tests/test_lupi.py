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
no gain for `embed` with fixed offsets). Two choices follow the method rather than a search:
the teacher's visual branch is wider than its audio branch (visual_dim 64 vs emb 16), so its
embedding is mostly a function of the face, which is what makes it privileged (with visual_dim 32,
ridge regression from audio to its targets classified test items no better than from labels);
and the `embed` student uses ``encoder_grad=distill-only``, the paper's reading (the encoder learns
from the teacher's embeddings, the header from labels), so labels cannot pull the encoder towards
nuisance shortcuts.

Measured (student seeds 0-5, test split; `none` vs `embed`):
accuracy 0.650/0.892, 0.800/0.825, 0.825/0.833, 0.792/0.783, 0.725/0.792, 0.792/0.883 (mean gain
+0.07, seed-dependent: a >= 0.10 gain on every seed does not hold); EER 0.275/0.119, 0.184/0.142,
0.143/0.117, 0.155/0.146, 0.176/0.151, 0.168/0.117 (lower on every seed, mean -0.05). With the
default ``joint`` the gains are smaller (accuracy +0.04, EER -0.02, still lower on every seed).
So the asserted margins are: EER lower on every seed and by >= 0.03 on average, accuracy higher
by >= 0.03 on average; the teacher with video far above itself without.
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
#: The two students differ only in their loss; `embed` as the paper reads (see the docstring).
STUDENTS = {"none": {}, "embed": {"distill__encoder_grad": "distill-only"}}
EER_MARGIN = 0.03  # measured -0.05 on average (seeds 0-5)
ACC_MARGIN = 0.03  # measured +0.07 on average, from -0.01 to +0.24 per seed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Test metrics of one teacher and of `none` / `embed` students per seed, all on one cache."""
    root = tmp_path_factory.mktemp("lupi")
    cache = make_lupi_cache(root / "cache", LupiDesign(), seed=0)
    teacher_dir = root / "teacher"
    out = {"teacher": run_training(tiny_config(cache, "teacher", model__visual_dim=64, **SCHEDULE), teacher_dir,
                                   progress=False)}
    for method, options in STUDENTS.items():
        out[method] = [
            run_training(tiny_config(cache, "student", distill__method=method, distill__teacher=str(teacher_dir),
                                     train__seed=seed, **options, **SCHEDULE), root / f"{method}-{seed}", progress=False)
            for seed in SEEDS]
    return out


def test_the_teacher_needs_its_video(runs):
    """The privileged channel carries the label: without faces the same teacher falls far behind."""
    teacher = runs["teacher"]
    assert teacher["accuracy"] >= 0.85, teacher
    assert teacher["accuracy"] - teacher["video_missing"]["accuracy"] >= 0.3, teacher
    best_student = max(m["accuracy"] for method in ("none", "embed") for m in runs[method])
    assert teacher["accuracy"] > best_student


def test_embed_student_beats_audio_only(runs):
    """The teacher's embeddings carry the face's information into an audio-only student."""
    none, embed = runs["none"], runs["embed"]
    eer_gain = np.array([n["eer"] - e["eer"] for n, e in zip(none, embed)])
    acc_gain = np.array([e["accuracy"] - n["accuracy"] for n, e in zip(none, embed)])
    report = f"EER gain per seed {eer_gain.round(3)}, accuracy gain {acc_gain.round(3)}"
    assert (eer_gain > 0).all() and eer_gain.mean() >= EER_MARGIN, report
    assert acc_gain.mean() >= ACC_MARGIN, report
