"""Binary classification metrics for prognosis models, and tests comparing two models' AUCs.

numpy only (plus the standard library for the normal distribution), so the module can be lifted
into other projects. Labels are 0/1 (or bool); scores are finite, and probabilities in [0, 1]
where a metric needs them (Brier score). A case is predicted positive when its probability is
``>= threshold``.

ROC AUC is the Mann–Whitney statistic on midranks, so tied scores count one half, as in
sklearn's ``roc_auc_score``. It is undefined when ``y_true`` holds only one class; every function
that needs it raises ``ValueError`` saying so instead of returning NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _labels(y_true: ArrayLike) -> np.ndarray:
    labels = np.asarray(y_true)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {labels.shape}")
    if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
        raise ValueError("y_true must hold binary labels 0/1 (or bool)")
    return labels.astype(bool)


def _scores(y_score: ArrayLike, n: int, name: str) -> np.ndarray:
    scores = np.asarray(y_score, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"{name} must be a 1-D array of {n} scores, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains NaN or infinite scores")
    return scores


def _require_both_classes(labels: np.ndarray) -> tuple[int, int]:
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        present = "1 (positive)" if n_pos else "0 (negative)"
        raise ValueError(
            f"ROC AUC is undefined: all {labels.size} labels in y_true are {present}; "
            "evaluate on a set that holds both classes"
        )
    return n_pos, n_neg


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks (1-based) along the last axis, tied values sharing the mean of their ranks."""
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    n = values.shape[-1]
    position = np.broadcast_to(np.arange(n), values.shape)
    starts_group = np.ones(values.shape, dtype=bool)
    starts_group[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends_group = np.ones(values.shape, dtype=bool)
    ends_group[..., :-1] = starts_group[..., 1:]
    first = np.maximum.accumulate(np.where(starts_group, position, 0), axis=-1)
    last = np.minimum.accumulate(np.where(ends_group, position, n - 1)[..., ::-1], axis=-1)[
        ..., ::-1
    ]
    ranks = np.empty(values.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    return ranks


def _auc_from_ranks(ranks_of_positives: np.ndarray, n_neg: int) -> np.ndarray:
    n_pos = ranks_of_positives.shape[-1]
    return (ranks_of_positives.sum(axis=-1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve (Mann–Whitney U / (n_pos * n_neg), ties count one half)."""
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size, "y_score")
    _, n_neg = _require_both_classes(labels)
    return float(_auc_from_ranks(_midranks(scores)[labels], n_neg))


def binary_classification_metrics(
    y_true: ArrayLike, y_prob: ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """Threshold metrics at ``y_prob >= threshold`` plus ROC AUC and Brier score.

    Returns accuracy, f1 (of the positive class), roc_auc, balanced_accuracy, sensitivity,
    specificity, brier, n and n_pos. Raises ``ValueError`` if ``y_true`` has a single class.
    """
    labels = _labels(y_true)
    probs = _scores(y_prob, labels.size, "y_prob")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError("y_prob must be probabilities in [0, 1] (the Brier score needs them)")
    n_pos, n_neg = _require_both_classes(labels)
    predicted = probs >= threshold
    true_pos = int(np.sum(predicted & labels))
    true_neg = int(np.sum(~predicted & ~labels))
    false_pos, false_neg = n_neg - true_neg, n_pos - true_pos
    sensitivity, specificity = true_pos / n_pos, true_neg / n_neg
    return {
        "accuracy": (true_pos + true_neg) / labels.size,
        "f1": 2 * true_pos / (2 * true_pos + false_pos + false_neg),
        "roc_auc": float(_auc_from_ranks(_midranks(probs)[labels], n_neg)),
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "brier": float(np.mean((probs - labels) ** 2)),
        "n": labels.size,
        "n_pos": n_pos,
    }


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def _z_for(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def delong_auc_test(
    y_true: ArrayLike, prob_a: ArrayLike, prob_b: ArrayLike, confidence: float = 0.95
) -> dict[str, float]:
    """DeLong test of AUC(a) - AUC(b) for two models scored on the same patients.

    Uses the fast midrank form of the structural components (Sun & Xu 2014, IEEE SPL 21:1389),
    O(n log n). Returns auc_a, auc_b, their SEs, difference (a - b), se, ci_low, ci_high
    (normal approximation at ``confidence``), z and two-sided p_value. When the difference has
    zero variance (e.g. identically ranked scores) z is 0 and p is 1 for a zero difference,
    otherwise z is infinite and p is 0.
    """
    labels = _labels(y_true)
    scores = np.stack(
        [_scores(prob_a, labels.size, "prob_a"), _scores(prob_b, labels.size, "prob_b")]
    )
    n_pos, n_neg = _require_both_classes(labels)
    positives, negatives = scores[:, labels], scores[:, ~labels]
    ranks_all = _midranks(scores)
    ranks_pos_all, ranks_neg_all = ranks_all[:, labels], ranks_all[:, ~labels]
    # Structural components: for each positive, the fraction of negatives it outranks (V10);
    # for each negative, the fraction of positives that outrank it (V01); ties count one half.
    v10 = (ranks_pos_all - _midranks(positives)) / n_neg
    v01 = 1.0 - (ranks_neg_all - _midranks(negatives)) / n_pos
    aucs = v10.mean(axis=1)
    covariance = np.cov(v10) / n_pos + np.cov(v01) / n_neg
    contrast = np.array([1.0, -1.0])
    variance = float(contrast @ covariance @ contrast)
    difference = float(aucs[0] - aucs[1])
    se = math.sqrt(max(variance, 0.0))
    if se > 0:
        z = difference / se
    else:
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    half_width = _z_for(confidence) * se
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "se_auc_a": math.sqrt(max(float(covariance[0, 0]), 0.0)),
        "se_auc_b": math.sqrt(max(float(covariance[1, 1]), 0.0)),
        "difference": difference,
        "se": se,
        "ci_low": difference - half_width,
        "ci_high": difference + half_width,
        "z": z,
        "p_value": _two_sided_p(z),
        "n": labels.size,
        "n_pos": n_pos,
    }


def bootstrap_auc_difference(
    y_true: ArrayLike,
    prob_a: ArrayLike,
    prob_b: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Percentile bootstrap CI of AUC(a) - AUC(b) over patients.

    Resampling is stratified (positives and negatives drawn separately, with replacement, at
    their observed counts), as in pROC, so every replicate has both classes and a defined AUC.
    Returns auc_a, auc_b, difference (observed), se (SD of the replicates), ci_low, ci_high,
    n_boot and confidence.
    """
    labels = _labels(y_true)
    scores = np.stack(
        [_scores(prob_a, labels.size, "prob_a"), _scores(prob_b, labels.size, "prob_b")]
    )
    n_pos, n_neg = _require_both_classes(labels)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    _z_for(confidence)  # validates confidence
    positive_index, negative_index = np.flatnonzero(labels), np.flatnonzero(~labels)
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, 500_000 // labels.size)  # bounds memory for large cohorts
    differences = []
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        draw = np.concatenate(
            [
                rng.choice(positive_index, size=(rows, n_pos)),
                rng.choice(negative_index, size=(rows, n_neg)),
            ],
            axis=1,
        )  # positives first in every replicate
        aucs = [_auc_from_ranks(_midranks(model[draw])[:, :n_pos], n_neg) for model in scores]
        differences.append(aucs[0] - aucs[1])
    replicates = np.concatenate(differences)
    ranks = _midranks(scores)
    auc_a, auc_b = (float(_auc_from_ranks(model_ranks[labels], n_neg)) for model_ranks in ranks)
    tail = (1 - confidence) / 2
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": auc_a - auc_b,
        "se": float(replicates.std(ddof=1)) if n_boot > 1 else 0.0,
        "ci_low": float(np.quantile(replicates, tail)),
        "ci_high": float(np.quantile(replicates, 1 - tail)),
        "n_boot": n_boot,
        "confidence": confidence,
    }


def roc_curve_points(
    y_true: ArrayLike, y_score: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest first, starting at (0, 0) with
    threshold +inf; a case is positive when its score is ``>= threshold``. Same points as
    sklearn's ``roc_curve(..., drop_intermediate=False)``."""
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size, "y_score")
    n_pos, n_neg = _require_both_classes(labels)
    order = np.argsort(-scores, kind="stable")
    ordered_scores, ordered_labels = scores[order], labels[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(ordered_scores)), labels.size - 1]
    true_pos = np.cumsum(ordered_labels)[last_of_each_score]
    false_pos = (last_of_each_score + 1) - true_pos
    fpr = np.r_[0.0, false_pos / n_neg]
    tpr = np.r_[0.0, true_pos / n_pos]
    thresholds = np.r_[np.inf, ordered_scores[last_of_each_score]]
    return fpr, tpr, thresholds


def calibration_bins(
    y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10, strategy: str = "uniform"
) -> dict[str, np.ndarray]:
    """Reliability-diagram data: per non-empty bin, mean predicted probability, observed event
    rate and count.

    ``strategy`` is ``"uniform"`` (equal-width bins on [0, 1]) or ``"quantile"`` (equal-count
    bins). Bins are ``(lo, hi]`` with the first also holding its lower edge, as in sklearn's
    ``calibration_curve``, whose two arrays equal ``observed_fraction`` and ``mean_predicted``.
    Returns bin_lower, bin_upper, mean_predicted, observed_fraction and count.
    """
    labels = _labels(y_true)
    probs = _scores(y_prob, labels.size, "y_prob")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError("y_prob must be probabilities in [0, 1]")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(probs, np.linspace(0.0, 1.0, n_bins + 1))
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    bin_index = np.searchsorted(edges[1:-1], probs, side="left")
    count = np.bincount(bin_index, minlength=n_bins)
    filled = count > 0
    predicted_sum = np.bincount(bin_index, weights=probs, minlength=n_bins)
    event_sum = np.bincount(bin_index, weights=labels.astype(np.float64), minlength=n_bins)
    return {
        "bin_lower": edges[:-1][filled],
        "bin_upper": edges[1:][filled],
        "mean_predicted": predicted_sum[filled] / count[filled],
        "observed_fraction": event_sum[filled] / count[filled],
        "count": count[filled],
    }
