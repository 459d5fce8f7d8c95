"""Run each job in its own fresh loky process with the GPUs handed to it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.types import HydraContext, TaskFunction
from joblib.externals.loky import ProcessPoolExecutor
from omegaconf import DictConfig, open_dict

from hydra_plugins.sah_gpu_launcher._gpu_slots import GpuSlots, default_lock_dir, visible_gpus
from sah.errors import ConfigError
from sah.tracking.sweep_runs import stderr_lines

log = logging.getLogger("sah.launcher")

# Set in every job: which slot's GPUs it holds (empty without GPUs), for logs and tests.
GPU_ENV = "SAH_JOB_GPUS"


def run_one_job(
    idx: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    """Inside the fresh process: compose the job's config and run it as Hydra would."""
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


class FreshProcessLauncher:
    def __init__(
        self,
        settings: dict[str, Any],
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        stderr_lines(log.name)
        per_job = int(settings.get("gpus_per_job") or 1)
        gpus = settings.get("gpus")
        gpus = [str(g) for g in gpus] if gpus is not None else visible_gpus()
        if gpus and per_job > len(gpus):
            raise ConfigError(
                "hydra.launcher.gpus_per_job",
                f"{per_job} GPUs per job but only {len(gpus)} visible ({','.join(gpus)})",
            )
        lock_dir = None
        if settings.get("share_across_processes", True):
            lock_dir = (
                Path(settings["lock_dir"]) if settings.get("lock_dir") else default_lock_dir()
            )
        self.slots = GpuSlots(gpus, per_job, lock_dir)
        n_jobs = settings.get("n_jobs")
        self.n_jobs = int(n_jobs) if n_jobs else max(1, self.slots.n_slots)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        gpus = ",".join(self.slots.gpus) or "none"
        log.info(
            "launching %d job(s), %d at a time, each in a fresh process (GPUs: %s, %d per job)",
            len(job_overrides),
            self.n_jobs,
            gpus,
            self.slots.per_job,
        )
        state = Singleton.get_state()
        jobs = list(enumerate(job_overrides, start=initial_job_idx))
        if len(jobs) == 1:  # the Optuna sweeper's batches of one: no extra thread
            return [self._run(jobs[0][0], jobs[0][1], state)]
        with ThreadPoolExecutor(min(self.n_jobs, len(jobs))) as pool:
            futures = [pool.submit(self._run, idx, overrides, state) for idx, overrides in jobs]
            return [future.result() for future in futures]

    def _run(self, idx: int, overrides: Sequence[str], state: dict[Any, Any]) -> JobReturn:
        with self.slots.acquire() as gpus:
            env = {GPU_ENV: ",".join(gpus or [])}
            if gpus is not None:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            log.info("\t#%d (GPUs %s): %s", idx, gpus or "-", " ".join(filter_overrides(overrides)))
            executor = ProcessPoolExecutor(max_workers=1, env=env)
            try:
                future = executor.submit(
                    run_one_job,
                    idx,
                    overrides,
                    self.hydra_context,
                    self.config,
                    self.task_function,
                    state,
                )
                return future.result()
            except Exception as err:  # the process died (killed, out of host memory)
                log.error("job #%d: its process ended abnormally: %s", idx, err)
                return JobReturn(
                    overrides=list(overrides), status=JobStatus.FAILED, _return_value=err
                )
            finally:
                executor.shutdown(wait=True)
