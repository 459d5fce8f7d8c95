"""The SLURM pre-flight check as a Hydra callback, so a request no node can meet is refused
before the sweep creates anything (its MLflow parent run, its Optuna study).

conf/train.yaml lists it before the parent-run callback; it does nothing unless the launcher
is sah's SLURM launcher (the launcher checks again in ``setup`` for apps without it).
"""

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.sah_slurm_launcher.cluster import Partition, Request, check_request, read_cluster
from sah.errors import SahError

_LAUNCHER = "hydra_plugins.sah_slurm_launcher.slurm_launcher.SahSlurmLauncher"


def with_cpu_default(params: dict[str, Any], config: DictConfig) -> dict[str, Any]:
    """``cpus_per_task: null`` = the data loader's workers plus the training process."""
    if params.get("cpus_per_task") is not None:
        return params
    workers = OmegaConf.select(config, "data.num_workers", default=0) or 0
    return {**params, "cpus_per_task": int(workers) + 1}


def request_of(params: dict[str, Any]) -> Request:
    """The launcher's settings as the per-job request SLURM will see."""
    return Request(
        partition=params.get("partition"),
        nodes=int(params.get("nodes") or 1),
        tasks_per_node=int(params.get("tasks_per_node") or 1),
        cpus_per_task=int(params.get("cpus_per_task") or 1),
        mem_gb=float(params["mem_gb"]) if params.get("mem_gb") else None,
        gpus_per_node=int(params.get("gpus_per_node") or 0),
        timeout_min=float(params["timeout_min"]) if params.get("timeout_min") else None,
    )


def preflight(params: dict[str, Any], config: DictConfig) -> Partition:
    """Check the launcher's request against the cluster; ConfigError naming the key if no node
    can meet it."""
    return check_request(request_of(with_cpu_default(params, config)), read_cluster())


class SlurmPreflight(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = OmegaConf.select(config, "hydra.launcher")
        if launcher is None or launcher.get("_target_") != _LAUNCHER:
            return
        params = OmegaConf.to_container(launcher, resolve=True)
        if not params.get("preflight", True):  # type: ignore[union-attr]
            return
        try:
            preflight(params, config)  # type: ignore[arg-type]
        except SahError as err:
            # Hydra turns a callback's exception into a warning and goes on: end the run here,
            # with the one line sah-train prints for any config error.
            print(f"sah-train: {err}", file=sys.stderr)
            raise SystemExit(2) from err
