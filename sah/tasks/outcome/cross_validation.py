"""Outcome prediction from the first 72 hours (study 4, Savarraj et al. 2021): one tabular model
against the standard model, on the same cross-validation folds.

Protocol (each step is what a reader of the logged numbers needs to know):

- Folds: ``RepeatedStratifiedKFold(n_splits, n_repeats, random_state=seed)``, stratified on the
  binary target. The model and the standard model see exactly the same folds.
- Per fold, each pipeline (impute -> scale -> classifier, ``sah.tasks.outcome.estimators``) is
  fitted on the training patients only and predicts the held-out ones. ``test/auc`` is the mean
  ROC AUC over all ``n_splits x n_repeats`` held-out folds, ``test/auc_sd`` their SD. Held-out
  numbers are reported only, never returned to a sweeper.
- Nested selection: inside each fold's training patients, an inner stratified
  ``inner_splits``-fold CV scores the model without touching the held-out patients;
  ``val/auc`` is the mean of these inner AUCs over the outer folds. It is what a sweeper over
  models or their params optimises, so a choice of hyperparameters never reads a held-out
  patient.
- AUC difference against the standard model: within each repeat every patient is predicted
  exactly once, so the held-out predictions are pooled per repeat and compared with DeLong's
  test for paired AUCs (or a stratified bootstrap, ``task.comparison.method``). The reported
  difference and CI bounds are the means over repeats, the p-value their median; each repeat's
  values are in ``comparison.csv``. (Pooled AUCs can differ slightly from the fold mean because
  folds' score scales differ.)
- Permutation importance: on each held-out fold of the first repeat, the drop in AUC when one
  variable's features (all day-0-3 summaries of a lab together, ``by: variable``) or one
  feature (``by: feature``) are shuffled among the held-out patients; mean and SD over folds
  and shuffles. The model is never refitted, and never sees the fold it is scored on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

from sah.errors import ConfigError, DataError
from sah.metrics import (
    binary_classification_metrics,
    bootstrap_auc_difference,
    delong_auc_test,
    roc_auc,
)

COMPARISON_METHODS = ("delong", "bootstrap")
IMPORTANCE_BY = ("variable", "feature")
ModelFactory = Callable[[], Any]  # a fresh unfitted estimator with fit / predict_proba


@dataclass(frozen=True)
class CVSettings:
    n_splits: int = 5
    n_repeats: int = 3
    inner_splits: int = 3

    def __post_init__(self) -> None:
        if int(self.inner_splits) < 2:
            raise ConfigError(
                "task.cv.inner_splits", f"must be at least 2, got {self.inner_splits}"
            )
        if int(self.n_splits) < 2:
            raise ConfigError("task.cv.n_splits", f"must be at least 2, got {self.n_splits}")
        if int(self.n_repeats) < 1:
            raise ConfigError("task.cv.n_repeats", f"must be at least 1, got {self.n_repeats}")


@dataclass(frozen=True)
class ComparisonSettings:
    method: str = "delong"
    confidence: float = 0.95
    n_boot: int = 2000

    def __post_init__(self) -> None:
        if self.method not in COMPARISON_METHODS:
            raise ConfigError(
                "task.comparison.method", f"unknown {self.method!r}", f"use {COMPARISON_METHODS}"
            )
        if not 0 < float(self.confidence) < 1:
            raise ConfigError(
                "task.comparison.confidence", f"must be in (0, 1), got {self.confidence}"
            )


@dataclass(frozen=True)
class ImportanceSettings:
    enabled: bool = True
    by: str = "variable"
    n_permutations: int = 5

    def __post_init__(self) -> None:
        if self.by not in IMPORTANCE_BY:
            raise ConfigError("task.importance.by", f"unknown {self.by!r}", f"use {IMPORTANCE_BY}")
        if int(self.n_permutations) < 1:
            raise ConfigError("task.importance.n_permutations", "must be at least 1")


@dataclass(frozen=True)
class OutcomeSettings:
    target: str
    cv: CVSettings = field(default_factory=CVSettings)
    comparison: ComparisonSettings = field(default_factory=ComparisonSettings)
    importance: ImportanceSettings = field(default_factory=ImportanceSettings)
    seed: int = 0


@dataclass
class OutcomeResult:
    """Everything a run reports: per-fold rows, held-out predictions, per-repeat comparisons,
    importance (None when disabled) and the summary metrics (``val/*`` from the inner CV inside
    the training folds, ``test/*`` from the held-out folds)."""

    folds: pd.DataFrame
    predictions: pd.DataFrame
    comparison: pd.DataFrame
    importance: pd.DataFrame | None
    summary: dict[str, float]


@dataclass(frozen=True)
class Fold:
    repeat: int
    fold: int
    train: np.ndarray  # positions into the cohort
    test: np.ndarray


def check_events(y: pd.Series, n_splits: int, target: str, source: str | Path) -> None:
    """Both classes present, and each at least ``n_splits`` times (one per held-out fold)."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        only = 1 if n_pos else 0
        raise DataError(
            source,
            f"target {target!r}: all {len(y)} patients with a known outcome are {target}={only}",
            "a model needs both outcome classes",
        )
    if min(n_pos, n_neg) < n_splits:
        raise DataError(
            source,
            f"target {target!r} has {n_pos} events and {n_neg} non-events; {n_splits}-fold CV "
            f"needs at least {n_splits} of each",
            "lower task.cv.n_splits or use a larger cohort",
        )


def stratified_folds(y: np.ndarray, cv: CVSettings, seed: int) -> list[Fold]:
    splitter = RepeatedStratifiedKFold(
        n_splits=int(cv.n_splits), n_repeats=int(cv.n_repeats), random_state=seed
    )
    return [
        Fold(k // cv.n_splits, k % cv.n_splits, train, test)
        for k, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y))
    ]


def check_fold(y: np.ndarray, fold: Fold, target: str, source: str | Path) -> None:
    """Both outcome classes in the fold's training and held-out patients."""
    for part, rows in (("training", fold.train), ("held-out", fold.test)):
        classes = np.unique(y[rows])
        if classes.size < 2:
            raise DataError(
                source,
                f"repeat {fold.repeat} fold {fold.fold}: the {part} patients ({rows.size}) all "
                f"have {target}={int(classes[0]) if classes.size else '?'}",
                "lower task.cv.n_splits or use a larger cohort",
            )


def _fitted(
    model: Any, features: pd.DataFrame, y: np.ndarray, fold: Fold, what: str, source: str | Path
) -> Any:
    """Fit, turning an estimator's refusal (e.g. too few events for the SVM's internal
    calibration folds) into an error that names the fold."""
    try:
        return model.fit(features, y)
    except ValueError as err:
        raise DataError(
            source,
            f"repeat {fold.repeat} fold {fold.fold}: the {what} could not be fitted on "
            f"{len(y)} patients with {int(y.sum())} events ({err})",
            "lower task.cv.n_splits or use a larger cohort",
        ) from err


def inner_cv_auc(
    make_model: ModelFactory,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    n_splits: int,
    seed: int,
    fold: Fold,
    source: str | Path,
) -> float:
    """Mean AUC of an inner stratified CV on one fold's training patients only."""
    if min(int(y_train.sum()), int(len(y_train) - y_train.sum())) < n_splits:
        raise DataError(
            source,
            f"repeat {fold.repeat} fold {fold.fold}: {int(y_train.sum())} events among "
            f"{len(y_train)} training patients are too few for a {n_splits}-fold inner CV",
            "lower task.cv.inner_splits or task.cv.n_splits, or use a larger cohort",
        )
    inner = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    aucs = []
    for train, held in inner.split(np.zeros(len(y_train)), y_train):
        model = _fitted(make_model(), X_train.iloc[train], y_train[train], fold, "model", source)
        aucs.append(roc_auc(y_train[held], _positive_probability(model, X_train.iloc[held])))
    return float(np.mean(aucs))


def _positive_probability(model: Any, features: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(features), dtype=np.float64)[:, 1]


def permutation_drops(
    model: Any,
    features: pd.DataFrame,
    y: np.ndarray,
    groups: Mapping[str, Sequence[str]],
    n_permutations: int,
    rng: np.random.Generator,
) -> dict[str, list[float]]:
    """AUC drop when each group's columns are shuffled together among these patients."""
    baseline = roc_auc(y, _positive_probability(model, features))
    drops: dict[str, list[float]] = {}
    for name, columns in groups.items():
        drops[name] = []
        for _ in range(n_permutations):
            shuffled = features.copy()
            order = rng.permutation(len(features))
            shuffled[list(columns)] = features[list(columns)].to_numpy()[order]
            drops[name].append(baseline - roc_auc(y, _positive_probability(model, shuffled)))
    return drops


def _fold_row(fold: Fold, y_test: np.ndarray, prob: np.ndarray, standard: np.ndarray) -> dict:
    model_metrics = binary_classification_metrics(y_test, prob)
    standard_metrics = binary_classification_metrics(y_test, standard)
    return {
        "repeat": fold.repeat,
        "fold": fold.fold,
        "n_train": fold.train.size,
        "n_test": fold.test.size,
        "n_events_test": int(y_test.sum()),
        "auc": model_metrics["roc_auc"],
        "standard_auc": standard_metrics["roc_auc"],
        "auc_difference": model_metrics["roc_auc"] - standard_metrics["roc_auc"],
        "brier": model_metrics["brier"],
        "standard_brier": standard_metrics["brier"],
    }


def compare_pooled(
    predictions: pd.DataFrame, settings: ComparisonSettings, seed: int
) -> pd.DataFrame:
    """Per repeat: model vs standard AUC on the pooled held-out predictions, with the CI."""
    rows = []
    for repeat, part in predictions.groupby("repeat", sort=True):
        y, prob, standard = (part[c].to_numpy() for c in ("y", "prob", "standard_prob"))
        if settings.method == "delong":
            test = delong_auc_test(y, prob, standard, confidence=settings.confidence)
            p_value = test["p_value"]
        else:
            test = bootstrap_auc_difference(
                y, prob, standard, settings.n_boot, seed + int(repeat), settings.confidence
            )
            p_value = float("nan")
        rows.append(
            {
                "repeat": int(repeat),
                "auc": test["auc_a"],
                "standard_auc": test["auc_b"],
                "difference": test["difference"],
                "ci_low": test["ci_low"],
                "ci_high": test["ci_high"],
                "p_value": p_value,
                "method": settings.method,
                "confidence": settings.confidence,
            }
        )
    return pd.DataFrame(rows)


def cross_validate_outcome(
    features: pd.DataFrame,
    standard_features: pd.DataFrame,
    y: pd.Series,
    make_model: ModelFactory,
    make_standard: ModelFactory,
    settings: OutcomeSettings,
    groups: Mapping[str, Sequence[str]] | None = None,
    source: str | Path = "clinical table",
    folds: Sequence[Fold] | None = None,
) -> OutcomeResult:
    """Repeated stratified CV of ``make_model()`` against ``make_standard()`` (module docstring).

    ``features`` and ``standard_features`` are indexed by patient_id; only patients in ``y``'s
    index (those with a known outcome) are used. ``groups`` maps an importance name to its
    feature columns (default: one per column). ``folds`` overrides the CV splits (tests).
    """
    ids = y.index
    X = features.loc[ids]
    X_standard = standard_features.loc[ids]
    labels = y.to_numpy().astype(np.int64)
    check_events(y, settings.cv.n_splits, settings.target, source)
    splits = (
        list(folds) if folds is not None else stratified_folds(labels, settings.cv, settings.seed)
    )
    if settings.importance.by == "feature" or groups is None:
        groups = {c: [c] for c in X.columns}
    rng = np.random.default_rng(settings.seed)

    rows: list[dict] = []
    predictions: list[pd.DataFrame] = []
    drops: dict[str, list[float]] = {}
    for fold in splits:
        check_fold(labels, fold, settings.target, source)
        y_train, y_test = labels[fold.train], labels[fold.test]
        model = _fitted(make_model(), X.iloc[fold.train], y_train, fold, "model", source)
        standard = _fitted(
            make_standard(), X_standard.iloc[fold.train], y_train, fold, "standard model", source
        )
        prob = _positive_probability(model, X.iloc[fold.test])
        standard_prob = _positive_probability(standard, X_standard.iloc[fold.test])
        inner_seed = settings.seed + 1000 * fold.repeat + fold.fold
        inner_auc = inner_cv_auc(
            make_model,
            X.iloc[fold.train],
            y_train,
            int(settings.cv.inner_splits),
            inner_seed,
            fold,
            source,
        )
        rows.append({**_fold_row(fold, y_test, prob, standard_prob), "inner_auc": inner_auc})
        predictions.append(
            pd.DataFrame(
                {
                    "patient_id": ids[fold.test],
                    "repeat": fold.repeat,
                    "fold": fold.fold,
                    "y": y_test,
                    "prob": prob,
                    "standard_prob": standard_prob,
                }
            )
        )
        if settings.importance.enabled and fold.repeat == 0:
            fold_drops = permutation_drops(
                model, X.iloc[fold.test], y_test, groups, settings.importance.n_permutations, rng
            )
            for name, values in fold_drops.items():
                drops.setdefault(name, []).extend(values)

    fold_table = pd.DataFrame(rows)
    pooled = pd.concat(predictions, ignore_index=True)
    comparison = compare_pooled(pooled, settings.comparison, settings.seed)
    importance = None
    if drops:
        importance = (
            pd.DataFrame(
                {
                    "feature": list(drops),
                    "auc_drop_mean": [float(np.mean(v)) for v in drops.values()],
                    "auc_drop_sd": [
                        float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in drops.values()
                    ],
                    "n": [len(v) for v in drops.values()],
                }
            )
            .sort_values("auc_drop_mean", ascending=False)
            .reset_index(drop=True)
        )
    return OutcomeResult(
        fold_table, pooled, comparison, importance, summarise(fold_table, comparison, labels)
    )


def summarise(
    folds: pd.DataFrame, comparison: pd.DataFrame, labels: np.ndarray
) -> dict[str, float]:
    """A run's metrics (see the module docstring for how each is computed): ``val/*`` from the
    inner CV inside the training folds, ``test/*`` from the held-out folds."""
    sd = lambda column: float(folds[column].std(ddof=1)) if len(folds) > 1 else 0.0  # noqa: E731
    summary = {
        "val/auc": float(folds["inner_auc"].mean()),
        "val/auc_sd": sd("inner_auc"),
        "test/auc": float(folds["auc"].mean()),
        "test/auc_sd": sd("auc"),
        "test/standard_auc": float(folds["standard_auc"].mean()),
        "test/standard_auc_sd": sd("standard_auc"),
        "test/brier": float(folds["brier"].mean()),
        "test/standard_brier": float(folds["standard_brier"].mean()),
        "test/auc_pooled": float(comparison["auc"].mean()),
        "test/standard_auc_pooled": float(comparison["standard_auc"].mean()),
        "test/auc_diff": float(comparison["difference"].mean()),
        "test/auc_diff_ci_low": float(comparison["ci_low"].mean()),
        "test/auc_diff_ci_high": float(comparison["ci_high"].mean()),
        "test/n_patients": float(labels.size),
        "test/n_events": float(labels.sum()),
    }
    p_values = comparison["p_value"].dropna()
    if len(p_values):
        summary["test/auc_diff_p"] = float(p_values.median())
    return summary


def write_tables(result: OutcomeResult, out_dir: str | Path) -> list[Path]:
    """folds.csv, oof_predictions.csv, comparison.csv and importance.csv in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "folds.csv": result.folds,
        "oof_predictions.csv": result.predictions,
        "comparison.csv": result.comparison,
    }
    if result.importance is not None:
        tables["importance.csv"] = result.importance
    paths = []
    for name, table in tables.items():
        table.to_csv(out / name, index=False, float_format="%.6g")
        paths.append(out / name)
    return paths
