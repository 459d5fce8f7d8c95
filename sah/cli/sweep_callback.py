"""sah's Hydra callback for ``sah-train -m``: the basic sweeper's parent run and job lines.

Registered in conf/train.yaml. For the basic sweeper (grids such as ``adapter=glob(*)
fold=0,1,2``) it opens the MLflow parent run when the multirun starts and hands its id to the
jobs through ``SAH_PARENT_RUN_ID`` (``tracking.parent_run_id`` reads it), which reaches
in-process jobs, joblib/loky workers and SLURM jobs alike; it ends the parent FINISHED when the
sweep completes, KILLED on Ctrl-C or SIGTERM, FAILED when the sweep crashes. Each job prints a
line when it starts (its number and overrides) and when it ends (its status and returned
values), in whichever process or node the launcher runs it.

A sweeper that opens its own parent run (the sah_optuna sweeper: one parent per study, shared
by every process of the study) says so with a class attribute ``opens_parent_run = True``; the
callback then steps aside, and the sweeper prints its own trial lines.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from sah.errors import SahError
from sah.tracking.sweep_runs import (
    PARENT_ENV,
    ParentRun,
    TrackingTarget,
    close_parent_run,
    format_values,
    install_interrupt_handlers,
    open_parent_run,
    restore_handlers,
    show_sweep_progress,
)


def sweeper_opens_parent_run(config: DictConfig) -> bool:
    """Whether the configured sweeper manages the MLflow parent run itself."""
    target = OmegaConf.select(config, "hydra.sweeper._target_", default=None)
    if not target:
        return False
    try:
        return bool(getattr(get_class(str(target)), "opens_parent_run", False))
    except Exception:  # an unknown sweeper class: Hydra itself reports that
        return False


def tracking_target(config: DictConfig) -> TrackingTarget | None:
    """The tracking settings of a composed sah config; None for an app without them."""
    tracking = OmegaConf.select(config, "tracking", default=None)
    if not isinstance(tracking, DictConfig):
        return None
    settings = {str(k): OmegaConf.select(tracking, str(k), default=None) for k in tracking}
    default = OmegaConf.select(config, "task.experiment_name", default=None)
    return TrackingTarget.from_settings(settings, default)


def objective_names(config: DictConfig) -> list[str]:
    metrics = OmegaConf.select(config, "optimized_metrics", default=None)
    if metrics:
        return [str(m) for m in metrics]
    single = OmegaConf.select(config, "optimized_metric", default=None)
    return [str(single)] if single else ["value"]


def _in_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode", default=None) == RunMode.MULTIRUN


class MlflowParentRun(Callback):
    """Opens a parent run at the start of a basic multirun and ends it with the sweep."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.parent: ParentRun | None = None
        self._signal: int | None = None
        self._handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ the sweeping process
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or sweeper_opens_parent_run(config):
            return
        # Set inside jobs only by Hydra; tracking.uri may interpolate ${hydra:runtime.cwd}.
        HydraConfig.instance().set_config(config)
        log = show_sweep_progress()
        target = tracking_target(config)
        if target is None:
            return
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        sweep_dir = str(OmegaConf.select(config, "hydra.sweep.dir", default=""))
        try:
            parent = open_parent_run(
                target,
                run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
                tags={"sah.sweep_dir": sweep_dir, "sah.sweeper": "basic"},
                params={"sweep.overrides": " ".join(overrides)},
            )
        except SahError as err:
            # Hydra turns a callback's exceptions into warnings; stop before any job.
            print(f"sah-train: {err}", file=sys.stderr)
            raise SystemExit(2) from err
        if not parent.owned:
            log.info("runs of this sweep nest under the MLflow run you named: %s", parent.run_id)
            return
        self.parent = parent
        os.environ[PARENT_ENV] = parent.run_id
        if threading.current_thread() is threading.main_thread():
            self._handlers = install_interrupt_handlers(self._note_signal)
        atexit.register(self._at_exit)  # the sweep ended before on_multirun_end
        log.info(
            "MLflow parent run of this sweep: %s (experiment %r)", parent.run_id, target.experiment
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close("FINISHED")

    def _note_signal(self, signum: int) -> None:
        self._signal = signum

    def _at_exit(self) -> None:
        # Ctrl-C or SIGTERM went through our handlers; anything else that ends the process
        # before on_multirun_end is a crash (Hydra exits 1 on a failed job or sweeper error).
        self._close("KILLED" if self._signal is not None else "FAILED")

    def _close(self, status: str) -> None:
        restore_handlers(self._handlers)
        self._handlers = {}
        atexit.unregister(self._at_exit)
        if self.parent is None:
            return
        close_parent_run(self.parent, status)
        show_sweep_progress().info("MLflow parent run %s ended %s", self.parent.run_id, status)
        if os.environ.get(PARENT_ENV) == self.parent.run_id:
            del os.environ[PARENT_ENV]
        self.parent = None

    # ------------------------------------------------------------------ each job
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or not _in_multirun(config) or sweeper_opens_parent_run(config):
            return
        number = OmegaConf.select(config, "hydra.job.num", default="?")
        overrides = " ".join(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        show_sweep_progress().info("job %s: %s", number, overrides or "(no overrides)")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self.enabled or not _in_multirun(config) or sweeper_opens_parent_run(config):
            return
        number = OmegaConf.select(config, "hydra.job.num", default="?")
        log = show_sweep_progress()
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            values = list(value) if isinstance(value, list | tuple) else [value]
            shown = format_values(objective_names(config), values) if value is not None else "-"
            log.info("job %s COMPLETED: %s", number, shown)
        else:
            error = job_return._return_value
            log.error("job %s FAILED: %s: %s", number, type(error).__name__, error)
