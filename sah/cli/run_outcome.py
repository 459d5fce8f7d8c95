"""task=outcome: turn the config into plain settings, run the CV comparison, log one MLflow run.

One run per (model, target). Tabular models are options of the ``model`` group with
``kind: tabular`` (named ``tab_*``); an image network there is refused with one line, so a sweep
over ``model='glob(*)'`` fails those trials alone. Use ``model='glob(tab_*)'``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sah.cli.run_task import objective_values, sweep_tags
from sah.cli.train import CONFIG_DIR
from sah.errors import ConfigError, DataError
from sah.tasks.emr_features import (
    TARGETS,
    FeatureSpec,
    binary_target,
    build_features,
    check_patient_ids,
    merge_image_features,
    static_features,
)
from sah.tasks.outcome import (
    ComparisonSettings,
    CVSettings,
    ImportanceSettings,
    OutcomeResult,
    OutcomeSettings,
    cross_validate_outcome,
    write_tables,
)
from sah.tasks.outcome_plots import save_importance_figure, save_roc_figure
from sah.tasks.tabular_models import TabularModelSpec, make_pipeline
from sah.tracking import flatten, get_client, log_artifact, log_params, resolve_experiment

log = logging.getLogger("sah.train")


def tabular_options() -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("tab_*.yaml"))


def tabular_model(node: DictConfig, choice: str) -> TabularModelSpec:
    """The model config as a spec; anything without ``kind: tabular`` is refused."""
    if node is None or node.get("kind") != "tabular":
        raise ConfigError(
            "model",
            f"{choice!r} is not a tabular model; task=outcome takes one of "
            f"{', '.join(tabular_options())}",
            "e.g. model=tab_gbm, or sweep model='glob(tab_*)'",
        )
    params = OmegaConf.to_container(node.get("params") or {}, resolve=True)
    return TabularModelSpec(str(node.name), dict(params), str(node.get("features", "all")))  # type: ignore[arg-type]


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


def run_outcome(cfg: DictConfig, choices: dict[str, str]) -> float | list[float]:
    """Run the CV comparison for one (model, target), log it, return ``optimized_metric``."""
    spec = tabular_model(cfg.get("model"), choices.get("model", "model"))
    settings = outcome_settings(cfg.task, cfg.seed)
    table, origin, image_columns = load_table(cfg.get("data"), choices.get("data", "data"))
    standard_names = [str(c) for c in cfg.task.standard.features]
    standard = static_features(table, standard_names, origin)
    y = binary_target(table, settings.target, origin)
    if spec.features == "standard":
        features, groups = standard, None
    else:
        features_wanted = feature_spec(cfg.task, image_columns)
        features, groups = build_features(table, features_wanted, origin), features_wanted.groups()
    imputation = str(cfg.task.imputation)
    standard_spec = TabularModelSpec(
        "logistic", {"C": float(cfg.task.standard.get("C", 1.0)), "max_iter": 2000}
    )
    make_pipeline(spec, imputation, settings.seed)  # bad params / imputation fail before the CV
    started = time.perf_counter()
    result = cross_validate_outcome(
        features,
        standard,
        y,
        make_model=lambda: make_pipeline(spec, imputation, settings.seed),
        make_standard=lambda: make_pipeline(standard_spec, imputation, settings.seed),
        settings=settings,
        groups=groups,
        source=origin,
    )
    seconds = time.perf_counter() - started
    label = choices.get("model", spec.name)
    run_id, experiment = log_run(cfg, choices, result, label, origin, seconds)

    print_summary(result, label, settings, run_id, experiment, cfg.tracking.uri, seconds)
    return objective_values(cfg, result.summary)


def run_tags(cfg: DictConfig, choices: dict[str, str], origin: str) -> dict[str, str]:
    tags = {
        "task": "outcome",
        "model": choices.get("model", ""),
        "data": choices.get("data", ""),
        "target": str(cfg.task.target),
        "sah.data_source": origin,
        "sah.output_dir": str(cfg.paths.output_dir),
    }
    return {**tags, **sweep_tags(cfg)}


def log_run(
    cfg: DictConfig,
    choices: dict[str, str],
    result: OutcomeResult,
    label: str,
    origin: str,
    seconds: float,
) -> tuple[str, str]:
    """One MLflow run: params, ``val/...`` metrics, per-fold AUCs as steps, tables, figures."""
    from mlflow.entities import Metric

    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    experiment = cfg.tracking.experiment or cfg.task.experiment_name
    client = get_client(cfg.tracking.uri)
    experiment_id = resolve_experiment(client, experiment, cfg.tracking.artifact_location)
    target = str(cfg.task.target)
    if cfg.tracking.run_id:
        run_id = str(cfg.tracking.run_id)
        for key, value in run_tags(cfg, choices, origin).items():
            client.set_tag(run_id, key, value)
    else:
        run = client.create_run(
            experiment_id, run_name=f"{label}-{target}", tags=run_tags(cfg, choices, origin)
        )
        run_id = run.info.run_id
    try:
        resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        logged = {k: resolved.get(k) for k in ("seed", "optimized_metric", "task", "data", "model")}
        log_params(client, run_id, flatten(logged))
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in result.summary.items()]
        metrics.append(Metric("val/cv_seconds", seconds, now, 0))
        for step, row in enumerate(result.folds.itertuples()):
            metrics.append(Metric("val/fold_auc", float(row.auc), now, step))
            metrics.append(Metric("val/fold_standard_auc", float(row.standard_auc), now, step))
        for start in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[start : start + 500])
        paths = write_tables(result, out_dir)
        paths.append(save_roc_figure(result.predictions, out_dir / "roc.png", label, target))
        if result.importance is not None:
            paths.append(
                save_importance_figure(result.importance, out_dir / "importance.png", label)
            )
        config_file = out_dir / "resolved_config.yaml"
        config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        paths.append(config_file)
        for path in paths:
            log_artifact(client, run_id, path)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id, experiment


def print_summary(
    result: OutcomeResult,
    label: str,
    settings: OutcomeSettings,
    run_id: str,
    experiment: str,
    tracking_uri: str,
    seconds: float,
) -> None:
    from rich.console import Console

    from sah.tracking import ui_command

    s = result.summary
    cv = settings.cv
    console = Console(soft_wrap=True)
    console.print(
        f"[bold]{settings.target}[/bold] ({TARGETS[settings.target].meaning}; "
        f"{int(s['val/n_events'])}/{int(s['val/n_patients'])} events), "
        f"{cv.n_splits}-fold CV x {cv.n_repeats} ({seconds:.0f} s)"
    )
    console.print(
        f"  {label}: AUC [bold green]{s['val/auc']:.3f}[/bold green] ± {s['val/auc_sd']:.3f}   "
        f"standard: {s['val/standard_auc']:.3f} ± {s['val/standard_auc_sd']:.3f}"
    )
    method = settings.comparison.method
    p = f", p {s['val/auc_diff_p']:.2g}" if "val/auc_diff_p" in s else ""
    console.print(
        f"  difference {s['val/auc_diff']:+.3f} ({settings.comparison.confidence:.0%} CI "
        f"{s['val/auc_diff_ci_low']:+.3f} to {s['val/auc_diff_ci_high']:+.3f}, {method}{p})"
    )
    console.print(f"MLflow run id: [bold]{run_id}[/bold]  (experiment '{experiment}')")
    console.print(f"Open the UI:   {ui_command(tracking_uri)}")
