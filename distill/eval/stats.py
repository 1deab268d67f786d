"""Paired comparisons over seeds: mean difference, t-interval, paired t-test, sign-flip test.

A student's gain is only worth reporting with its uncertainty, and two students trained with the
same seed share their initialisation and data order, so differences are taken per seed (paired)
before anything is averaged. Pure numpy (scipy only for the t distribution's quantiles);
``tests/test_distill_stats.py`` checks every number against ``scipy.stats``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import t as student_t

#: above this many pairs the sign-flip test samples flips instead of enumerating all 2^n
EXACT_SIGN_FLIPS = 16
#: a standard deviation of the differences at or below this (relative to their mean) is no spread:
#: float rounding of equal differences, not variation between seeds
NO_SPREAD = 1e-12


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over n pairs: its mean, a two-sided t confidence interval and two p-values."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    p_value: float  # paired t-test, two-sided (H0: mean difference 0)
    p_sign_flip: float  # sign-flip permutation test of the mean, two-sided
    confidence: float = 0.95

    def significant(self, alpha: float = 0.05) -> bool:
        return bool(self.p_value < alpha)

    def to_dict(self) -> dict:
        return asdict(self)


def paired_difference(a, b, confidence: float = 0.95) -> PairedDifference:
    """Compare paired samples ``a`` and ``b`` (same length, pair i = seed i).

    With one pair there is no spread: the interval and p-values are NaN. So too, for the t-test, when
    every pair differs by the same amount (to float rounding): its statistic is mean / 0, and calling
    that p = 0 would report certainty that two or three seeds with no spread cannot give (the
    sign-flip p, which needs no spread, is still computed). A finite interval therefore always means
    that the seeds varied.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    d = a - b
    n = len(d)
    if n == 0:
        raise ValueError("no pairs to compare")
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(n, mean, math.nan, math.nan, math.nan, math.nan, confidence)
    sd = float(d.std(ddof=1))
    if sd <= NO_SPREAD * max(1.0, abs(mean)):
        return PairedDifference(n, mean, math.nan, math.nan, math.nan, sign_flip_p_value(d), confidence)
    se = sd / math.sqrt(n)
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * se
    p = float(2 * student_t.sf(abs(mean) / se, n - 1))
    return PairedDifference(n, mean, mean - half, mean + half, p, sign_flip_p_value(d), confidence)


def sign_flip_p_value(d, n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided permutation p-value of mean(d) under random signs (H0: d symmetric about 0).

    Exact (all 2^n sign vectors, the observed one included) up to ``EXACT_SIGN_FLIPS`` pairs,
    otherwise from ``n_resamples`` random flips. Two-sided as ``scipy.stats.permutation_test``
    defines it: twice the smaller one-sided p, at most 1. With 3 seeds the smallest possible p
    is 0.25: a sign-flip test cannot call anything significant on so few pairs; the t-test can.
    """
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n <= EXACT_SIGN_FLIPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(n), rng.choice((1.0, -1.0), size=(n_resamples, n))])
    null = (signs * d).mean(axis=1)
    observed = d.mean()
    tol = 1e-12 * max(1.0, abs(observed))
    greater = float((null >= observed - tol).mean())
    less = float((null <= observed + tol).mean())
    return min(1.0, 2 * min(greater, less))


def improvement(method, reference, lower_is_better: bool, confidence: float = 0.95) -> PairedDifference:
    """How much better ``method`` is than ``reference``, per pair, positive = better.

    For a metric where lower is better (EER, minDCF) that is ``reference - method``.
    """
    if lower_is_better:
        return paired_difference(reference, method, confidence)
    return paired_difference(method, reference, confidence)
