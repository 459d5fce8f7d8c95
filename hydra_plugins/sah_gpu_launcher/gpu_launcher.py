"""``hydra/launcher=gpus``: every job in a fresh process with GPUs of its own.

Each job runs in a new loky (joblib) worker process that exits with the job, and gets
``CUDA_VISIBLE_DEVICES`` set before Python starts in it, so CUDA can only ever see the GPUs
handed to it. GPUs are handed out from the set that is free at the moment a job starts (not by
job index: with trials of different lengths, index modulo GPU count would put two running jobs
on one GPU). Kept import-light: Hydra imports every plugin module at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class GpuLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self._impl: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra_plugins.sah_gpu_launcher._core import FreshProcessLauncher

        self._impl = FreshProcessLauncher(self.settings, hydra_context, task_function, config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        return self._impl.launch(job_overrides, initial_job_idx)
