"""``hydra/sweeper=sah_optuna``: Optuna (>= 4) search over sah-train jobs.

Kept import-light: Hydra imports every plugin module when it starts, the work is in ``_core``.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SahOptunaSweeper(Sweeper):
    """Asks Optuna for trials, runs each as its own launcher job, tells Optuna the outcome.

    A configuration the study has already completed is never run again: when the sampler
    proposes one (TPE often does on a small categorical space), the new trial takes the earlier
    trial's values and MLflow run without launching a job (it counts toward ``n_trials``, is
    marked ``sah.reused_from=<trial>`` and the sweep prints a line saying so), and once every
    configuration of a finite space is complete the sweep stops. Each trial's job gets its
    trial number as ``optuna.trial_number``, which names its MLflow run ``...-t<number>``.
    """

    # The MLflow parent run is the study's, shared by every process of the study: sah's
    # MlflowParentRun callback (for the basic sweeper) steps aside when it sees this.
    opens_parent_run = True

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self._sweep: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra_plugins.sah_optuna_sweeper._core import OptunaSweep, SweepSettings

        self._sweep = OptunaSweep(
            SweepSettings.from_config(self.settings), hydra_context, task_function, config
        )

    def sweep(self, arguments: list[str]) -> Any:
        return self._sweep.run(arguments)
