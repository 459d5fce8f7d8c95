"""Tabular classifiers for outcome prediction, each an sklearn Pipeline impute -> scale -> model.

The whole pipeline is fitted on a cross-validation training fold only, so imputation values and
scaling statistics never see the held-out patients. Imputation (``task.imputation``):

- ``median`` / ``mean``: per-feature statistic of the training fold (SimpleImputer);
- ``iterative``: each feature regressed on the others (sklearn's IterativeImputer, BayesianRidge,
  10 rounds), again fitted on the training fold.

Features are then standardised (StandardScaler); trees do not need it and are unaffected by it,
the logistic model, SVM and MLP do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sah.errors import ConfigError

if TYPE_CHECKING:  # sklearn is imported where a pipeline is built: the schema needs none of it
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

MODEL_NAMES = ("logistic", "gbm", "rf", "svm", "mlp")
IMPUTATIONS = ("median", "mean", "iterative")
FEATURE_SETS = ("all", "standard")


@dataclass
class TabularModelSpec:
    """An option of the ``estimator`` config group (conf/estimator/, at ``task.estimator``),
    and that group's schema (``sah.cli.schema`` registers it as ``estimator_schema``).

    ``features`` is ``all`` (the 72-h feature set) or ``standard`` (the standard model's
    admission grades only); ``params`` go to the estimator's constructor. Fields are in the
    order the config prints them; not frozen, since a frozen schema makes its config node
    read-only and a command line could not set ``task.estimator.params.C``.
    """

    name: str
    features: str = "all"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ConfigError(
                "task.estimator.name", f"unknown tabular model {self.name!r}", f"use {MODEL_NAMES}"
            )
        if self.features not in FEATURE_SETS:
            raise ConfigError(
                "task.estimator.features", f"must be one of {FEATURE_SETS}, got {self.features!r}"
            )


def make_imputer(method: str, seed: int) -> BaseEstimator:
    from sklearn.impute import SimpleImputer

    if method in ("median", "mean"):
        return SimpleImputer(strategy=method, keep_empty_features=True)
    if method == "iterative":
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer

        # keep_empty_features=True would write into pandas' read-only arrays (copy-on-write).
        return IterativeImputer(max_iter=10, random_state=seed)
    raise ConfigError("task.imputation", f"unknown method {method!r}", f"use one of {IMPUTATIONS}")


def make_estimator(spec: TabularModelSpec, seed: int) -> BaseEstimator:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    params = dict(spec.params)
    try:
        if spec.name == "logistic":
            return LogisticRegression(**{"C": 1.0, "max_iter": 2000, **params})
        if spec.name == "gbm":
            return GradientBoostingClassifier(random_state=seed, **params)
        if spec.name == "rf":
            return RandomForestClassifier(random_state=seed, n_jobs=1, **params)
        if spec.name == "svm":
            # Platt scaling fitted on internal CV predictions (what SVC(probability=True) did).
            svc = SVC(random_state=seed, **params)
            return CalibratedClassifierCV(svc, method="sigmoid", cv=5, ensemble=False)
        from sah.tasks.outcome.mlp import LightningMLPClassifier

        return LightningMLPClassifier(seed=seed, **params)
    except TypeError as err:
        raise ConfigError("task.estimator.params", f"{spec.name}: {err}") from err


def make_pipeline(spec: TabularModelSpec, imputation: str, seed: int) -> Pipeline:
    """A fresh, unfitted impute -> scale -> model pipeline."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            ("impute", make_imputer(imputation, seed)),
            ("scale", StandardScaler()),
            ("model", make_estimator(spec, seed)),
        ]
    )
