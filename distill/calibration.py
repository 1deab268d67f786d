"""What a speaker run's verification decides with, recorded at evaluation: the validation EER
threshold (``verification.json``) and the AS-norm cohort (``cohort.npy``).

Both come from the audio-only embeddings (a teacher with its video missing), because that is
the model ``distill verify`` and ``distill.inference.Model`` use. The cohort is one embedding per
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
from distill.data import GridDataset
from distill.evaluate import VERIFICATION, build_trials, operating_point
from distill.inference import COHORT
from distill.scoring import DEFAULT_TOP_K, speaker_cohort

COHORT_PER_SPEAKER = 10


def training_cohort(trainer) -> np.ndarray:
    """(speakers, D) unit mean embeddings of the run's training speakers."""
    ids = trainer.data.utt_ids("train")
    speakers = trainer.cache.index.loc[ids, trainer.cfg.data.label].astype(str)
    keep = speakers.groupby(speakers.to_numpy()).head(COHORT_PER_SPEAKER)
    dataset = GridDataset(trainer.cache, list(keep.index), np.zeros(len(keep), np.int64), trainer.data.eval_grid,
                          faces=False, train=False)
    return speaker_cohort(trainer.predict(dataset, video=False).emb, keep.to_numpy())


def write_verification(trainer) -> dict | None:
    """Write cohort.npy and verification.json into the run; None (with a warning) when the
    validation split has no target pair."""
    cfg, out = trainer.cfg, trainer.out
    try:
        trials = build_trials(trainer.cache.index, trainer.data.utt_ids("val"), cfg.data.label, None)
        cohort = training_cohort(trainer)
        val = trainer.predict(trainer.data.dataset("val", faces=False, train=False), video=False)
        point = operating_point(val, trials, cohort, DEFAULT_TOP_K)
    except ValueError as exc:  # e.g. one val utterance per speaker: no target trial
        warnings.warn(f"{out}: no verification threshold ({exc})", stacklevel=2)
        return None
    np.save(out / COHORT, cohort)
    point = {**point, "split": "val"}
    atomic_write_text(out / VERIFICATION, json.dumps(point, indent=2) + "\n")
    return point
