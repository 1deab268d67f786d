"""What a speaker run's verification decides with, recorded at evaluation: the validation EER
threshold (``verification.json``) and the AS-norm cohort (``cohort.npy``).

Both come from the audio-only embeddings (a teacher with its video missing), because that is
the model ``distill verify`` and ``distill.serve.model.Model`` use. The cohort is one embedding per
training speaker, the mean of at most ``COHORT_PER_SPEAKER`` of its training utterances (the first
in cache order: deterministic, and one pass over at most that many items per speaker). The
thresholds are the EER points of every pair of the validation split, for raw cosine and for
AS-norm scores, so a decision on either score is taken where that score's errors balance.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from common.files import atomic_write_text
from distill.config import EvalConfig
from distill.data.dataset import GridDataset
from distill.eval.evaluate import build_trials, operating_point, verification_asnorm
from distill.eval.predict import Evaluator, Predictions
from distill.eval.scoring import DEFAULT_TOP_K, speaker_cohort
from distill.run import RunData, RunDir

COHORT_PER_SPEAKER = 10


def training_cohort(evaluator: Evaluator, data: RunData, video: bool = False) -> np.ndarray:
    """(speakers, D) unit mean embeddings of the run's training speakers (a teacher's with its faces
    when ``video``, as its test embeddings are scored; audio-only by default)."""
    ids = data.utt_ids("train")
    speakers = data.cache.index.loc[ids, data.config.label].astype(str)
    keep = speakers.groupby(speakers.to_numpy()).head(COHORT_PER_SPEAKER)
    faces = video and evaluator.net.role == "teacher"
    dataset = GridDataset(
        data.cache, list(keep.index), np.zeros(len(keep), np.int64), data.eval_grid, faces=faces, train=False
    )
    return speaker_cohort(evaluator.predict(dataset, video=faces).emb, keep.to_numpy())


class TrainingCohorts:
    """:func:`training_cohort` of each modality, each computed at most once: one evaluation's AS-norm
    test metrics and its verification threshold share the audio-only one (a pass over up to
    ``COHORT_PER_SPEAKER`` items per training speaker, which can outnumber the test items)."""

    def __init__(self, evaluator: Evaluator, data: RunData):
        self.evaluator, self.data = evaluator, data
        self._by_faces: dict[bool, np.ndarray] = {}

    def __call__(self, video: bool = False) -> np.ndarray:
        faces = video and self.evaluator.net.role == "teacher"  # a student's cohort is audio-only either way
        if faces not in self._by_faces:
            self._by_faces[faces] = training_cohort(self.evaluator, self.data, video=faces)
        return self._by_faces[faces]


def score_norm_metrics(
    cohorts: TrainingCohorts, scoring: EvalConfig, pred: Predictions, trials, video: bool = True
) -> dict:
    """``eval.score_norm`` (``scoring``) for metrics.json: nothing for ``none``; for ``asnorm`` the
    EER/minDCF of AS-norm scores (``eer_asnorm``, ``min_dcf_asnorm``) and a ``score_norm`` record of
    how (the cohort: one mean embedding per training speaker, as in cohort.npy, from the same model
    and modality as ``pred``)."""
    if scoring.score_norm == "none":
        return {}
    cohort = cohorts(video)
    out: dict = verification_asnorm(pred, trials, cohort, scoring.top_k, **cohorts.data.config.costs)
    out["score_norm"] = {
        "method": scoring.score_norm,
        "top_k": min(scoring.top_k, len(cohort)),
        "cohort_speakers": len(cohort),
        "cohort_per_speaker": COHORT_PER_SPEAKER,
    }
    return out


def write_verification(
    evaluator: Evaluator, data: RunData, run_dir: RunDir, cohorts: TrainingCohorts | None = None
) -> dict | None:
    """Write cohort.npy and verification.json into the run; None (with a warning) when the
    validation split has no target pair. ``cohorts``: the evaluation's, when it computed the cohort already."""
    try:
        trials = build_trials(data.cache.index, data.utt_ids("val"), data.config.label, None)
        cohort = (cohorts or TrainingCohorts(evaluator, data))()
        val = evaluator.predict(data.dataset("val", faces=False, train=False), video=False)
        point = operating_point(val, trials, cohort, DEFAULT_TOP_K)
    except ValueError as exc:  # e.g. one val utterance per speaker: no target trial
        warnings.warn(f"{run_dir}: no verification threshold ({exc})", stacklevel=2)
        return None
    np.save(run_dir.cohort, cohort)
    point = {**point, "split": "val"}
    atomic_write_text(run_dir.verification, json.dumps(point, indent=2) + "\n")
    return point
