"""Config of ``hydra/sweeper=sah_optuna``, its samplers and its pruners.

The surface follows the official hydra-optuna-sweeper (sampler, direction, n_trials, n_jobs,
storage, study_name, params, custom_search_space) so its recipes read the same; additions are
``pruner``, ``heartbeat_s`` and ``retry_interrupted``. Differences, on purpose:

- ``n_trials`` is the size the study should reach, not a count per process: a rerun of an
  interrupted sweep completes the study, and processes sharing a storage share the budget.
- ``direction`` defaults to ``maximize``: sah's metrics (Dice, AUC) are better when larger.
- ``storage`` defaults to SQLite in the sweep folder, so every sweep can be resumed.

No ``from __future__ import annotations`` here: Hydra's plugin scanner runs this module
before it is in ``sys.modules``, where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SamplerConf:
    _target_: str = MISSING
    seed: int | None = None


@dataclass
class TPESamplerConf(SamplerConf):
    """Tree-structured Parzen estimator; `constant_liar` keeps parallel trials apart."""

    _target_: str = "optuna.samplers.TPESampler"
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True


@dataclass
class RandomSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class CmaEsSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.CmaEsSampler"
    n_startup_trials: int = 1
    sigma0: float | None = None
    restart_strategy: str | None = None
    consider_pruned_trials: bool = False


@dataclass
class NSGAIISamplerConf(SamplerConf):
    """Genetic multi-objective sampler: the usual choice for a Pareto search."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class NSGAIIISamplerConf(NSGAIISamplerConf):
    _target_: str = "optuna.samplers.NSGAIIISampler"


@dataclass
class QMCSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False


@dataclass
class GPSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GPSampler"
    n_startup_trials: int = 10
    deterministic_objective: bool = False


@dataclass
class GridSamplerConf(SamplerConf):
    """Every combination of the (categorical or stepped range) params; null = built from them."""

    _target_: str = "optuna.samplers.GridSampler"
    search_space: dict[str, Any] | None = None


@dataclass
class PrunerConf:
    _target_: str = MISSING


@dataclass
class NopPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf(PrunerConf):
    """Stop a trial whose validation metric is below the median of earlier trials at that epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 2
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConf(MedianPrunerConf):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0


@dataclass
class ThresholdPrunerConf(PrunerConf):
    """Stop a trial as soon as its metric leaves [lower, upper] (e.g. Dice still 0 at epoch 3)."""

    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0


@dataclass
class HyperbandPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class SuccessiveHalvingPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0


@dataclass
class SahOptunaSweeperConf:
    _target_: str = "hydra_plugins.sah_optuna_sweeper.sweeper.SahOptunaSweeper"
    # The sweeper builds sampler and pruner itself (the grid sampler needs the search space).
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])

    sampler: SamplerConf = MISSING
    # Applied by the training loop of each trial (sah.tasks.training.pruning); nop disables pruning.
    pruner: PrunerConf = MISSING
    # maximize | minimize, or a list of them for a multi-objective (Pareto) study.
    direction: Any = "maximize"
    # SQLAlchemy URL or journal:<file>; null = sqlite:///<sweep dir>/optuna.db.
    storage: str | None = None
    # A study with this name in the storage is resumed; null = the job name.
    study_name: str | None = None
    # Size the study should reach (finished and running trials, all processes together).
    n_trials: int = 20
    # Trials this process runs at once; each is its own launcher job, none waits for another.
    n_jobs: int = 1
    # Search space: `key: choice(...) | range(...) | interval(...) | tag(log, ...) | int(...)`.
    # range(a, b[, step]) means what it means to the basic sweeper: b is excluded (range(1, 5)
    # is 1..4); interval(a, b) includes both bounds. See _search_space.py.
    params: dict[str, str] = field(default_factory=dict)
    # Dotted path to fn(cfg, trial) suggesting extra (e.g. conditional) params.
    custom_search_space: str | None = None
    # Seconds between liveness marks on running trials; a trial whose process stopped marking
    # for 5 periods is failed as interrupted (and retried when retry_interrupted).
    heartbeat_s: int = 60
    retry_interrupted: bool = True


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="sah_optuna", node=SahOptunaSweeperConf, provider="sah")
    samplers = {
        "tpe": TPESamplerConf,
        "random": RandomSamplerConf,
        "cmaes": CmaEsSamplerConf,
        "nsgaii": NSGAIISamplerConf,
        "nsgaiii": NSGAIIISamplerConf,
        "qmc": QMCSamplerConf,
        "gp": GPSamplerConf,
        "grid": GridSamplerConf,
    }
    for name, node in samplers.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="sah")
    pruners = {
        "nop": NopPrunerConf,
        "median": MedianPrunerConf,
        "percentile": PercentilePrunerConf,
        "threshold": ThresholdPrunerConf,
        "hyperband": HyperbandPrunerConf,
        "successive_halving": SuccessiveHalvingPrunerConf,
    }
    for name, node in pruners.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="sah")


register()
