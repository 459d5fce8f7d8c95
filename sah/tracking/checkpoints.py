"""The checkpoint a finished MLflow run logged, for `init_from=mlflow:<id>` and `sah-predict`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException

from sah.errors import ConfigError
from sah.tracking.mlflow_run import get_client

CHECKPOINT_DIR = "checkpoints"


def download_best_checkpoint(
    tracking_uri: str, run_id: str, dest: str | Path | None = None
) -> Path:
    """Download the ``.ckpt`` that ``run_id`` logged under ``checkpoints/`` and return its path."""
    client = get_client(tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException as err:
        raise ConfigError(
            "init_from", f"no MLflow run {run_id!r} in {tracking_uri}", "check the run id"
        ) from err
    files = [
        f.path for f in client.list_artifacts(run_id, CHECKPOINT_DIR) if f.path.endswith(".ckpt")
    ]
    if not files:
        raise ConfigError(
            "init_from",
            f"MLflow run {run_id} has no checkpoint under '{CHECKPOINT_DIR}/'",
            "train it with sah-train (which logs the best checkpoint) or pass a checkpoint path",
        )
    # The best checkpoint is named best*.ckpt by the default callback; prefer it over last.ckpt.
    chosen = sorted(files, key=lambda p: (not Path(p).name.startswith("best"), p))[0]
    target = Path(dest) if dest else Path(tempfile.mkdtemp(prefix=f"sah-{run_id[:8]}-"))
    return Path(client.download_artifacts(run_id, chosen, str(target)))
