"""A parent MLflow run for every ``sah-train -m`` sweep, whichever sweeper runs it.

Registered in conf/train.yaml as a Hydra callback. For the basic sweeper (grids such as
``adapter=glob(*) fold=0,1,2``) it opens the parent run when the multirun starts and hands its
id to the jobs through ``SAH_PARENT_RUN_ID`` (``tracking.parent_run_id`` reads it), which reaches
in-process jobs, joblib/loky workers and SLURM jobs alike. The sah_optuna sweeper manages its
own parent run (it knows the study), so the callback steps aside for it.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sah.errors import SahError
from sah.tracking.sweep_runs import PARENT_ENV, end_parent_run, require_run, start_parent_run

log = logging.getLogger("sah.sweep")


@dataclass(frozen=True)
class TrackingTarget:
    """Where a sweep's runs go: MLflow store, experiment, artifact root."""

    uri: str
    experiment: str
    artifact_location: str | None
    parent_run_id: str | None


def tracking_target(config: DictConfig) -> TrackingTarget | None:
    """The tracking settings of a composed sah config; None for an app without them."""
    tracking = OmegaConf.select(config, "tracking", default=None)
    if not isinstance(tracking, DictConfig) or not tracking.get("uri"):
        return None
    experiment = tracking.get("experiment") or OmegaConf.select(
        config, "task.experiment_name", default=None
    )
    if not experiment:
        return None
    return TrackingTarget(
        uri=str(tracking.uri),
        experiment=str(experiment),
        artifact_location=tracking.get("artifact_location"),
        parent_run_id=tracking.get("parent_run_id"),
    )


def uses_sah_optuna(config: DictConfig) -> bool:
    target = OmegaConf.select(config, "hydra.sweeper._target_", default="") or ""
    return str(target).endswith("SahOptunaSweeper")


class MlflowParentRun(Callback):
    """Opens a parent run at the start of a multirun and closes it at the end."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.target: TrackingTarget | None = None
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or uses_sah_optuna(config):
            return
        # Set inside jobs only by Hydra; tracking.uri may interpolate ${hydra:runtime.cwd}.
        HydraConfig.instance().set_config(config)
        target = tracking_target(config)
        if target is None:
            return
        if target.parent_run_id:  # the user named a parent: nest under it, leave it open
            try:
                require_run(target.uri, str(target.parent_run_id))
            except SahError as err:
                # Hydra turns a callback's exceptions into warnings; stop before any job.
                print(f"sah-train: {err}", file=sys.stderr)
                raise SystemExit(2) from err
            return
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        sweep_dir = str(OmegaConf.select(config, "hydra.sweep.dir", default=""))
        self.run_id = start_parent_run(
            target.uri,
            target.experiment,
            target.artifact_location,
            run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"sah.sweep_dir": sweep_dir, "sah.sweeper": "basic"},
            params={"sweep.overrides": " ".join(overrides)},
        )
        self.target = target
        os.environ[PARENT_ENV] = self.run_id
        atexit.register(self._close, "FAILED")  # the sweep raised before on_multirun_end
        log.info("MLflow parent run of this sweep: %s", self.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        if self.run_id is None or self.target is None:
            return
        end_parent_run(self.target.uri, self.run_id, status)
        if os.environ.get(PARENT_ENV) == self.run_id:
            del os.environ[PARENT_ENV]
        self.run_id = None
