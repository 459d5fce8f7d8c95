"""MLflow conventions: experiments per study, flattened params, run names, artifacts."""

from sah.tracking.mlflow_run import (
    flatten,
    get_client,
    log_artifact,
    log_params,
    resolve_experiment,
    ui_command,
)

__all__ = [
    "flatten",
    "get_client",
    "log_artifact",
    "log_params",
    "resolve_experiment",
    "ui_command",
]
