"""A study's runs (one row each) and their per-patient test metrics (one row per run x patient).

Each sah run logs ``per_patient_metrics.csv`` (patient_id, set, dice, iou, ..., volume_true_ml),
where ``set`` says which patients a row holds: ``val`` (the selection set carved out of the
training folds, which chose the epoch) or ``test`` (the outer fold, scored once after training).
Only ``test`` rows are read. A run whose file has no ``set`` column was scored on the patients
that chose its epoch, so it is left out with a warning naming it.

Runs are tagged with model, method, rank, target, fold, seed, init (``scratch`` or
``pretrained``: full training from scratch is its own baseline, ``scratch``) and
``sah.config_id``, the digest of the resolved config without fold, seed and path/tracking keys.
Runs that did not finish, pruned or failed trials, sweep parents and earlier reports are left
out.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sah.errors import ConfigError
from sah.report.configs import config_params, fallback_config_id

PER_PATIENT = "per_patient_metrics.csv"
SET_COLUMN = "set"
TEST_SET = "test"
CONFIG_TAG = "sah.config_id"
# Methods whose rank (and, for `none`, target) means nothing: shown as "-" and not split on.
RANKLESS = ("none", "full", "scratch")
DESCRIPTORS = ["model", "method", "target", "rank"]
N_FOLDS_KEYS = ("data.n_folds", "n_folds")


@dataclass(frozen=True)
class Source:
    """Where the study's runs are: an experiment, or the child runs of one sweep."""

    tracking_uri: str
    experiment: str | None = None
    parent_run_id: str | None = None


@dataclass
class Collected:
    """The runs that have test rows (``runs``), their test rows (``patients``) and why any
    other finished run was left out (``warnings``)."""

    runs: pd.DataFrame
    patients: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _experiment_id(client: MlflowClient, source: Source) -> str:
    if source.parent_run_id:
        from mlflow.exceptions import MlflowException

        try:
            return client.get_run(source.parent_run_id).info.experiment_id
        except MlflowException as err:
            raise ConfigError(
                "--parent-run", f"no MLflow run {source.parent_run_id!r} in {source.tracking_uri}"
            ) from err
    found = client.get_experiment_by_name(source.experiment or "")
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise ConfigError(
            "--experiment",
            f"no experiment {source.experiment!r} in {source.tracking_uri}",
            f"use one of {names}",
        )
    return found.experiment_id


def study_runs(client: MlflowClient, source: Source) -> list[Run]:
    """Finished job runs of the experiment, or of the sweep when a parent run is given."""
    experiment_id = _experiment_id(client, source)
    query = "attributes.status = 'FINISHED'"
    if source.parent_run_id:
        query += f" and tags.`mlflow.parentRunId` = '{source.parent_run_id}'"
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return [
        run
        for run in runs
        if run.data.tags.get("sah.kind") not in ("sweep", "report")
        and run.data.tags.get("optuna.state", "COMPLETE") == "COMPLETE"
    ]


def _n_folds(run: Run) -> float:
    """The data's number of outer folds, as the run logged it (NaN when it did not)."""
    for key in N_FOLDS_KEYS:
        value = run.data.params.get(key, run.data.tags.get(key))
        if value not in (None, "", "None"):
            return float(value)
    return math.nan


def describe(run: Run) -> dict[str, object]:
    """What the tables show of a run: its configuration, fold and seed."""
    tags, params = run.data.tags, run.data.params
    method = tags.get("method") or "none"
    init = tags.get("init", "")
    if method == "full" and init == "scratch":
        method = "scratch"  # every layer trained from random weights: the study's third baseline
    rankless = method in RANKLESS
    trainable = params.get("trainable_params")
    descriptors = {
        "model": tags.get("model", ""),
        "method": method,
        "target": "-" if method == "none" else tags.get("target") or "-",
        "rank": "-" if rankless else tags.get("rank") or "-",
        "init": init,
    }
    own = config_params(params)
    tagged = tags.get(CONFIG_TAG)
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "config": tagged or fallback_config_id(own, descriptors),
        "config_from": "tag" if tagged else "params",
        **descriptors,
        "fold": tags.get("fold", params.get("fold", "")),
        "seed": tags.get("seed", params.get("seed", "")),
        "n_folds": _n_folds(run),
        "trainable_params": float(trainable) if trainable not in (None, "") else math.nan,
        "params": own,
        "tags": dict(tags),
        "metrics": dict(run.data.metrics),
    }


def _test_rows(local: str, run: Run) -> tuple[pd.DataFrame | None, str | None]:
    """The file's ``set == test`` rows, or None and why the run is left out."""
    frame = pd.read_csv(local, dtype={"patient_id": str, SET_COLUMN: str})
    name = f"run {run.info.run_name!r} ({run.info.run_id})"
    if SET_COLUMN not in frame.columns:
        return None, (
            f"{name} left out: its {PER_PATIENT} has no '{SET_COLUMN}' column, so it was scored "
            "on the patients that chose its epoch; rerun it with the current sah-train"
        )
    test = frame[frame[SET_COLUMN] == TEST_SET].drop(columns=SET_COLUMN)
    if test.empty:
        return None, f"{name} left out: its {PER_PATIENT} has no '{SET_COLUMN} == test' rows"
    return test.reset_index(drop=True), None


def collect(client: MlflowClient, runs: list[Run]) -> Collected:
    """Every run's test rows with the run's configuration, fold and seed."""
    described, frames, warnings = [], [], []
    with tempfile.TemporaryDirectory(prefix="sah-report-") as tmp:
        for run in runs:
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            if PER_PATIENT not in names:
                continue
            local = client.download_artifacts(run.info.run_id, PER_PATIENT, tmp)
            rows, problem = _test_rows(local, run)
            Path(local).unlink()
            if rows is None:
                warnings.append(str(problem))
                continue
            info = describe(run)
            described.append(info)
            for key in ("run_id", "run_name", "config", *DESCRIPTORS, "init", "fold", "seed"):
                rows[key] = info[key]
            rows["trainable_params"] = info["trainable_params"]
            frames.append(rows)
    if not frames:
        raise ConfigError(
            "--experiment/--parent-run",
            f"none of the {len(runs)} finished runs has '{SET_COLUMN} == test' rows in a "
            f"{PER_PATIENT} artifact"
            + (f" ({len(warnings)} left out, e.g. {warnings[0]})" if warnings else ""),
            "train with the current sah-train (segmentation), or point at another experiment "
            "or sweep",
        )
    return Collected(pd.DataFrame(described), pd.concat(frames, ignore_index=True), warnings)
