"""OmegaConf resolvers the config tree uses for values that depend on where a run happens.

``${sah.sync_batchnorm:<accelerator>}`` (conf/trainer/ddp.yaml): SyncBatchNorm only on CUDA
GPUs, the only devices it runs on. ``${sah.artifact_location:<uri>,<folder>}``
(conf/logger/mlflow.yaml): the folder on a store this process writes, null on a tracking
server, which keeps artifacts itself. Imports stay inside the functions: Hydra imports
``sah.cli.train`` for tab completion and every job, and mlflow is slow to import.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def _sync_batchnorm(accelerator: str) -> bool:
    from sah.tasks.training.ddp_ranks import sync_batchnorm_for

    return sync_batchnorm_for(str(accelerator))


def _artifact_location(tracking_uri: str, artifact_location: str | None) -> str | None:
    from sah.tracking.mlflow_run import artifact_location_for

    return artifact_location_for(str(tracking_uri), artifact_location)


def register_resolvers() -> None:
    """Register sah's resolvers once per process (again is a no-op)."""
    for name, function in (
        ("sah.sync_batchnorm", _sync_batchnorm),
        ("sah.artifact_location", _artifact_location),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
