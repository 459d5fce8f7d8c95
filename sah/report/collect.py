"""Runs of a study and their per-patient metrics, as one long table (one row per run x patient).

Each sah run logs ``per_patient_metrics.csv`` (patient_id, dice, iou, ..., volume_true_ml) and
is tagged with method, rank, target, fold, model and init (``scratch`` or ``pretrained``: full
training from scratch is its own baseline, ``scratch``); ``trainable_params`` is a run param. Runs
that did not finish, pruned or failed trials, sweep parents and earlier reports are left out.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sah.errors import ConfigError

PER_PATIENT = "per_patient_metrics.csv"
# Methods whose rank (and, for `none`, target) means nothing: shown as "-" and not split on.
RANKLESS = ("none", "full", "scratch")
KEY = ["model", "method", "target", "rank"]


@dataclass(frozen=True)
class Source:
    """Where the study's runs are: an experiment, or the child runs of one sweep."""

    tracking_uri: str
    experiment: str | None = None
    parent_run_id: str | None = None


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


def _describe(run: Run) -> dict[str, object]:
    tags, params = run.data.tags, run.data.params
    method = tags.get("method") or "none"
    if method == "full" and tags.get("init") == "scratch":
        method = "scratch"  # every layer trained from random weights: the study's third baseline
    rankless = method in RANKLESS
    trainable = params.get("trainable_params")
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "model": tags.get("model", ""),
        "method": method,
        "target": "-" if method == "none" else tags.get("target") or "-",
        "rank": "-" if rankless else tags.get("rank") or "-",
        "fold": tags.get("fold", ""),
        "trainable_params": float(trainable) if trainable not in (None, "") else float("nan"),
    }


def per_patient_table(client: MlflowClient, runs: list[Run]) -> pd.DataFrame:
    """Every run's per-patient rows with the run's method, target, rank, fold and size."""
    frames = []
    with tempfile.TemporaryDirectory(prefix="sah-report-") as tmp:
        for run in runs:
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            if PER_PATIENT not in names:
                continue
            local = client.download_artifacts(run.info.run_id, PER_PATIENT, tmp)
            frame = pd.read_csv(local, dtype={"patient_id": str})
            for key, value in _describe(run).items():
                frame[key] = value
            frames.append(frame)
            Path(local).unlink()
    if not frames:
        raise ConfigError(
            "--experiment/--parent-run",
            f"none of the {len(runs)} finished runs has a {PER_PATIENT} artifact",
            "run sah-train (segmentation) first, or point at another experiment or sweep",
        )
    table = pd.concat(frames, ignore_index=True)
    if table["model"].nunique() <= 1:
        table["model"] = table["model"].fillna("")
    return table


def group_key(table: pd.DataFrame) -> list[str]:
    """Columns that name a configuration; model only when the study has several."""
    several = "model" in table.columns and table["model"].nunique() > 1
    return KEY if several else KEY[1:]
