"""Utterance-level evaluation: every grid cell, averaged per utterance, scored by distill.eval.metrics.

The same function serves model selection (val) and the reported numbers (test), for teachers
(with and without their video) and students alike, so every run in a results table is measured
by the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.files import sha256_text
from distill.config import SELECTS
from distill.eval import metrics as M
from distill.eval.predict import Predictions
from distill.eval.scoring import DEFAULT_TOP_K, as_norm
from manifests.trials import make_trials, read_trials

#: The val metric that picks the best checkpoint, per task, when val holds training classes
#: (``train.select: auto``; an open-set speaker val split selects by ``eer``).
SELECTION_METRIC = {"speaker": "accuracy", "emotion": "uar"}
#: The ``train.select`` metrics where lower is better.
LOWER_IS_BETTER = frozenset({"eer", "loss"})
MAX_ALL_PAIRS = 1_000_000  # above this many test pairs, sample a balanced trial list instead
BALANCED_TRIALS_PER_CLASS = 50_000
#: Seed of that sample. Fixed, not the run's ``train.seed``: a teacher and its students (of any
#: seed) are scored on the same trials whenever they share a test split.
TRIAL_SEED = 0


def classification(pred: Predictions, task: str) -> dict[str, float]:
    """Identification (speaker) or emotion metrics over the items whose class was seen in training."""
    known = pred.labels >= 0
    if not known.any():
        raise ValueError("no evaluated item belongs to a training class")
    scores = M.classification_metrics(pred.logits[known], pred.labels[known], k=5)
    keys = ("accuracy", "top5_accuracy") if task == "speaker" else ("accuracy", "uar", "war", "macro_f1")
    return {k: float(scores[k]) for k in keys}


def selection_metric(select: str, task: str, val_labels: np.ndarray) -> str:
    """Resolve ``train.select`` for a run whose val items have class ids ``val_labels`` (-1: unseen).

    ``auto``: emotion -> ``uar``; speaker -> ``accuracy`` when every val speaker is a training
    class (closed-set identification), else ``eer`` (open set: unseen speakers can only be
    verified, e.g. a speaker-disjoint val carve-out of VoxCeleb2 dev). ``loss`` is the val
    cross-entropy of the utterance-mean logits. A choice the task or the val split cannot give is
    a ``ValueError`` saying why.
    """
    known = np.asarray(val_labels) >= 0
    if select == "auto":
        select = "uar" if task == "emotion" else "accuracy" if known.all() else "eer"
    if select not in SELECTS:
        raise ValueError(f"train.select={select!r} is not one of {', '.join(SELECTS)}")
    needs = {"eer": "speaker", "uar": "emotion"}.get(select)
    if needs and task != needs:
        raise ValueError(f"train.select={select} needs data.task={needs}, this run's task is {task}")
    if select in ("accuracy", "uar", "loss") and not known.any():
        raise ValueError(
            f"train.select={select} needs val items of training classes, and no val item's class was "
            f"trained on (open-set validation: use train.select=eer)"
        )
    return select


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy (nats) of ``logits`` (N, C) against class ids ``labels`` (N,)."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def validation_scores(
    pred: Predictions, task: str, trials: pd.DataFrame | None = None, costs: dict | None = None
) -> dict[str, float]:
    """What the epoch log shows of val: classification metrics and ``loss`` over the items of
    training classes (when there are any), ``eer``/``min_dcf`` on ``trials`` when given."""
    scores: dict[str, float] = {}
    known = pred.labels >= 0
    if known.any():
        scores.update(classification(pred, task))
        scores["loss"] = cross_entropy(pred.logits[known], pred.labels[known])
    if trials is not None:
        scores.update(verification(pred, trials, **(costs or {}))[0])
    return scores


def build_trials(
    index: pd.DataFrame, test_ids: list[str], speaker_column: str, trials_path: str | None, seed: int = TRIAL_SEED
) -> pd.DataFrame:
    """The configured trial list, else every test-split pair (a balanced sample, seeded by
    :data:`TRIAL_SEED`, when there are more than :data:`MAX_ALL_PAIRS`).

    A configured list may name files as the official VoxCeleb lists do
    (``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav``): an id not in the cache
    that is one once its audio extension is dropped is taken as that utterance.
    """
    if trials_path:
        trials = read_trials(trials_path)
        known = set(index["utt_id"])
        for col in ("enrol", "test"):  # the official VoxCeleb lists name files (.wav); the cache, utterances
            stem = trials[col].str.replace(r"\.(wav|flac|m4a|mp4)$", "", regex=True)
            trials[col] = trials[col].where(trials[col].isin(known), stem)
        unknown = sorted((set(trials["enrol"]) | set(trials["test"])) - set(index["utt_id"]))
        if unknown:
            raise ValueError(
                f"trial list {trials_path} names {len(unknown)} item(s) not in the cache, e.g. {unknown[0]!r}"
            )
        return trials
    table = index.loc[test_ids, ["utt_id", speaker_column]]
    n = len(table)
    per_class = BALANCED_TRIALS_PER_CLASS if sampled(n) else None
    return make_trials(table, n_per_class=per_class, seed=seed, speaker=speaker_column)


def sampled(n_items: int) -> bool:
    """Whether :func:`build_trials` samples the trials of ``n_items`` test items (no trial list given)."""
    return n_items * (n_items - 1) // 2 > MAX_ALL_PAIRS


def trials_record(trials: pd.DataFrame, trials_path: str | None, n_items: int) -> dict:
    """What a run was scored on, for metrics.json: the list's source (its path, ``all-pairs`` or
    ``sampled`` with the seed), size, and a digest of its rows, so two runs' EERs can be checked
    to come from the same trials."""
    lines = (
        trials["label"].astype(int).astype(str) + " " + trials["enrol"].astype(str) + " " + trials["test"].astype(str)
    )
    source = str(trials_path) if trials_path else "sampled" if sampled(n_items) else "all-pairs"
    record = {
        "source": source,
        "n_trials": len(trials),
        "n_target": int(trials["label"].sum()),
        "sha256": sha256_text("".join(f"{x}\n" for x in lines)),
    }
    if source == "sampled":
        record["seed"] = TRIAL_SEED
    return record


def _trial_embeddings(pred: Predictions, trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The (enrol, test) embeddings of each trial, one row per trial; every trial item must have been evaluated."""
    row = {u: i for i, u in enumerate(pred.utt_ids)}
    missing = sorted((set(trials["enrol"]) | set(trials["test"])) - set(row))
    if missing:
        raise ValueError(f"{len(missing)} trial item(s) were not evaluated, e.g. {missing[0]!r}")
    return pred.emb[[row[u] for u in trials["enrol"]]], pred.emb[[row[u] for u in trials["test"]]]


def verification(
    pred: Predictions, trials: pd.DataFrame, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """EER / minDCF (at ``p_target``, ``c_miss``, ``c_fa``) from cosine scores of the utterance
    embeddings; also returns (scores, labels)."""
    scores = M.cosine_scores(*_trial_embeddings(pred, trials))
    labels = trials["label"].to_numpy().astype(bool)
    out = M.verification_metrics(scores, labels, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
    return {"eer": float(out["eer"]), "min_dcf": float(out["min_dcf"])}, scores, labels


def verification_asnorm(
    pred: Predictions,
    trials: pd.DataFrame,
    cohort: np.ndarray,
    top_k: int = DEFAULT_TOP_K,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[str, float]:
    """EER / minDCF of AS-norm scores (``distill.eval.scoring.as_norm`` against ``cohort``) of the trials,
    as ``eer_asnorm`` / ``min_dcf_asnorm``."""
    scores = as_norm(*_trial_embeddings(pred, trials), cohort, top_k)
    out = M.verification_metrics(
        scores, trials["label"].to_numpy().astype(bool), p_target=p_target, c_miss=c_miss, c_fa=c_fa
    )
    return {"eer_asnorm": float(out["eer"]), "min_dcf_asnorm": float(out["min_dcf"])}


def operating_point(
    pred: Predictions, trials: pd.DataFrame, cohort: np.ndarray | None = None, top_k: int = DEFAULT_TOP_K
) -> dict:
    """The EER threshold on cosine scores of a (validation) trial list, with the EER it gives there;
    with a cohort, also those of the AS-norm scores (under ``asnorm``)."""
    enrol, test = _trial_embeddings(pred, trials)
    scores, labels = M.cosine_scores(enrol, test), trials["label"].to_numpy().astype(bool)
    out = M.verification_metrics(scores, labels)
    point = {
        "threshold": out["eer_threshold"],
        "eer": out["eer"],
        "scoring": "cosine",
        "n_trials": len(labels),
        "n_target_trials": out["n_target_trials"],
    }
    if cohort is not None:
        normed = as_norm(enrol, test, cohort, top_k)
        n = M.verification_metrics(normed, labels)
        point["asnorm"] = {"threshold": n["eer_threshold"], "eer": n["eer"], "top_k": top_k, "cohort": len(cohort)}
    return point
