"""task=outcome for the run driver: a tabular model against the standard model on the same
repeated CV folds, one run per (model, target).

The tabular model is an option of the ``estimator`` group (conf/estimator/, composed by
conf/task/outcome.yaml only, at ``task.estimator``): no other task can compose one, and this task
has no network (``model`` is null; a ``model=...`` given anyway is refused with one line). Sweep
``-m estimator='glob(*)'``. MLflow keeps the spelling of the runs from before the group existed:
tag and param ``model`` and the run name say ``tab_<estimator>``. ``val/auc`` comes from an
inner CV inside each fold's training patients (``sah.tasks.outcome.cross_validation``): a
sweeper never sees a held-out patient.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sah.errors import ConfigError, DataError
from sah.tasks.driver import Evaluation, TaskRunner
from sah.tasks.outcome.cross_validation import (
    ComparisonSettings,
    CVSettings,
    ImportanceSettings,
    OutcomeResult,
    OutcomeSettings,
    cross_validate_outcome,
    write_tables,
)
from sah.tasks.outcome.estimators import TabularModelSpec, make_pipeline
from sah.tasks.outcome.features import (
    TARGETS,
    FeatureSpec,
    binary_target,
    build_features,
    check_patient_ids,
    merge_image_features,
    static_features,
)
from sah.tasks.outcome.plots import save_importance_figure, save_roc_figure

log = logging.getLogger("sah.train")


class OutcomeRunner(TaskRunner):
    def prepare(self) -> None:
        cfg = self.cfg
        refuse_network(cfg.get("model"), self.choices.get("model", "model"))
        self.spec = tabular_model(cfg.task.get("estimator"))
        self.settings = outcome_settings(cfg.task, cfg.seed)
        self.table, self.origin, image_columns = load_table(
            cfg.get("data"), self.choices.get("data", "data")
        )
        standard_names = [str(c) for c in cfg.task.standard.features]
        self.standard = static_features(self.table, standard_names, self.origin)
        self.y = binary_target(self.table, self.settings.target, self.origin)
        if self.spec.features == "standard":
            self.features, self.groups = self.standard, None
        else:
            wanted = feature_spec(cfg.task, image_columns)
            self.features = build_features(self.table, wanted, self.origin)
            self.groups = wanted.groups()
        self.imputation = str(cfg.task.imputation)
        self.standard_spec = TabularModelSpec(
            "logistic", params={"C": float(cfg.task.standard.get("C", 1.0)), "max_iter": 2000}
        )
        # Bad params or imputation fail here, before the run exists.
        make_pipeline(self.spec, self.imputation, self.settings.seed)
        self.label = model_label(self.choices, self.spec)

    def run_name(self) -> str:
        name = f"{self.label}-{self.settings.target}"
        trial = self.cfg.optuna.trial_number
        return name if trial is None else f"{name}-t{trial}"

    def tags(self) -> dict[str, str]:
        return {
            "task": "outcome",
            "model": self.label,
            "data": self.choices.get("data", ""),
            "target": str(self.cfg.task.target),
            "seed": str(self.cfg.seed),
            "sah.data_source": self.origin,
        }

    def params(self) -> dict[str, Any]:
        cv = self.settings.cv
        params: dict[str, Any] = {
            "model": self.label,  # in place of the driver's (the model group is empty)
            "target": self.settings.target,
            "estimator": self.spec.name,
            "features": self.spec.features,
            "n_features": self.features.shape[1],
            "imputation": self.imputation,
            "cv": f"{cv.n_splits}-fold x {cv.n_repeats}, inner {cv.inner_splits}-fold",
            "comparison": self.settings.comparison.method,
            "cohort": self.origin,
            "n_patients": int(self.y.size),
        }
        for key, value in sorted(self.spec.params.items())[:10]:
            params[f"estimator.{key}"] = value
        return params

    def splits(self) -> dict[str, list[str]]:
        """Every patient with a known outcome is in the CV (each held out once per repeat)."""
        return {"cv": [str(p) for p in self.y.index]}

    def cohort(self) -> tuple[Path, str] | None:
        if self.cfg.data.get("source") != "table":
            return None  # the synthetic EMR cohort is generated in memory, with no file
        return Path(self.origin), Path(self.origin).name

    def fit(self, run_id: str | None, checkpoint: str | None) -> None:
        started = time.perf_counter()
        self.result: OutcomeResult = cross_validate_outcome(
            self.features,
            self.standard,
            self.y,
            make_model=lambda: make_pipeline(self.spec, self.imputation, self.settings.seed),
            make_standard=lambda: make_pipeline(
                self.standard_spec, self.imputation, self.settings.seed
            ),
            settings=self.settings,
            groups=self.groups,
            source=self.origin,
        )
        self.seconds = time.perf_counter() - started

    def evaluate(self) -> Evaluation:
        result, out = self.result, self.out_dir
        target = self.settings.target
        paths = write_tables(result, out)
        paths.append(save_roc_figure(result.predictions, out / "roc.png", self.label, target))
        if result.importance is not None:
            paths.append(
                save_importance_figure(result.importance, out / "importance.png", self.label)
            )
        metrics = {**result.summary, "time/cv_seconds": self.seconds}
        series = {
            "test/fold_auc": [float(v) for v in result.folds["auc"]],
            "test/fold_standard_auc": [float(v) for v in result.folds["standard_auc"]],
            "val/fold_inner_auc": [float(v) for v in result.folds["inner_auc"]],
        }
        lines = summary_lines(result, self.label, self.settings, self.seconds)
        return Evaluation(metrics, [(p, None) for p in paths], lines, 0, series)


def estimator_options() -> list[str]:
    """The options of the estimator group (conf/estimator/*.yaml)."""
    conf = Path(__file__).resolve().parents[3] / "conf" / "estimator"
    return sorted(p.stem for p in conf.glob("*.yaml"))


def refuse_network(node: DictConfig | None, choice: str) -> None:
    """task=outcome empties the model group; a network given anyway is refused in one line."""
    if node is not None:
        raise ConfigError(
            "model",
            f"task=outcome takes no network ({choice!r}); its model is an estimator, one of "
            f"{', '.join(estimator_options())}",
            "drop model=...; choose e.g. estimator=gbm, or sweep -m estimator='glob(*)'",
        )


def tabular_model(node: DictConfig | None) -> TabularModelSpec:
    """``task.estimator`` (an option of the estimator group) as a spec."""
    if node is None:
        raise ConfigError(
            "estimator",
            "is not set",
            f"choose one of {', '.join(estimator_options())}, e.g. estimator=gbm",
        )
    if OmegaConf.get_type(node) is TabularModelSpec:
        return OmegaConf.to_object(node)  # type: ignore[return-value]
    # A config composed without sah's schema (a hand-built DictConfig).
    params = OmegaConf.to_container(node.get("params") or {}, resolve=True)
    return TabularModelSpec(str(node.name), str(node.get("features", "all")), dict(params))  # type: ignore[arg-type]


def model_label(choices: dict[str, str], spec: TabularModelSpec) -> str:
    """``tab_<estimator option>``: the name outcome runs had in MLflow (tag and param ``model``,
    run name) when the estimators were options ``tab_*`` of the model group."""
    return f"tab_{choices.get('estimator') or spec.name}"


def outcome_settings(task: DictConfig, seed: int) -> OutcomeSettings:
    def plain(node: DictConfig | None) -> dict[str, Any]:
        return dict(OmegaConf.to_container(node, resolve=True)) if node else {}  # type: ignore[arg-type]

    return OutcomeSettings(
        target=str(task.target),
        cv=CVSettings(**plain(task.get("cv"))),
        comparison=ComparisonSettings(**plain(task.get("comparison"))),
        importance=ImportanceSettings(**plain(task.get("importance"))),
        seed=int(seed),
    )


def feature_spec(task: DictConfig, extra_static: list[str]) -> FeatureSpec:
    features = task.features
    static = [*features.static, *(c for c in extra_static if c not in features.static)]
    return FeatureSpec(
        static=tuple(static),
        daily=tuple(features.daily),
        days=tuple(int(d) for d in features.days),
        summaries=tuple(features.summaries),
    )


def read_csv(path: str | Path, key: str) -> pd.DataFrame:
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(key, f"no file at {file}", "give the path of a CSV file")
    try:
        return pd.read_csv(file)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(file, f"not a readable CSV ({err})") from err


def load_table(data: DictConfig, data_choice: str) -> tuple[pd.DataFrame, str, list[str]]:
    """(clinical table, where it came from, image-feature columns joined to it)."""
    source = data.get("source") if data is not None else None
    if source == "synthetic_emr":
        from sah.data.synthetic.clinical import synthetic_emr_cohort

        n, seed = int(data.n_patients), int(data.seed)
        table, origin = synthetic_emr_cohort(n, seed), f"synthetic EMR cohort (n={n}, seed={seed})"
    elif source == "table":
        if OmegaConf.is_missing(data, "table"):
            raise ConfigError("data.table", "is not set", "data.table=/path/to/clinical.csv")
        table, origin = read_csv(data.table, "data.table"), str(data.table)
    else:
        raise ConfigError(
            "data",
            f"{data_choice!r} is not a clinical table; task=outcome takes data=emr_synthetic or "
            "data=emr_table",
        )
    check_patient_ids(table, origin)
    image_columns: list[str] = []
    if data.get("image_features"):
        path = str(data.image_features)
        table, image_columns = merge_image_features(
            table, read_csv(path, "data.image_features"), path
        )
    return table, origin, image_columns


def summary_lines(
    result: OutcomeResult, label: str, settings: OutcomeSettings, seconds: float
) -> list[str]:
    s = result.summary
    cv = settings.cv
    method = settings.comparison.method
    p = f", p {s['test/auc_diff_p']:.2g}" if "test/auc_diff_p" in s else ""
    return [
        f"[bold]{settings.target}[/bold] ({TARGETS[settings.target].meaning}; "
        f"{int(s['test/n_events'])}/{int(s['test/n_patients'])} events), "
        f"{cv.n_splits}-fold CV x {cv.n_repeats} ({seconds:.0f} s)",
        f"  {label}: test AUC (held-out folds) [bold green]{s['test/auc']:.3f}[/bold green] "
        f"± {s['test/auc_sd']:.3f}   standard: {s['test/standard_auc']:.3f} "
        f"± {s['test/standard_auc_sd']:.3f}   (val AUC, inner CV: {s['val/auc']:.3f})",
        f"  difference {s['test/auc_diff']:+.3f} ({settings.comparison.confidence:.0%} CI "
        f"{s['test/auc_diff_ci_low']:+.3f} to {s['test/auc_diff_ci_high']:+.3f}, {method}{p})",
    ]
