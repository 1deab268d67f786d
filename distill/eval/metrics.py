"""Evaluation metrics: identification, verification and emotion recognition.

Pure numpy on purpose: every run, the sweep report and the benchmarks score with this
one module, so two numbers in a results table can never come from two implementations.

Verification conventions (docs/metrics.md has the derivations):

* ``labels`` are 1 for a target trial (same speaker) and 0 for a non-target trial.
* A trial is *accepted* when ``score >= threshold``; higher score = more likely target.
* ``det_curve`` is sort-based, O(n log n) time and O(n) memory: one pass of cumulative
  counts over the sorted scores, evaluated at the boundaries between distinct score
  values, so tied scores always move together.  Nothing of size thresholds x trials is
  ever allocated (that is what makes speechbrain's ``minDCF`` run out of memory on a
  VoxCeleb-sized trial list).
* ``min_dcf`` is the *normalised* detection cost (VoxCeleb / NIST SRE convention):
  ``(c_miss p_target P_miss + c_fa (1 - p_target) P_fa) / min(c_miss p_target, c_fa (1 - p_target))``
  so that 1.0 is the cost of the best trivial system (accept all or reject all).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "METRIC_KEYS",
    "LOWER_IS_BETTER",
    "top_k_accuracy",
    "cosine_scores",
    "det_curve",
    "eer",
    "min_dcf",
    "confusion_matrix",
    "uar",
    "war",
    "macro_f1",
    "classification_metrics",
    "verification_metrics",
]

#: The metrics.json keys other tools read (the interface contract, docs/metrics.md), in table order.
METRIC_KEYS = ("accuracy", "top5_accuracy", "eer", "min_dcf", "uar", "war", "macro_f1")
#: Error rates and costs; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset({"eer", "min_dcf"})


# --------------------------------------------------------------------------- validation


def _as_trials(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate a verification trial list; return (float64 scores, bool is_target)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"verification scores and labels must be 1-D, got shapes {scores.shape} and {labels.shape}")
    if scores.shape != labels.shape:
        raise ValueError(f"verification scores and labels differ in length: {scores.shape[0]} vs {labels.shape[0]}")
    if scores.size == 0:
        raise ValueError("verification trial list is empty")
    if not np.all(np.isfinite(scores)):
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"verification score of trial {bad} is not finite ({scores[bad]})")
    if labels.dtype != np.bool_:
        if not np.all((labels == 0) | (labels == 1)):
            bad = int(np.flatnonzero((labels != 0) & (labels != 1))[0])
            raise ValueError(
                f"verification label of trial {bad} is {labels[bad].item()!r}; expected 1 (target) or 0 (non-target)"
            )
        labels = labels.astype(bool)
    n_target = int(labels.sum())
    if n_target == 0 or n_target == labels.size:
        kind = "target" if n_target else "non-target"
        raise ValueError(f"verification needs both target and non-target trials; all {labels.size} trials are {kind}")
    return scores, labels


def _as_class_labels(y, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"{name} holds a negative class index ({y.min()})")
    return y


def _as_predictions(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = _as_class_labels(y_true, "y_true")
    y_pred = _as_class_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    return y_true, y_pred


# ----------------------------------------------------------------------- identification


def top_k_accuracy(scores, labels, k: int = 1) -> float:
    """Fraction of rows whose true class is among the k highest scores.

    Ties are broken toward the lower class index, exactly as ``np.argmax`` breaks them,
    so ``top_k_accuracy(s, y, 1)`` equals the accuracy of ``s.argmax(1)`` and a constant
    model cannot score 100 %.  ``k >= n_classes`` is 1.0 by definition.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = _as_class_labels(labels, "labels")
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, n_classes), got shape {scores.shape}")
    n, n_classes = scores.shape
    if n != labels.shape[0]:
        raise ValueError(f"scores has {n} rows but labels has {labels.shape[0]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not np.all(np.isfinite(scores)):
        row = int(np.flatnonzero(~np.isfinite(scores).all(axis=1))[0])
        raise ValueError(f"scores of row {row} are not all finite")
    if labels.max() >= n_classes:
        row = int(np.argmax(labels >= n_classes))
        raise ValueError(f"label {labels[row]} of row {row} is out of range for {n_classes} classes")
    true_score = scores[np.arange(n), labels][:, None]
    lower_index = np.arange(n_classes)[None, :] < labels[:, None]
    rank = np.count_nonzero((scores > true_score) | ((scores == true_score) & lower_index), axis=1)
    return float(np.mean(rank < k))


# ------------------------------------------------------------------------- verification


def cosine_scores(enrol_emb, test_emb, eps: float = 1e-12) -> np.ndarray:
    """Cosine similarity of row i of ``enrol_emb`` with row i of ``test_emb`` (one trial per row)."""
    a = np.asarray(enrol_emb, dtype=np.float64)
    b = np.asarray(test_emb, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"enrol and test embeddings must be matching (n_trials, dim) arrays, got {a.shape} and {b.shape}"
        )
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), eps)
    return np.einsum("ij,ij->i", a, b) / norms


def det_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating points (fpr, fnr, thresholds) of "accept if score >= threshold".

    One point per distinct score, ascending, plus a final threshold just above the highest
    score (reject all: fpr 0, fnr 1; finite, so it survives JSON); the first point accepts
    everything (fpr 1, fnr 0).  fnr rises and fpr falls along the arrays.
    """
    return _det_curve(*_as_trials(scores, labels))


def _det_curve(scores: np.ndarray, is_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    sorted_target = is_target[order]
    n_target = int(sorted_target.sum())
    n_nontarget = sorted_target.size - n_target

    # Index of the first trial of each run of equal scores: the threshold candidates.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    targets_below = np.r_[0, np.cumsum(sorted_target)][starts]
    nontargets_below = starts - targets_below

    fnr = np.r_[targets_below / n_target, 1.0]
    fpr = np.r_[(n_nontarget - nontargets_below) / n_nontarget, 0.0]
    thresholds = np.r_[sorted_scores[starts], np.nextafter(sorted_scores[-1], np.inf)]
    return fpr, fnr, thresholds


def _eer_from_det(fpr, fnr, thresholds) -> tuple[float, float]:
    # fnr - fpr is non-decreasing, from -1 (accept all) to +1 (reject all): it crosses 0
    # between point x1 (last one below 0) and x2 = x1 + 1.  Linear interpolation there.
    diff = fnr - fpr
    x2 = int(np.argmax(diff >= 0))
    if diff[x2] == 0:
        return float(fnr[x2]), float(thresholds[x2])
    x1 = x2 - 1
    a = -diff[x1] / (diff[x2] - diff[x1])
    value = fnr[x1] + a * (fnr[x2] - fnr[x1])
    threshold = thresholds[x1] + a * (thresholds[x2] - thresholds[x1])
    return float(value), float(threshold)


def eer(scores, labels) -> tuple[float, float]:
    """Equal error rate and its threshold.

    The point where miss and false-alarm rates are equal, linearly interpolated between
    the two operating points on either side of the crossing (WeSpeaker / Kaldi style).
    """
    return _eer_from_det(*det_curve(scores, labels))


def _min_dcf_from_det(fpr, fnr, thresholds, p_target, c_miss, c_fa) -> tuple[float, float]:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"detection costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    cost = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    best = int(np.argmin(cost))
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(cost[best] / norm), float(thresholds[best])


def min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, float]:
    """Normalised minimum detection cost and the threshold that attains it.

    Defaults are the VoxCeleb convention (p_target 0.01, c_miss = c_fa = 1).  When
    rejecting every trial is the cheapest operating point the threshold lies just above
    the highest score.
    """
    return _min_dcf_from_det(*det_curve(scores, labels), p_target, c_miss, c_fa)


# ---------------------------------------------------------------------------- emotion


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class, shape (n_classes, n_classes)."""
    y_true, y_pred = _as_predictions(y_true, y_pred)
    needed = int(max(y_true.max(), y_pred.max())) + 1
    if n_classes is None:
        n_classes = needed
    elif needed > n_classes:
        raise ValueError(f"class index {needed - 1} is out of range for n_classes={n_classes}")
    counts = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def war(y_true, y_pred) -> float:
    """Weighted average recall: per-class recall weighted by class frequency, i.e. accuracy."""
    y_true, y_pred = _as_predictions(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def uar(y_true, y_pred) -> float:
    """Unweighted average recall: mean per-class recall over the classes present in y_true.

    The headline emotion metric because emotion corpora are imbalanced and a
    majority-class predictor scores 1 / n_classes here however skewed the test set.
    """
    cm = confusion_matrix(y_true, y_pred)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def macro_f1(y_true, y_pred) -> float:
    """Mean F1 over the classes that occur in y_true or y_pred.

    A class only ever predicted (never true) scores F1 0, as does one never predicted.
    """
    cm = confusion_matrix(y_true, y_pred)
    tp = np.diag(cm)
    # 2TP + FP + FN = (row sum) + (column sum); zero only for a class seen nowhere.
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    seen = denom > 0
    return float(np.mean(2.0 * tp[seen] / denom[seen]))


# ------------------------------------------------------------------------ convenience


def classification_metrics(logits, labels, k: int = 5) -> dict[str, float]:
    """Identification and emotion metrics of one test set, keyed as in metrics.json."""
    logits = np.asarray(logits)
    labels = _as_class_labels(labels, "labels")
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be (N, n_classes) with N = len(labels) = {labels.shape[0]}, got {logits.shape}")
    pred = logits.argmax(axis=1)
    return {
        "accuracy": top_k_accuracy(logits, labels, 1),
        f"top{k}_accuracy": top_k_accuracy(logits, labels, k),
        "uar": uar(labels, pred),
        "war": war(labels, pred),
        "macro_f1": macro_f1(labels, pred),
    }


def verification_metrics(
    scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> dict[str, float]:
    """EER and minDCF of one trial list (one sort shared by both), keyed as in metrics.json."""
    scores, is_target = _as_trials(scores, labels)
    det = _det_curve(scores, is_target)
    eer_value, eer_threshold = _eer_from_det(*det)
    dcf_value, dcf_threshold = _min_dcf_from_det(*det, p_target, c_miss, c_fa)
    return {
        "eer": eer_value,
        "min_dcf": dcf_value,
        "eer_threshold": eer_threshold,
        "min_dcf_threshold": dcf_threshold,
        "n_target_trials": int(is_target.sum()),
        "n_nontarget_trials": int(is_target.size - is_target.sum()),
    }
