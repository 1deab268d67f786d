"""Verification score normalisation against a cohort: adaptive s-norm (AS-norm), pure numpy.

A raw cosine score depends on how "typical" each side is: an embedding close to many speakers
scores high against everyone. AS-norm (Matejka et al. 2017; WeSpeaker's default) standardises
the score with the mean and std of each side's ``top_k`` highest cosine scores against a cohort of
other speakers, then averages the two:

    s' = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2

The cohort is one embedding per training speaker (the mean of its length-normalised utterance
embeddings), as in WeSpeaker's recipes: compact, and disjoint from any test speaker of an
open-set protocol.
"""

from __future__ import annotations

import numpy as np

from distill.eval.metrics import cosine_scores

DEFAULT_TOP_K = 300


def _unit(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def speaker_cohort(emb: np.ndarray, speakers) -> np.ndarray:
    """One unit-length embedding per speaker: the mean of its utterances' unit embeddings, (S, D)."""
    speakers = np.asarray(speakers)
    unit = _unit(emb)
    names = sorted(set(speakers.tolist()))
    return _unit(np.stack([unit[speakers == s].mean(0) for s in names])).astype(np.float32)


def top_k_stats(emb: np.ndarray, cohort: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each embedding's ``top_k`` highest cosine scores against the cohort."""
    if len(cohort) == 0:
        raise ValueError("AS-norm needs a non-empty cohort")
    k = max(1, min(top_k, len(cohort)))
    sims = _unit(emb) @ _unit(cohort).T  # (N, S)
    top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
    return top.mean(1), np.maximum(top.std(1), 1e-6)


def as_norm(enrol: np.ndarray, test: np.ndarray, cohort: np.ndarray, top_k: int = DEFAULT_TOP_K) -> np.ndarray:
    """AS-norm scores of the pairs (enrol[i], test[i])."""
    raw = cosine_scores(enrol, test).astype(np.float64)
    mu_e, sd_e = top_k_stats(enrol, cohort, top_k)
    mu_t, sd_t = top_k_stats(test, cohort, top_k)
    return (0.5 * ((raw - mu_e) / sd_e + (raw - mu_t) / sd_t)).astype(np.float32)
