"""Parent runs: one MLflow run per sweep, each job's run nested under it as a child.

MLflow nests a run under another through the tag ``mlflow.parentRunId``; the UI then folds a
sweep's jobs under one row. The parent holds what describes the sweep as a whole: its search
space, the study's name and storage, and at the end the best trial or the Pareto set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Run

from sah.errors import ConfigError
from sah.tracking.mlflow_run import get_client, log_params, resolve_experiment

PARENT_ENV = "SAH_PARENT_RUN_ID"
KIND_TAG = "sah.kind"


def require_run(tracking_uri: str, run_id: str, key: str = "tracking.parent_run_id") -> Run:
    """The run ``run_id``, or a ConfigError naming ``key`` when the store has no such run."""
    from mlflow.exceptions import MlflowException

    try:
        return get_client(tracking_uri).get_run(run_id)
    except MlflowException as err:
        raise ConfigError(
            key,
            f"there is no MLflow run {run_id!r} in {tracking_uri}",
            "give the id of an existing run (see the MLflow UI) or leave it null",
        ) from err


def start_parent_run(
    tracking_uri: str,
    experiment: str,
    artifact_location: str | None,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    run_id: str | None = None,
) -> str:
    """Create the sweep's parent run, or reopen ``run_id`` (a resumed study keeps its parent)."""
    client = get_client(tracking_uri)
    if run_id:
        require_run(tracking_uri, run_id)
        client.update_run(run_id, status="RUNNING")
    else:
        experiment_id = resolve_experiment(client, experiment, artifact_location)
        run = client.create_run(experiment_id, run_name=run_name, tags={KIND_TAG: "sweep"})
        run_id = run.info.run_id
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))
    log_params(client, run_id, params)
    return run_id


def end_parent_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    get_client(tracking_uri).set_terminated(run_id, status=status)


def log_files(tracking_uri: str, run_id: str, paths: list[Path], artifact_path: str | None = None):
    client = get_client(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def find_child_run(
    tracking_uri: str, parent_run_id: str, study_name: str, number: int
) -> str | None:
    """Id of the job run of Optuna trial ``number`` under a parent run, if it was created."""
    client = get_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
            f"and tags.`optuna.study_name` = '{study_name}' "
            f"and tags.`optuna.trial_number` = '{number}'"
        ),
        max_results=5,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None
