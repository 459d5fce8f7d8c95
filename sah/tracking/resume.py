"""``resume=true``: continue an interrupted run in the same MLflow run from its last checkpoint.

Which run: ``tracking.run_id=<id>`` names it; without it, the latest unfinished run (status
RUNNING, FAILED or KILLED) with the same run name in the same experiment is taken, whatever
sweep it belonged to (a rerun of a sweep has a new parent run; the resumed run keeps its own).

Where the checkpoint is: every run is tagged with its output folder (``sah.output_dir``);
ModelCheckpoint keeps ``checkpoints/last.ckpt`` there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from sah.errors import ConfigError

log = logging.getLogger(__name__)

OUTPUT_DIR_TAG = "sah.output_dir"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass(frozen=True)
class ResumePoint:
    run_id: str
    # None when the run stopped before its first checkpoint: training restarts at epoch 0.
    checkpoint: Path | None


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def latest_unfinished_run(client: MlflowClient, experiment_id: str, run_name: str) -> str | None:
    query = f"tags.`mlflow.runName` = {_quoted(run_name)} and attributes.status != 'FINISHED'"
    runs = client.search_runs(
        [experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def find_resume_point(
    client: MlflowClient,
    experiment_id: str,
    run_name: str,
    run_id: str | None = None,
) -> ResumePoint:
    """The run to continue and its last checkpoint; a ConfigError when there is none."""
    from mlflow.exceptions import MlflowException

    if run_id is None:
        run_id = latest_unfinished_run(client, experiment_id, run_name)
        if run_id is None:
            raise ConfigError(
                "resume",
                f"no unfinished run named {run_name!r} to resume in this experiment",
                "name the run with tracking.run_id=<id>, or drop resume=true to start a new one",
            )
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise ConfigError(
            "tracking.run_id", f"there is no MLflow run {run_id!r}", "copy the id from the UI"
        ) from err
    output_dir = run.data.tags.get(OUTPUT_DIR_TAG)
    checkpoint = Path(output_dir) / LAST_CHECKPOINT if output_dir else None
    if checkpoint is None or not checkpoint.is_file():
        log.warning(
            "run %s has no %s yet: training restarts at epoch 0 in the same run", run_id, checkpoint
        )
        checkpoint = None
    else:
        log.info("resuming run %s from %s", run_id, checkpoint)
    return ResumePoint(run_id, checkpoint)
