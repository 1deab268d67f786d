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
no gain for `embed` with fixed offsets). The teacher's visual branch is wider than its audio branch
(visual_dim 64 vs emb 16), so its embedding is mostly a function of the face, which is what makes
it privileged (with visual_dim 32, ridge regression from audio to its targets classified test
items no better than from labels). Each draw is a fresh corpus (data seed) with its own teacher:
a property of the design must hold on every draw, not on one lucky corpus.

What holds, and is asserted: on every draw the teacher needs its video (test accuracy 0.97 / 0.94 /
0.97 with it, 0.35 / 0.28 / 0.34 without).

What does not hold, and is a strict xfail: `embed` beating `none` by >= 0.10 accuracy on average and
on every draw. Measured, test accuracy none -> embed (student seed 0; seeds 0-2 in brackets):
  draw 0: 0.65 -> 0.81 [mean gain +0.06; EER lower on all seeds 0-5]
  draw 1: 0.88 -> 0.81 [mean gain -0.02]
  draw 2: 0.78 -> 0.89 [mean gain +0.04]
``encoder_grad=distill-only`` (the paper's strict reading) did better on draw 0 (+0.09, EER lower on
all six seeds) and far worse on draw 1 (-0.28): the gain is a property of the draw, not of the
design, so no margin is asserted.

Why (measured with tests/lupi_probe.py, a linear probe: ridge from a crop's mean log-mel to a target, fitted on the
train crops, test items classified by the nearest train-class mean of the predicted target): the
teacher, trained with cross-entropy on 24 items, collapses within-class variation (within-class
share of variance 0.03-0.05, against 0.11 for the face latent), so its embedding is a class code
whose geometry is sometimes better than one-hot labels and sometimes worse (probe accuracy with
teacher embeddings vs labels: 0.92/0.91, 0.72/0.92, 0.88/0.79 on draws 0/1/2); the face latent
itself would do 0.98-1.00 on every draw. `embed` wins exactly where the probe says the teacher's
geometry beats one-hot. The teacher's visual-branch embedding probes better than its fused one
(0.94, 0.84, 0.94). Distilling it (an experiment, not an option yet: targets.h5's ``enc`` rewritten
with the visual branch's 64-d output, the student's projection widening to it) gave +0.18 / -0.01 /
+0.14 with mse (mean +0.11) and +0.10 / -0.01 / +0.02 with cosine, but over five corpora x two
student seeds the lead shrank to noise: mean gain +0.055 (visual, mse) against +0.038 for the
default (fused, cosine) and +0.041 (fused, mse); on corpora 3 and 4 `none` already reaches 0.93,
the teacher's level. With equidistant class centres (a rotated simplex: no class is nearer to
another, so the teacher's class geometry has nothing to pass on) `embed` gained nothing (-0.01 and
-0.02 over four corpora at two separations): what the collapsed teacher teaches here is which
classes resemble each other, not where an item lies within its class.
Designs tried that missed the margin (mean gain over three corpora, student seed 0, each
against its own `none` on the same corpora): wider within-class spread (+0.02); 24
classes (+0.04); labels = nearest centre (+0.01); a per-class training session offset in the
audio (-0.04 to +0.06, the teacher's audio branch takes the shortcut too); teacher width 64 (-0.01);
fewer teacher epochs (+0.03); 8 items a class with weaker audio (+0.07, positive on all three; -0.08 with 12 items a
class); a heavily regularised teacher (+0.04, positive on all three); an AAM teacher
header (+0.04; -0.08 on draw 1); 3x longer student training (+0.02); 4x larger val/test splits
with 60 epochs for every run (+0.03 over five corpora; `none` at 0.95-0.99 on two of them).

The teacher is not the only limit. An experimental teacher with an extra loss reconstructing the
mean face embedding from its fused embedding (weight 10) gave targets that probe at 0.95 / 1.00 /
0.98, above one-hot labels on every draw (0.91 / 0.92 / 0.79), yet `embed` gained only +0.07 /
+0.04 / +0.01: the student (tiny ECAPA, 180 steps) does not reach what a linear map from its
input to those targets reaches, and its cosine distance to the targets ends near 0.2-0.3.

When a change to the method or the trainer makes the margin appear, this xfail passes
unexpectedly and fails on purpose: then drop the marker.
"""
from __future__ import annotations

import numpy as np
import pytest

from distill.train import run_training
from lupi_data import LupiDesign, make_lupi_cache
from lupi_probe import probe
from synthetic import tiny_config

pytestmark = pytest.mark.slow

DRAWS = (0, 1, 2)  # data seeds: corpus, mixing and teacher differ per draw
#: Enough optimiser steps for 24 training items (6 per epoch at batch 4); same for every run.
SCHEDULE = {"train__epochs": 30, "data__batch_size": 4, "train__lr": 0.005}
MARGIN = 0.10


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per draw: test metrics of its teacher and of a `none` and an `embed` student (defaults otherwise),
    and the linear probe of the teacher's targets."""
    out = {}
    for draw in DRAWS:
        root = tmp_path_factory.mktemp(f"lupi{draw}")
        cache = make_lupi_cache(root / "cache", LupiDesign(), seed=draw)
        teacher_dir = root / "teacher"
        metrics = {"teacher": run_training(tiny_config(cache, "teacher", model__visual_dim=64, **SCHEDULE),
                                           teacher_dir, progress=False),
                   "probe": probe(cache, teacher_dir)}
        for method in ("none", "embed"):
            cfg = tiny_config(cache, "student", distill__method=method, distill__teacher=str(teacher_dir), **SCHEDULE)
            metrics[method] = run_training(cfg, root / method, progress=False)
        out[draw] = metrics
    return out


@pytest.mark.parametrize("draw", DRAWS)
def test_the_teacher_needs_its_video(runs, draw):
    """The privileged channel carries the label: without faces the same teacher falls far behind."""
    teacher = runs[draw]["teacher"]
    assert teacher["accuracy"] >= 0.85, teacher
    assert teacher["accuracy"] - teacher["video_missing"]["accuracy"] >= 0.4, teacher
    assert teacher["accuracy"] > max(runs[draw]["none"]["accuracy"], runs[draw]["embed"]["accuracy"])


@pytest.mark.parametrize("draw", DRAWS)
def test_what_the_faces_hold_is_learnable_from_the_audio(runs, draw):
    """The design's premise: regressing the faces from the audio classifies better than regressing
    the labels, so a teacher that passed the faces on whole would teach more than labels do."""
    found = runs[draw]["probe"]
    assert found["probe_faces"] >= 0.95 and found["probe_faces"] > found["probe_onehot"] + 0.05, found


@pytest.mark.xfail(strict=True, reason="embed's gain over none depends on the corpus draw (module docstring)")
def test_embed_beats_audio_only_by_a_clear_margin(runs):
    gain = np.array([runs[d]["embed"]["accuracy"] - runs[d]["none"]["accuracy"] for d in DRAWS])
    assert gain.mean() >= MARGIN and (gain > 0).all(), f"accuracy gain per draw {gain.round(3)}"
