"""Classification metrics vs sklearn, DeLong vs the plain O(n^2) formula, bootstrap sanity."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from sah.metrics import (
    binary_classification_metrics,
    bootstrap_auc_difference,
    calibration_bins,
    delong_auc_test,
    roc_auc,
    roc_curve_points,
)
from sah.metrics.classification import _midranks


def cohort(seed: int, n: int = 120, tied: bool = False) -> tuple[np.ndarray, ...]:
    """Labels and two correlated models' probabilities; ``tied`` rounds them to create ties."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.35
    shared = rng.standard_normal(n)
    logit_a = 1.4 * y + shared + 0.6 * rng.standard_normal(n)
    logit_b = 0.8 * y + shared + 0.9 * rng.standard_normal(n)
    prob_a, prob_b = 1 / (1 + np.exp(-logit_a)), 1 / (1 + np.exp(-logit_b))
    if tied:
        prob_a, prob_b = np.round(prob_a, 1), np.round(prob_b, 1)
    return y.astype(int), prob_a, prob_b


@pytest.mark.parametrize(
    ("seed", "tied", "threshold"), [(0, False, 0.5), (1, True, 0.5), (2, True, 0.3)]
)
def test_matches_sklearn(seed: int, tied: bool, threshold: float) -> None:
    y, prob, _ = cohort(seed, tied=tied)
    ours = binary_classification_metrics(y, prob, threshold=threshold)
    predicted = (prob >= threshold).astype(int)
    assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, prob), abs=1e-12)
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert ours["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert ours["sensitivity"] == pytest.approx(skm.recall_score(y, predicted))
    assert ours["specificity"] == pytest.approx(skm.recall_score(y, predicted, pos_label=0))
    assert ours["brier"] == pytest.approx(skm.brier_score_loss(y, prob))
    assert ours["n"] == len(y) and ours["n_pos"] == int(y.sum())
    assert roc_auc(y.astype(bool), prob) == ours["roc_auc"]


def test_all_ties_give_auc_one_half() -> None:
    assert roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_midranks_match_scipy_rankdata() -> None:
    values = np.random.default_rng(3).integers(0, 5, size=(4, 30)).astype(float)
    np.testing.assert_allclose(_midranks(values), rankdata(values, axis=1))


def test_single_class_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"ROC AUC is undefined: all 4 labels .* are 1"):
        binary_classification_metrics([1, 1, 1, 1], [0.2, 0.4, 0.6, 0.8])
    with pytest.raises(ValueError, match="undefined"):
        delong_auc_test([0, 0, 0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_rejects_unusable_inputs() -> None:
    with pytest.raises(ValueError, match="binary"):
        binary_classification_metrics([0, 2], [0.1, 0.9])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binary_classification_metrics([0, 1], [0.1, 1.5])
    with pytest.raises(ValueError, match="NaN"):
        binary_classification_metrics([0, 1], [0.1, math.nan])
    with pytest.raises(ValueError, match="shape"):
        binary_classification_metrics([0, 1, 1], [0.1, 0.9])


def delong_by_definition(y: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray) -> dict:
    """DeLong, DeLong & Clarke-Pearson (1988) written out with the O(n^2) kernel."""
    positive, negative = y == 1, y == 0
    components = []
    for prob in (prob_a, prob_b):
        x, z = prob[positive][:, None], prob[negative][None, :]
        kernel = (x > z) + 0.5 * (x == z)
        components.append((kernel.mean(axis=1), kernel.mean(axis=0), kernel.mean()))
    s10 = np.cov(np.stack([c[0] for c in components]))
    s01 = np.cov(np.stack([c[1] for c in components]))
    s = s10 / positive.sum() + s01 / negative.sum()
    variance = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    difference = components[0][2] - components[1][2]
    z = difference / np.sqrt(variance)
    return {
        "auc_a": components[0][2],
        "auc_b": components[1][2],
        "difference": difference,
        "se": np.sqrt(variance),
        "p_value": 2 * (1 - NormalDist().cdf(abs(z))),
    }


@pytest.mark.parametrize(("seed", "tied"), [(4, False), (5, True), (6, True)])
def test_delong_matches_the_plain_formula(seed: int, tied: bool) -> None:
    y, prob_a, prob_b = cohort(seed, n=150, tied=tied)
    ours = delong_auc_test(y, prob_a, prob_b)
    reference = delong_by_definition(y, prob_a, prob_b)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-10), key
    assert ours["auc_a"] == pytest.approx(skm.roc_auc_score(y, prob_a))
    half_width = 1.959964 * ours["se"]
    assert ours["ci_low"] == pytest.approx(ours["difference"] - half_width, abs=1e-6)
    assert ours["ci_high"] == pytest.approx(ours["difference"] + half_width, abs=1e-6)


def test_delong_ci_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    """Binormal models: scores N(mu, 1) for positives and N(0, 1) for negatives have
    AUC = Phi(mu / sqrt(2)), so the true difference is known."""
    rng = np.random.default_rng(8)
    mu_a, mu_b = 1.2, 0.8
    true_difference = NormalDist().cdf(mu_a / math.sqrt(2)) - NormalDist().cdf(mu_b / math.sqrt(2))
    covered, repeats = 0, 300
    for _ in range(repeats):
        y = np.r_[np.ones(60, dtype=int), np.zeros(60, dtype=int)]
        shared = rng.standard_normal(120)
        score_a = mu_a * y + np.sqrt(0.5) * (shared + rng.standard_normal(120))
        score_b = mu_b * y + np.sqrt(0.5) * (shared + rng.standard_normal(120))
        result = delong_auc_test(y, score_a, score_b)
        covered += result["ci_low"] <= true_difference <= result["ci_high"]
    assert 0.90 <= covered / repeats <= 0.99


def test_delong_identical_models_have_p_one() -> None:
    y, prob, _ = cohort(9)
    result = delong_auc_test(y, prob, prob**2)  # same ranking
    assert result["difference"] == 0 and result["se"] == 0
    assert result["p_value"] == 1.0


def test_bootstrap_ci_contains_the_observed_difference_and_agrees_with_delong() -> None:
    y, prob_a, prob_b = cohort(10, n=200)
    boot = bootstrap_auc_difference(y, prob_a, prob_b, n_boot=2000, seed=0)
    delong = delong_auc_test(y, prob_a, prob_b)
    assert boot["difference"] == pytest.approx(delong["difference"])
    assert boot["ci_low"] < boot["difference"] < boot["ci_high"]
    assert boot["se"] == pytest.approx(delong["se"], rel=0.2)
    again = bootstrap_auc_difference(y, prob_a, prob_b, n_boot=2000, seed=0)
    assert again == boot


def test_roc_curve_points_match_sklearn_with_ties() -> None:
    y, prob, _ = cohort(11, tied=True)
    fpr, tpr, thresholds = roc_curve_points(y, prob)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(y, prob, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])
    assert thresholds[0] == np.inf
    trapezoid_area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert trapezoid_area == pytest.approx(roc_auc(y, prob))


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_calibration_bins_match_sklearn(strategy: str) -> None:
    y, prob, _ = cohort(12, n=300, tied=True)
    ours = calibration_bins(y, prob, n_bins=8, strategy=strategy)
    observed, predicted = calibration_curve(y, prob, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(ours["observed_fraction"], observed)
    np.testing.assert_allclose(ours["mean_predicted"], predicted)
    assert ours["count"].sum() == len(y)
