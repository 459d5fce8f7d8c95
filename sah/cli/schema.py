"""Typed schema of the root config, so a wrong type fails at composition naming its key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from sah.adapters import AdapterConfig
from sah.data.cache import cache_dir
from sah.tasks.outcome.estimators import TabularModelSpec

# `${sah_cache_dir:}` in conf/paths/default.yaml: the config's default cache folder is the one
# sah-synth, sah-predict and the library use (sah.data.cache.cache_dir: $SAH_CACHE_DIR, else
# ~/.cache/sah). Registered on import: jobs a launcher starts in fresh processes import this
# module with the task function.
if not OmegaConf.has_resolver("sah_cache_dir"):
    OmegaConf.register_new_resolver("sah_cache_dir", lambda: str(cache_dir()))


@dataclass
class TrackingSchema:
    uri: str = "sqlite:///mlflow.db"
    artifact_location: str | None = None
    experiment: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None


@dataclass
class OptunaTrialSchema:
    storage: str | None = None
    study_name: str | None = None
    trial_number: int | None = None


@dataclass
class TrainSchema:
    seed: int = 0
    fold: int = 0
    init_from: str | None = None
    resume: bool = False
    optimized_metric: str = "val/dice"
    optimized_metrics: list[str] | None = None
    tracking: TrackingSchema = field(default_factory=TrackingSchema)
    optuna: OptunaTrialSchema = field(default_factory=OptunaTrialSchema)
    task: Any = None
    data: Any = None
    model: Any = None
    adapter: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None
    paths: Any = None
    experiment: Any = None
    hparams_search: Any = None


def register_schema() -> None:
    """Store the root schema as `schema`, the first entry of conf/train.yaml's defaults, and
    the `adapter` group's schema as `adapter_schema`, the first entry of every
    conf/adapter/*.yaml's defaults (and the `estimator` group's, `TabularModelSpec`, as
    `estimator_schema`, the same way).

    The adapter schema is `sah.adapters.AdapterConfig` itself: its defaults are the group's, a
    wrong type fails at composition naming its key (`adapter.rank=abc`), and the runners build
    the class from the node (`OmegaConf.to_object`), which runs its checks. It is stored outside
    the `adapter` group so that `adapter='glob(*)'` lists the methods only.
    """
    store = ConfigStore.instance()
    store.store(name="schema", node=TrainSchema)
    store.store(name="adapter_schema", node=AdapterConfig)
    store.store(name="estimator_schema", node=TabularModelSpec)
