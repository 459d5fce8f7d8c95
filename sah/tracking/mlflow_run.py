"""Thin helpers over the MLflow client; what gets logged where is decided here, once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

# MLflow caps a param value at 6000 characters; longer values (lists of paths) are cut.
_MAX_PARAM_CHARS = 6000
_BATCH = 100
# MLflow 3's UI opens an experiment without this tag in its GenAI "Traces" view, with no runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys: {'model': {'rank': 4}} -> {'model.rank': 4}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def get_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def is_tracking_server(tracking_uri: str) -> bool:
    """Whether the URI names a tracking server (``http(s)://``, ``databricks``) rather than a
    store this process writes itself (``sqlite:``, ``file:``, a path, a database URL)."""
    uri = str(tracking_uri)
    scheme = urlparse(uri).scheme.lower()
    return scheme in ("http", "https") or uri.lower().startswith("databricks")


def artifact_location_for(tracking_uri: str, artifact_location: str | None) -> str | None:
    """Where a new experiment keeps its artifacts. A tracking server: None, so the server's
    own root applies (``mlflow server --artifacts-destination``, proxied to every client); a
    client-side folder would keep checkpoints on this machine, out of everyone else's reach.
    A store written directly: ``artifact_location`` as a ``file:`` URI (``mlartifacts/``)."""
    if not artifact_location or is_tracking_server(tracking_uri):
        return None
    return Path(artifact_location).resolve().as_uri()


def resolve_experiment(
    client: MlflowClient, name: str, artifact_location: str | None = None
) -> str:
    """Id of experiment ``name``, tagged as model development so the MLflow UI opens it on its
    runs. When new, created with ``artifact_location`` on a local store and with the server's
    own artifact root on a shared one (artifact_location_for).

    The jobs of a sweep start together and may each find the experiment missing or untagged:
    the one that loses the race to create or tag it reads back what the winner wrote."""
    found = client.get_experiment_by_name(name)
    if found is None:
        location = artifact_location_for(client.tracking_uri, artifact_location)
        try:
            experiment_id = client.create_experiment(name, artifact_location=location)
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = found.experiment_id
    _mark_model_development(client, experiment_id)
    return experiment_id


def _mark_model_development(client: MlflowClient, experiment_id: str) -> None:
    if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) == EXPERIMENT_KIND:
        return
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except MlflowException:
        tags = client.get_experiment(experiment_id).tags
        if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            raise


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log a flat dict of params in batches, skipping those the run already has (resume)."""
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    items = [
        Param(k, str(v)[:_MAX_PARAM_CHARS])
        for k, v in params.items()
        if k not in existing and not str(k).startswith("hydra")
    ]
    for start in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[start : start + _BATCH])


def log_artifact(
    client: MlflowClient, run_id: str, path: str | Path, artifact_path: str | None = None
) -> None:
    client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def ui_command(tracking_uri: str) -> str:
    """How to open the MLflow UI on this tracking store: a tracking server already is the UI
    (open its address); a database or folder needs ``mlflow ui`` started on it."""
    uri = str(tracking_uri)
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("http", "https"):
        return f"open {uri} in a browser (the tracking server is the UI)"
    if uri.lower().startswith("databricks"):
        return "open the MLflow experiments page of your Databricks workspace"
    return f"mlflow ui --backend-store-uri {uri}"
