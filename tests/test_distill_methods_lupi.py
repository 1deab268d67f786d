"""LUPI sanity: the faces carry the label cleanly, the audio weakly; does `embed` beat `none`?

The corpus (distill/testing/lupi.py): 6 classes, 8 labelled training items each of which 30% carry a
wrong label, clean val/test splits (10 and 20 per class). The audio holds the latent ``z`` the
class comes from, through a fixed random map under unit frame noise and a 12-dimensional drifting
nuisance 3x louder than the signal; the faces show ``z`` almost noise-free. The test asserts on one
corpus draw (data seed 0, with its own teachers). That the same holds on other draws, not on one
lucky corpus only, is a study, not a test: experiments/lupi_compare.py runs it on any draws (its
docstring has the commands for draws 0-2, the draws this test once asserted on; docs/method.md the
figures).

The runs are the method as the paper states it: the student's encoder learns from the teacher's
embeddings and its header from the labels (``encoder_grad: distill-only``). The teacher adds
``face_recon: 10``: its embedding must also reconstruct the mean face of its crop. A teacher trained
on labels alone collapses each class to a point (neural collapse) and, on noisy labels, fits the
wrong ones through the faces too; its targets then tell a student little more than the labels do.

Measured (test accuracy, none -> embed, student seed 0, six draws; nonseq unless said):
  face_recon 10 (asserted on draw 0): 0.55->0.72, 0.64->0.90, 0.53->0.84, 0.92->0.99,
    0.57->0.78, 0.67->0.94; mean gain +0.22, smallest +0.075 (draw 3, where `none` is at 0.92).
  seq (asserted on draw 0, both levels distilled): +0.31, +0.38, +0.14 (`joint`: +0.20 mean).
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

import pytest

from distill.eval.probe import probe
from distill.testing import tiny_config
from distill.testing.lupi import SCHEDULE, TEACHER, LupiDesign, make_lupi_cache
from distill.train.trainer import run_training

pytestmark = pytest.mark.slow

DRAW = 0  # data seed: corpus, mixing and teachers (experiments/lupi_compare.py --draws runs others)
FACE_RECON = 10.0
MARGIN = 0.10
#: Input normalisation off, as when these margins were measured. With the defaults (log-mels and
#: faces normalised with training statistics) on draws 0-2: teacher 0.98 / 0.99 / 0.97, `none` ->
#: `embed` 0.53->0.77, 0.58->0.79, 0.56->0.91 (EER 0.31->0.11, 0.28->0.11, 0.27->0.05), so the
#: embed margin holds and grows; but the probe margin of `face_recon` over a cross-entropy teacher
#: shrinks to +0.16 / +0.03 / +0.35 (draw 1 below the asserted +0.05). That spread is the teacher's seed, not
#: normalisation (seed 1: +0.19 / +0.21 / +0.04): docs/method.md has the numbers and why the inputs stay raw here.
RAW_INPUTS = {"model__fbank_norm": "none", "model__face_norm": "none"}


def student_config(cache, teacher, method: str, **overrides):
    """The paper's student: its encoder from the teacher's embeddings, its header from the labels."""
    return tiny_config(
        cache,
        "student",
        distill__method=method,
        distill__encoder_grad="distill-only",
        distill__teacher=str(teacher),
        **SCHEDULE,
        **RAW_INPUTS,
        **overrides,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus of draw :data:`DRAW`, for both settings."""
    return make_lupi_cache(tmp_path_factory.mktemp("lupi") / "cache", LupiDesign(), seed=DRAW)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """Test metrics of the face_recon teacher, of a `none` and an `embed` student distilled from it,
    and the linear probes of its targets and of a cross-entropy-only teacher's."""
    root = tmp_path_factory.mktemp("lupi-nonseq")
    metrics = {}
    for name, recon in (("ce_teacher", 0.0), ("teacher", FACE_RECON)):
        metrics[name] = run_training(
            tiny_config(corpus, "teacher", distill__face_recon=recon, **TEACHER, **RAW_INPUTS),
            root / name,
            progress=False,
        )
        metrics[f"{name}_probe"] = probe(corpus, root / name)
    for method in ("none", "embed"):
        metrics[method] = run_training(student_config(corpus, root / "teacher", method), root / method, progress=False)
    return metrics


def test_the_teacher_needs_its_video(runs):
    """The privileged channel carries the label: without faces the same teacher falls far behind."""
    teacher = runs["teacher"]
    assert teacher["accuracy"] >= 0.8, teacher
    assert teacher["accuracy"] - teacher["video_missing"]["accuracy"] >= 0.4, teacher


def test_what_the_faces_hold_is_learnable_from_the_audio(runs):
    """The premise: regressing the faces from the audio classifies better than regressing the
    (noisy) labels, so a teacher that passes the faces on teaches more than the labels do."""
    found = runs["teacher_probe"]
    assert found["probe_faces"] > found["probe_onehot"] + 0.1, found


def test_face_recon_keeps_the_faces_in_the_targets(runs):
    """What `face_recon` is for: the teacher's targets, regressed from the audio, classify better
    than one-hot labels and than a cross-entropy-only teacher's targets."""
    recon, ce = runs["teacher_probe"], runs["ce_teacher_probe"]
    assert recon["probe_fused"] > recon["probe_onehot"] + 0.1, recon
    assert recon["probe_fused"] > ce["probe_fused"] + 0.05, (recon, ce)


@pytest.fixture(scope="module")
def seq_runs(corpus, tmp_path_factory):
    """The sequential setting on the same corpus: segments -> encoder -> aggregator -> header, with
    `embed` distilling both levels (per-segment encoder embeddings and the aggregated one)."""
    root = tmp_path_factory.mktemp("lupi-seq")
    run_training(
        tiny_config(corpus, "teacher", data__setting="seq", distill__face_recon=FACE_RECON, **TEACHER, **RAW_INPUTS),
        root / "teacher",
        progress=False,
    )
    return {
        method: run_training(
            student_config(corpus, root / "teacher", method, data__setting="seq"), root / method, progress=False
        )
        for method in ("none", "embed")
    }


def assert_clear_margin(runs):
    gain = runs["embed"]["accuracy"] - runs["none"]["accuracy"]
    assert gain >= MARGIN, f"accuracy gain {gain:.3f}"
    # its embeddings verify better too (EER over all test pairs)
    eer = runs["embed"]["eer"] - runs["none"]["eer"]
    assert eer < 0, f"EER change {eer:.3f}"


def test_embed_beats_audio_only_by_a_clear_margin(runs):
    """Measured: accuracy 0.55->0.72; EER 0.28->0.13."""
    assert_clear_margin(runs)


def test_embed_beats_audio_only_by_a_clear_margin_in_the_sequential_setting(seq_runs):
    """Measured: accuracy 0.53->0.84; EER 0.30->0.10."""
    assert_clear_margin(seq_runs)
