"""The run driver: one path from a composed config to a finished, tracked run, for every task.

A task is a ``TaskRunner`` subclass named by its YAML file (``task.runner``); the driver never
needs editing for a new one. The driver owns what every run shares: the seed, refusing a sweeper
objective read from the test patients, the MLflow run's life (created only once the task has
checked its whole config and loaded its data; FINISHED, FAILED or KILLED at the end), the
params people compare, the resolved config as an artifact, the value returned to a sweeper and
the summary line.

Evaluation protocol (docs/CONVENTIONS.md, "Evaluation"): ``val/*`` metrics come from the
selection set carved out of the training patients and are the only ones that choose anything;
``test/*`` metrics come from the outer fold, computed once after training, and never reach a
sweeper.
"""

from __future__ import annotations

import logging
import math
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from sah.errors import ConfigError
from sah.tracking import get_client, log_artifact, log_params, resolve_experiment
from sah.tracking.runs import CONFIG_ID_TAG, config_id, run_life

log = logging.getLogger("sah.train")

# What a sweeper may be given: selection-set metrics and the model's size, never test/*.
OBJECTIVE_PREFIXES = ("val/",)
OBJECTIVE_NAMES = ("trainable_params",)
# Dataset-input contexts of the sets (the selection set is Lightning's validation set, val/*).
SET_CONTEXTS = {"val": "selection"}


@dataclass
class Evaluation:
    """What a task reports after training: final metrics (``val/*``, ``test/*``, ...), files to
    attach to the run (path, artifact folder or None), and the lines of its summary."""

    metrics: dict[str, float]
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    step: int = 0
    # Per-step values (e.g. one AUC per CV fold), logged with the step as their index.
    series: dict[str, list[float]] = field(default_factory=dict)


class TaskRunner(ABC):
    """How one task builds, fits and evaluates; the driver does the rest.

    ``prepare`` builds everything from the config and loads the data, so every config or data
    error surfaces before a tracked run exists. ``fit`` trains (DDP ranks other than 0 included:
    ``is_worker``); ``evaluate`` scores the selection set and the test patients with the selected
    weights.
    """

    def __init__(self, cfg: DictConfig, choices: dict[str, str]) -> None:
        self.cfg = cfg
        self.choices = choices
        self.out_dir = Path(cfg.paths.output_dir)
        self.is_worker = False

    @abstractmethod
    def prepare(self) -> None: ...

    @abstractmethod
    def fit(self, run_id: str | None, checkpoint: str | None) -> None: ...

    @abstractmethod
    def evaluate(self) -> Evaluation: ...

    def trainable_params(self) -> int:
        return 0

    def splits(self) -> dict[str, list[str]]:
        """Patient ids by set (train, val, test, ...), recorded with the run."""
        return {}

    def cohort(self) -> tuple[Path, str] | None:
        """(manifest file, cohort name) the run read, logged as its MLflow dataset input."""
        return None

    def run_name(self) -> str:
        return f"{self.choices.get('model', 'model')}-fold{self.cfg.fold}"

    def tags(self) -> dict[str, str]:
        return {"model": self.choices.get("model", ""), "data": self.choices.get("data", "")}

    def params(self) -> dict[str, Any]:
        """Task-specific params worth comparing (the driver adds the common ones)."""
        return {}

    def can_resume(self) -> bool:
        return False


def run(cfg: DictConfig, choices: dict[str, str]) -> float | list[float] | None:
    """Run the task of ``cfg`` as one tracked run; return the sweeper's objective value(s)."""
    import lightning as L

    names = objective_names(cfg)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    runner = build_runner(cfg, choices)
    runner.prepare()
    if runner.is_worker:  # a DDP rank other than 0 only trains
        runner.fit(None, None)
        return None

    experiment = str(cfg.tracking.experiment or cfg.task.experiment_name)
    client = get_client(cfg.tracking.uri)
    if cfg.tracking.parent_run_id:
        from sah.tracking.sweep_runs import require_run

        require_run(cfg.tracking.uri, str(cfg.tracking.parent_run_id))
    experiment_id = resolve_experiment(client, experiment, cfg.tracking.artifact_location)
    run_id, checkpoint = open_run(cfg, runner, client, experiment_id)
    started = time.perf_counter()
    with run_life(client, run_id):
        record_run(cfg, runner, client, run_id)
        runner.fit(run_id, checkpoint)
        result = runner.evaluate()
        result.metrics["time/run_seconds"] = time.perf_counter() - started
        log_metrics(client, run_id, result.metrics, result.step, result.series)
        for path, folder in result.artifacts:
            log_artifact(client, run_id, path, folder)
    outcomes = {**result.metrics, "trainable_params": float(runner.trainable_params())}
    value = objective_values(cfg, names, outcomes)
    print_summary(result.lines, run_id, experiment, str(cfg.tracking.uri))
    return value


def build_runner(cfg: DictConfig, choices: dict[str, str]) -> TaskRunner:
    """The task's runner class, named by ``task.runner`` in its YAML file."""
    target = cfg.task.get("runner")
    if not target:
        raise ConfigError(
            "task.runner", f"task {cfg.task.get('name')!r} names no runner class", "see conf/task"
        )
    try:
        cls = get_class(str(target))
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError("task.runner", f"cannot import {target!r} ({err})") from err
    if not issubclass(cls, TaskRunner):
        raise ConfigError("task.runner", f"{target!r} is not a sah.tasks.driver.TaskRunner")
    return cls(cfg, choices)


def objective_names(cfg: DictConfig) -> list[str]:
    """The metric names a sweeper gets back; a ``test/*`` name (or any other than ``val/*`` and
    ``trainable_params``) is refused before anything runs."""
    listed = [str(n) for n in (cfg.get("optimized_metrics") or [])]
    key = "optimized_metrics" if listed else "optimized_metric"
    names = listed or [str(cfg.optimized_metric)]
    for name in names:
        if not (name.startswith(OBJECTIVE_PREFIXES) or name in OBJECTIVE_NAMES):
            raise ConfigError(
                key,
                f"{name!r} cannot be returned to a sweeper: only the selection set's val/* "
                "metrics and trainable_params may choose anything; test/* is the outer fold, "
                "reported once and never optimised",
                f"e.g. {key}={name.replace('test/', 'val/', 1) if '/' in name else 'val/dice'}",
            )
    return names


def open_run(
    cfg: DictConfig, runner: TaskRunner, client: Any, experiment_id: str
) -> tuple[str, str | None]:
    """(run id, checkpoint to resume from): the run to continue with ``resume=true``, the run
    ``tracking.run_id`` names, or a new one."""
    if cfg.get("resume"):
        if not runner.can_resume():
            raise ConfigError("resume", f"task {cfg.task.name!r} has no checkpoints to resume")
        from sah.tracking.resume import find_resume_point

        point = find_resume_point(
            client, experiment_id, runner.run_name(), run_id=cfg.tracking.run_id
        )
        client.update_run(point.run_id, status="RUNNING")
        return point.run_id, str(point.checkpoint) if point.checkpoint else None
    if cfg.tracking.run_id:
        from sah.tracking.sweep_runs import require_run

        require_run(cfg.tracking.uri, str(cfg.tracking.run_id), "tracking.run_id")
        client.update_run(str(cfg.tracking.run_id), status="RUNNING")
        return str(cfg.tracking.run_id), None
    # Its tags come with the rest of the record (record_run), for new and reopened runs alike.
    run = client.create_run(experiment_id, run_name=runner.run_name())
    return run.info.run_id, None


def sweep_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags that place a run in its sweep: the parent run, and the Optuna trial it reports to."""
    tags: dict[str, str] = {}
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = str(cfg.tracking.parent_run_id)
    if cfg.optuna.trial_number is not None:
        tags["optuna.trial_number"] = str(cfg.optuna.trial_number)
        tags["optuna.study_name"] = str(cfg.optuna.study_name)
    return tags


def common_params(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """The params every task shares: which task, data and model, the split, the start point."""
    return {
        "task": cfg.task.name,
        "data": choices.get("data", ""),
        "model": choices.get("model", ""),
        "fold": cfg.fold,
        "n_folds": OmegaConf.select(cfg, "data.n_folds", default=None),
        "seed": cfg.seed,
        "selection_fraction": OmegaConf.select(cfg, "data.selection_fraction", default=None),
        "init": "pretrained" if cfg.get("init_from") else "scratch",
        "init_from": cfg.get("init_from"),
    }


def record_run(cfg: DictConfig, runner: TaskRunner, client: Any, run_id: str) -> None:
    """Tags, the compared params, the resolved config and the patients of each set."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    for key, value in {**runner.tags(), **sweep_tags(cfg)}.items():
        client.set_tag(run_id, key, value)
    client.set_tag(run_id, CONFIG_ID_TAG, config_id(resolved))
    client.set_tag(run_id, "sah.output_dir", str(runner.out_dir))
    params = {**common_params(cfg, runner.choices), **runner.params()}
    params["trainable_params"] = runner.trainable_params()
    log_params(client, run_id, {k: v for k, v in params.items() if v is not None})
    runner.out_dir.mkdir(parents=True, exist_ok=True)
    config_file = runner.out_dir / "resolved_config.yaml"
    config_file.write_text(redacted(OmegaConf.to_yaml(cfg, resolve=True), cfg))
    log_artifact(client, run_id, config_file)
    splits = runner.splits()
    if splits:
        split_file = runner.out_dir / "patients_by_set.csv"
        rows = [f"{pid},{name}" for name, ids in splits.items() for pid in ids]
        split_file.write_text("patient_id,set\n" + "\n".join(rows) + "\n")
        log_artifact(client, run_id, split_file)
    cohort = runner.cohort()
    if cohort is not None:
        from sah.tracking.datasets import log_cohort

        # The MLflow runs table's Dataset column: the manifest, and who was in which set.
        contexts = {SET_CONTEXTS.get(name, name): ids for name, ids in splits.items()}
        log_cohort(client, run_id, cohort[0], contexts, name=cohort[1])


def redacted(text: str, cfg: DictConfig) -> str:
    """The config text without the password of a study's database URL."""
    storage = OmegaConf.select(cfg, "optuna.storage", default=None)
    if not storage:
        return text
    from sah.tracking.studies import display_url

    return text.replace(str(storage), display_url(str(storage)))


def log_metrics(
    client: Any,
    run_id: str,
    values: dict[str, float],
    step: int,
    series: dict[str, list[float]] | None = None,
) -> None:
    """Final metrics at the last training step, so they are what the run shows as latest, and
    each series with its index as the step; values that do not exist (NaN) are left out."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [(k, v, step) for k, v in values.items()]
    entries += [(k, v, i) for k, vs in (series or {}).items() for i, v in enumerate(vs)]
    metrics = [
        Metric(metric_name(k), float(v), now, s) for k, v, s in entries if not math.isnan(float(v))
    ]
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start : start + 500])


def metric_name(name: str) -> str:
    """MLflow allows only alphanumerics and _-. :/ in metric names ("225+" -> "225plus")."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("+", "plus"))


def objective_values(
    cfg: DictConfig, names: list[str], outcomes: dict[str, float]
) -> float | list[float]:
    """``optimized_metric``, or one value per name of ``optimized_metrics`` (Pareto studies)."""
    key = "optimized_metrics" if cfg.get("optimized_metrics") else "optimized_metric"
    missing = [name for name in names if outcomes.get(name) is None]
    if missing:
        offered = sorted(n for n in outcomes if n.startswith(OBJECTIVE_PREFIXES))
        raise ConfigError(
            key,
            f"{', '.join(map(repr, missing))} was not computed",
            f"use one of {[*offered, *OBJECTIVE_NAMES]}",
        )
    values = [float(outcomes[name]) for name in names]
    return values if key == "optimized_metrics" else values[0]


def print_summary(lines: list[str], run_id: str, experiment: str, tracking_uri: str) -> None:
    from rich.console import Console

    from sah.tracking import ui_command

    console = Console(soft_wrap=True)  # paths must stay on one line to copy them
    for line in lines:
        console.print(line)
    console.print(f"MLflow run id: [bold]{run_id}[/bold]  (experiment '{experiment}')")
    console.print(f"Open the UI:   {ui_command(tracking_uri)}")
