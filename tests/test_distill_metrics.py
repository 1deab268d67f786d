"""distill.eval.metrics against hand-computed cases, invariants, and speechbrain."""

import numpy as np
import pytest
import torch

from distill.eval import metrics as M

torch.set_num_threads(1)


# ----------------------------------------------------------------------- identification


def test_top_k_accuracy_hand_computed():
    scores = np.array(
        [
            [0.1, 0.7, 0.2],  # label 1: top-1 hit
            [0.5, 0.3, 0.2],  # label 1: rank 2
            [0.2, 0.3, 0.5],  # label 0: rank 3
            [0.4, 0.4, 0.2],  # label 1 tied with class 0: rank 2 (lower index wins)
        ]
    )
    labels = np.array([1, 1, 0, 1])
    assert M.top_k_accuracy(scores, labels, 1) == pytest.approx(1 / 4)
    assert M.top_k_accuracy(scores, labels, 2) == pytest.approx(3 / 4)
    assert M.top_k_accuracy(scores, labels, 3) == 1.0
    assert M.top_k_accuracy(scores, labels, 10) == 1.0


def test_top1_equals_argmax_accuracy_even_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(200, 6)).astype(float)  # many ties
    labels = rng.integers(0, 6, size=200)
    expected = np.mean(scores.argmax(1) == labels)
    assert M.top_k_accuracy(scores, labels, 1) == pytest.approx(expected)


def test_constant_scores_do_not_get_full_top_k():
    labels = np.arange(10) % 5
    assert M.top_k_accuracy(np.zeros((10, 5)), labels, 2) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "scores, labels, k, match",
    [
        (np.zeros((3, 4)), [0, 1], 1, "3 rows but labels has 2"),
        (np.zeros((2, 4)), [0, 4], 1, "label 4 of row 1 is out of range for 4 classes"),
        (np.zeros((2, 4)), [0, 1], 0, "k must be >= 1"),
        (np.zeros(4), [0], 1, r"\(N, n_classes\)"),
        (np.zeros((0, 4)), [], 1, "labels is empty"),
        (np.array([[0.0, np.nan]]), [0], 1, "row 0 are not all finite"),
    ],
)
def test_top_k_accuracy_rejects_bad_input(scores, labels, k, match):
    with pytest.raises(ValueError, match=match):
        M.top_k_accuracy(scores, labels, k)


# ------------------------------------------------------------------------- verification


def test_det_curve_with_tied_scores_by_hand():
    # Accept if score >= t.  The tie at 0.5 (one target, one non-target) moves as one.
    fpr, fnr, thr = M.det_curve([0.1, 0.5, 0.5, 0.9], [0, 1, 0, 1])
    np.testing.assert_allclose(fpr, [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(fnr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(thr[:3], [0.1, 0.5, 0.9])
    assert 0.9 < thr[3] < 0.9 + 1e-12  # reject-all point: just above the top score


def test_det_curve_does_not_depend_on_trial_order():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 300).astype(float)
    labels = rng.random(300) < 0.3
    perm = rng.permutation(300)
    for a, b in zip(M.det_curve(scores, labels), M.det_curve(scores[perm], labels[perm])):
        np.testing.assert_array_equal(a, b)


def test_eer_by_hand():
    # Crossing between (fpr .5, fnr 0) at t=.5 and (fpr 0, fnr .5) at t=.9: EER .25.
    value, threshold = M.eer([0.1, 0.5, 0.5, 0.9], [0, 1, 0, 1])
    assert value == pytest.approx(0.25)
    assert threshold == pytest.approx(0.7)
    # An exact crossing: t=0.4 rejects 1 of 3 targets and accepts 1 of 3 non-targets.
    value, threshold = M.eer([0.1, 0.2, 0.4, 0.3, 0.6, 0.7], [0, 0, 0, 1, 1, 1])
    assert value == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.4)


def test_min_dcf_by_hand():
    scores = [0.1, 0.2, 0.4, 0.3, 0.6, 0.7]
    labels = [0, 0, 0, 1, 1, 1]
    # p_target .5, c_miss = c_fa = 1: cost .5 fnr + .5 fpr, normaliser .5.
    # At t=.6: fnr 1/3, fpr 0 -> 1/3 (the best; t=.3 gives fnr 0, fpr 1/3 -> also 1/3,
    # but argmin returns the first, t=.3).
    value, threshold = M.min_dcf(scores, labels, p_target=0.5)
    assert value == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.3)
    # VoxCeleb defaults: false alarms cost 99x more; the best point is t=.6
    # (.01 * 1/3 + .99 * 0) / .01 = 1/3.
    value, threshold = M.min_dcf(scores, labels)
    assert value == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.6)


def test_verification_extremes():
    labels = np.r_[np.ones(50), np.zeros(150)]
    separable = np.r_[np.linspace(1, 2, 50), np.linspace(-1, 0.5, 150)]
    assert M.eer(separable, labels)[0] == 0.0
    assert M.min_dcf(separable, labels)[0] == 0.0
    assert M.eer(-separable, labels)[0] == 1.0
    assert M.min_dcf(-separable, labels)[0] == pytest.approx(1.0)  # no better than trivial


def test_random_scores_give_chance_eer_and_trivial_min_dcf():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=200_000)
    labels = rng.random(200_000) < 0.2
    assert M.eer(scores, labels)[0] == pytest.approx(0.5, abs=0.01)
    assert M.min_dcf(scores, labels)[0] == pytest.approx(1.0, abs=0.02)


def test_constant_scores_give_half_eer():
    assert M.eer(np.zeros(10), np.arange(10) % 2)[0] == pytest.approx(0.5)


def _speechbrain(scores, labels, **dcf_kwargs):
    from speechbrain.utils.metric_stats import EER, minDCF

    pos = torch.as_tensor(scores[labels == 1])
    neg = torch.as_tensor(scores[labels == 0])
    return EER(pos, neg)[0], minDCF(pos, neg, **dcf_kwargs)[0]


@pytest.mark.parametrize("seed", range(6))
def test_matches_speechbrain_on_continuous_scores(seed):
    rng = np.random.default_rng(seed)
    n_tar, n_non = rng.integers(5, 60), rng.integers(5, 200)
    labels = np.r_[np.ones(n_tar, int), np.zeros(n_non, int)]
    scores = np.where(labels == 1, rng.normal(1.0, 1.0, labels.size), rng.normal(0.0, 1.0, labels.size))
    sb_eer, sb_dcf = _speechbrain(scores, labels)
    # speechbrain reports (FAR + FRR) / 2 at the operating point nearest the crossing; we
    # interpolate on the segment between the two points around it.  Without ties a
    # segment moves one rate by one trial, so the two differ by at most half of that.
    assert M.eer(scores, labels)[0] == pytest.approx(sb_eer, abs=0.5 * max(1 / n_tar, 1 / n_non) + 1e-9)
    # Same operating points, same cost; speechbrain's is not normalised (divide by 0.01).
    assert M.min_dcf(scores, labels)[0] == pytest.approx(sb_dcf / 0.01, abs=1e-5)
    _, sb_dcf = _speechbrain(scores, labels, p_target=0.05, c_miss=2.0, c_fa=1.0)
    ours = M.min_dcf(scores, labels, p_target=0.05, c_miss=2.0, c_fa=1.0)[0]
    assert ours == pytest.approx(sb_dcf / min(2.0 * 0.05, 0.95), abs=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_matches_speechbrain_with_tied_scores(seed):
    rng = np.random.default_rng(100 + seed)
    labels = (rng.random(150) < 0.3).astype(int)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(0.8 * labels, 1.0), 1)  # coarse grid: many ties
    n_tar, n_non = labels.sum(), (1 - labels).sum()
    # With ties one step moves both rates by the tied group's share of each class.
    _, tar_counts = np.unique(scores[labels == 1], return_counts=True)
    _, non_counts = np.unique(scores[labels == 0], return_counts=True)
    tol = 0.5 * (tar_counts.max() / n_tar + non_counts.max() / n_non)
    sb_eer, sb_dcf = _speechbrain(scores, labels)
    assert M.eer(scores, labels)[0] == pytest.approx(sb_eer, abs=tol)
    assert M.min_dcf(scores, labels)[0] == pytest.approx(sb_dcf / 0.01, abs=1e-5)


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([], [], "empty"),
        ([0.1, 0.2], [1], "differ in length: 2 vs 1"),
        ([0.1, 0.2], [1, 1], "all 2 trials are target"),
        ([0.1, 0.2], [0, 0], "all 2 trials are non-target"),
        ([0.1, np.nan], [0, 1], "trial 1 is not finite"),
        ([0.1, 0.2], [0, 2], "label of trial 1 is 2"),
        ([[0.1, 0.2]], [[0, 1]], "must be 1-D"),
    ],
)
def test_verification_rejects_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        M.verification_metrics(scores, labels)


def test_min_dcf_rejects_bad_prior():
    with pytest.raises(ValueError, match="p_target"):
        M.min_dcf([0.1, 0.2], [0, 1], p_target=1.0)


def test_cosine_scores_row_wise():
    enrol = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    test = np.array([[2.0, 0.0], [-1.0, -1.0], [4.0, -3.0]])
    np.testing.assert_allclose(M.cosine_scores(enrol, test), [1.0, -1.0, 0.0], atol=1e-12)
    assert M.cosine_scores(np.zeros((1, 3)), np.ones((1, 3)))[0] == 0.0  # no NaN
    with pytest.raises(ValueError, match="matching"):
        M.cosine_scores(np.ones((2, 3)), np.ones((3, 3)))


# ---------------------------------------------------------------------------- emotion

Y_TRUE = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 2, 2, 2, 0, 3]  # class 3 is predicted but never true


def test_confusion_matrix_by_hand():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, n_classes=5)
    expected = np.zeros((5, 5), int)
    expected[0, 0], expected[0, 1] = 3, 1
    expected[1, 1], expected[1, 2] = 1, 1
    expected[2, 2], expected[2, 0], expected[2, 3] = 2, 1, 1
    np.testing.assert_array_equal(cm, expected)
    assert M.confusion_matrix(Y_TRUE, Y_PRED).shape == (4, 4)
    with pytest.raises(ValueError, match="class index 3 is out of range for n_classes=3"):
        M.confusion_matrix(Y_TRUE, Y_PRED, n_classes=3)


def test_uar_war_macro_f1_by_hand():
    # Recalls over the true classes 0, 1, 2: 3/4, 1/2, 2/4.
    assert M.uar(Y_TRUE, Y_PRED) == pytest.approx((3 / 4 + 1 / 2 + 2 / 4) / 3)
    assert M.war(Y_TRUE, Y_PRED) == pytest.approx(6 / 10)
    # F1 = 2TP / (2TP + FP + FN): class 0: 6/(6+1+1), 1: 2/(2+1+1), 2: 4/(4+1+2), 3: 0.
    assert M.macro_f1(Y_TRUE, Y_PRED) == pytest.approx((6 / 8 + 2 / 4 + 4 / 7 + 0) / 4)


def test_uar_resists_class_imbalance_where_war_does_not():
    y_true = np.r_[np.zeros(90, int), np.ones(10, int)]
    majority = np.zeros(100, int)
    assert M.war(y_true, majority) == pytest.approx(0.9)
    assert M.uar(y_true, majority) == pytest.approx(0.5)


def test_emotion_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="differ in length: 2 vs 3"):
        M.uar([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="y_pred holds a negative class index"):
        M.war([0, 1], [0, -1])
    with pytest.raises(ValueError, match="y_true is empty"):
        M.macro_f1([], [])
    with pytest.raises(ValueError, match="y_true must hold integer class indices"):
        M.uar(["sad", "happy"], [0, 1])
    with pytest.raises(ValueError, match="y_pred must hold integer class indices"):
        M.war([0, 1], [0.0, 0.5])


# ------------------------------------------------------------------------ convenience


def test_classification_metrics_keys_and_values():
    logits = np.eye(4)[[0, 1, 2, 3, 0, 0]] + 0.1 * np.arange(4)
    labels = np.array([0, 1, 2, 3, 1, 2])
    out = M.classification_metrics(logits, labels)
    assert set(out) == {"accuracy", "top5_accuracy", "uar", "war", "macro_f1"}
    assert out["accuracy"] == out["war"] == pytest.approx(4 / 6)
    assert out["top5_accuracy"] == 1.0  # 4 classes
    assert out["uar"] == pytest.approx((1 + 1 / 2 + 1 / 2 + 1) / 4)
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_verification_metrics_keys_and_json_safe():
    import json

    rng = np.random.default_rng(3)
    labels = rng.random(500) < 0.5
    scores = rng.normal(labels.astype(float), 1.0)
    out = M.verification_metrics(scores, labels)
    assert {"eer", "min_dcf"} <= set(out)
    assert out["eer"] == M.eer(scores, labels)[0]
    assert out["min_dcf"] == M.min_dcf(scores, labels)[0]
    assert out["n_target_trials"] + out["n_nontarget_trials"] == 500
    assert 0.0 < out["eer"] < 0.5 and 0.0 < out["min_dcf"] <= 1.0
    json.loads(json.dumps(out, allow_nan=False))
