"""LUPI sanity: the faces carry the label cleanly, the audio weakly; does `embed` beat `none`?

The corpus (distill/testing/lupi.py): 6 classes, 8 labelled training items each of which 30% carry a
wrong label, clean val/test splits (10 and 20 per class). The audio holds the latent ``z`` the
class comes from, through a fixed random map under unit frame noise and a 12-dimensional drifting
nuisance 3x louder than the signal; the faces show ``z`` almost noise-free. Each draw is a fresh
corpus (data seed) with its own teachers: a property of the method must hold on every draw, not
on one lucky corpus.

The runs are the method as the paper states it: the student's encoder learns from the teacher's
embeddings and its header from the labels (``encoder_grad: distill-only``). The teacher adds
``face_recon: 10``: its embedding must also reconstruct the mean face of its crop. A teacher trained
on labels alone collapses each class to a point (neural collapse) and, on noisy labels, fits the
wrong ones through the faces too; its targets then tell a student little more than the labels do.

Measured (test accuracy, none -> embed, student seed 0, six draws; nonseq unless said):
  face_recon 10 (asserted on draws 0-2): 0.55->0.72, 0.64->0.90, 0.53->0.84, 0.92->0.99,
    0.57->0.78, 0.67->0.94; mean gain +0.22, smallest +0.075 (draw 3, where `none` is at 0.92).
  seq (asserted on draws 0-2, both levels distilled): +0.31, +0.38, +0.14 (`joint`: +0.20 mean).
  face_recon 3: mean gain +0.19 (+0.01 on draw 3).  Cross-entropy-only teacher: +0.08 (+0.025 to +0.175).
  Same face_recon-10 teacher, draws 0-2: embed with ``encoder_grad: joint`` (the toolkit's default)
    +0.09 mean, softlabel +0.07, gkd +0.07: the noisy labels reach the encoder in all three.
Without label noise the margin does not appear: with 8 clean items a class `none` already reaches
0.88-0.94 and `embed` moves it by -0.07 to +0.03; with 4 clean items a class the gain follows the
draw (+0.14, -0.10, +0.09 with face_recon; the CE-only teacher's class geometry beats one-hot
labels on some draws and not on others). docs/method.md records those measurements and the ~20
variants tried on the clean-label design, with the linear probe (distill/probe.py) behind them.
"""

from __future__ import annotations

import numpy as np
import pytest

from distill.eval.probe import probe
from distill.testing import tiny_config
from distill.testing.lupi import SCHEDULE, TEACHER, LupiDesign, make_lupi_cache
from distill.train.trainer import run_training

pytestmark = pytest.mark.slow

DRAWS = (0, 1, 2)  # data seeds: corpus, mixing and teachers differ per draw
FACE_RECON = 10.0
MARGIN = 0.10
#: Input normalisation off, as when these margins were measured. With the defaults (log-mels and
#: faces normalised with training statistics) on draws 0-2: teacher 0.98 / 0.99 / 0.97, `none` ->
#: `embed` 0.53->0.77, 0.58->0.79, 0.56->0.91 (EER 0.31->0.11, 0.28->0.11, 0.27->0.05), so the
#: embed margin holds and grows; but the probe margin of `face_recon` over a cross-entropy teacher
#: shrinks to +0.16 / +0.03 / +0.35 (draw 1 below the asserted +0.05). That spread is the teacher's seed, not
#: normalisation (seed 1: +0.19 / +0.21 / +0.04): docs/method.md has the numbers and why the inputs stay raw here.
RAW_INPUTS = {"model__fbank_norm": "none", "model__face_norm": "none"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per draw: test metrics of the face_recon teacher, of a `none` and an `embed` student distilled
    from it, and the linear probes of its targets and of a cross-entropy-only teacher's."""
    out = {}
    for draw in DRAWS:
        root = tmp_path_factory.mktemp(f"lupi{draw}")
        cache = make_lupi_cache(root / "cache", LupiDesign(), seed=draw)
        metrics = {}
        for name, recon in (("ce_teacher", 0.0), ("teacher", FACE_RECON)):
            metrics[name] = run_training(
                tiny_config(cache, "teacher", distill__face_recon=recon, **TEACHER, **RAW_INPUTS),
                root / name,
                progress=False,
            )
            metrics[f"{name}_probe"] = probe(cache, root / name)
        for method in ("none", "embed"):
            cfg = tiny_config(
                cache,
                "student",
                distill__method=method,
                distill__encoder_grad="distill-only",
                distill__teacher=str(root / "teacher"),
                **SCHEDULE,
                **RAW_INPUTS,
            )
            metrics[method] = run_training(cfg, root / method, progress=False)
        out[draw] = metrics
    return out


@pytest.mark.parametrize("draw", DRAWS)
def test_the_teacher_needs_its_video(runs, draw):
    """The privileged channel carries the label: without faces the same teacher falls far behind."""
    teacher = runs[draw]["teacher"]
    assert teacher["accuracy"] >= 0.8, teacher
    assert teacher["accuracy"] - teacher["video_missing"]["accuracy"] >= 0.4, teacher


@pytest.mark.parametrize("draw", DRAWS)
def test_what_the_faces_hold_is_learnable_from_the_audio(runs, draw):
    """The premise: regressing the faces from the audio classifies better than regressing the
    (noisy) labels, so a teacher that passes the faces on teaches more than the labels do."""
    found = runs[draw]["teacher_probe"]
    assert found["probe_faces"] > found["probe_onehot"] + 0.1, found


@pytest.mark.parametrize("draw", DRAWS)
def test_face_recon_keeps_the_faces_in_the_targets(runs, draw):
    """What `face_recon` is for: the teacher's targets, regressed from the audio, classify better
    than one-hot labels and than a cross-entropy-only teacher's targets (measured: 0.89 vs 0.59-0.78)."""
    recon, ce = runs[draw]["teacher_probe"], runs[draw]["ce_teacher_probe"]
    assert recon["probe_fused"] > recon["probe_onehot"] + 0.1, recon
    assert recon["probe_fused"] > ce["probe_fused"] + 0.05, (recon, ce)


@pytest.fixture(scope="module")
def seq_runs(tmp_path_factory):
    """The sequential setting on the same corpora: segments -> encoder -> aggregator -> header, with
    `embed` distilling both levels (per-segment encoder embeddings and the aggregated one)."""
    out = {}
    for draw in DRAWS:
        root = tmp_path_factory.mktemp(f"lupi-seq{draw}")
        cache = make_lupi_cache(root / "cache", LupiDesign(), seed=draw)
        run_training(
            tiny_config(cache, "teacher", data__setting="seq", distill__face_recon=FACE_RECON, **TEACHER, **RAW_INPUTS),
            root / "teacher",
            progress=False,
        )
        out[draw] = {
            method: run_training(
                tiny_config(
                    cache,
                    "student",
                    data__setting="seq",
                    distill__method=method,
                    distill__encoder_grad="distill-only",
                    distill__teacher=str(root / "teacher"),
                    **SCHEDULE,
                    **RAW_INPUTS,
                ),
                root / method,
                progress=False,
            )
            for method in ("none", "embed")
        }
    return out


def assert_clear_margin(runs):
    gain = np.array([runs[d]["embed"]["accuracy"] - runs[d]["none"]["accuracy"] for d in DRAWS])
    assert gain.mean() >= MARGIN and (gain > 0).all(), f"accuracy gain per draw {gain.round(3)}"
    # its embeddings verify better too (EER over all test pairs)
    eer = np.array([runs[d]["embed"]["eer"] - runs[d]["none"]["eer"] for d in DRAWS])
    assert (eer < 0).all(), f"EER change per draw {eer.round(3)}"


def test_embed_beats_audio_only_by_a_clear_margin(runs):
    """Measured: accuracy 0.55->0.72, 0.64->0.90, 0.53->0.84; EER 0.28->0.13, 0.26->0.10, 0.29->0.07."""
    assert_clear_margin(runs)


def test_embed_beats_audio_only_by_a_clear_margin_in_the_sequential_setting(seq_runs):
    """Measured: accuracy 0.53->0.84, 0.54->0.93, 0.63->0.78; EER 0.30->0.10, 0.30->0.09, 0.23->0.07."""
    assert_clear_margin(seq_runs)
