"""distill.eval.stats against scipy.stats: paired t-interval, paired t-test, sign-flip permutation test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from distill.eval.stats import EXACT_SIGN_FLIPS, improvement, paired_difference, sign_flip_p_value


@pytest.mark.parametrize("n", [2, 3, 5, 12])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_interval_and_t_test_match_scipy(n, confidence):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.5, 0.1, n), rng.normal(0.45, 0.1, n)
    got = paired_difference(a, b, confidence)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence)
    assert got.n == n and got.mean == pytest.approx(float(np.mean(a - b)), abs=1e-15)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert got.significant() == (ref.pvalue < 0.05)


@pytest.mark.parametrize("n", [3, 6, 10])
def test_exact_sign_flip_matches_scipy_permutation_test(n):
    rng = np.random.default_rng(100 + n)
    a, b = rng.normal(0.5, 0.1, n), rng.normal(0.4, 0.1, n)
    ref = stats.permutation_test(
        (a, b), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    )
    assert paired_difference(a, b).p_sign_flip == pytest.approx(ref.pvalue, rel=1e-9)


def test_sampled_sign_flip_is_close_to_exact_on_many_pairs():
    # One pair more than the exact path takes: scipy's exact reference enumerates 2^n flips (n = 20: 7 s).
    rng = np.random.default_rng(7)
    d = rng.normal(0.05, 0.2, EXACT_SIGN_FLIPS + 1)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf)
    assert abs(sign_flip_p_value(d, n_resamples=20000) - ref.pvalue) < 0.02


def test_three_seeds_cannot_be_significant_by_sign_flips_but_can_by_t():
    got = paired_difference([0.60, 0.62, 0.61], [0.40, 0.41, 0.405])
    assert got.p_sign_flip == pytest.approx(0.25) and got.significant()


def test_edge_cases_one_pair_zero_spread_and_bad_input():
    one = paired_difference([0.5], [0.4])
    assert one.mean == pytest.approx(0.1) and math.isnan(one.ci_low) and math.isnan(one.p_value)
    same = paired_difference([0.5, 0.6], [0.5, 0.6])
    assert same.mean == 0.0 and math.isnan(same.p_value) and not same.significant()
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1, 2], [1])


def test_equal_differences_on_every_seed_are_not_a_certain_gain():
    # 0.3 - 0.1 and 0.7 - 0.5 differ only by float rounding (3e-17): scipy's t statistic is 1e16,
    # p = 6e-17 on two seeds; the t-test is undefined there, the sign flips are not
    flat = paired_difference([0.3, 0.7], [0.1, 0.5])
    assert flat.mean == pytest.approx(0.2) and not flat.significant()
    assert math.isnan(flat.ci_low) and math.isnan(flat.ci_high) and math.isnan(flat.p_value)
    assert flat.p_sign_flip == pytest.approx(0.5)
    # any real spread between seeds: the t-test runs as scipy's does
    varied = paired_difference([0.62, 0.73, 0.70], [0.51, 0.62, 0.58])
    assert varied.p_value == pytest.approx(stats.ttest_rel([0.62, 0.73, 0.70], [0.51, 0.62, 0.58]).pvalue)


def test_improvement_is_positive_when_better_whatever_the_metric_direction():
    assert improvement([0.8, 0.9], [0.7, 0.7], lower_is_better=False).mean == pytest.approx(0.15)
    assert improvement([0.1, 0.2], [0.3, 0.3], lower_is_better=True).mean == pytest.approx(0.15)
