"""The study side of a sweep: create or resume it, check it matches, count and clean its trials."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from sah.errors import ConfigError

log = logging.getLogger("sah.sweep")

HEARTBEAT_ATTR = "sah.heartbeat"
INTERRUPTED_ATTR = "sah.interrupted"
SPACE_ATTR = "sah.search_space"
PRUNER_ATTR = "sah.pruner"
PARENT_ATTR = "sah.mlflow_parent_run_id"
TRACKING_ATTR = "sah.tracking_uri"
# Set on a trial whose configuration an earlier trial had completed: that trial's number.
REUSED_ATTR = "sah.reused_from"
# A running trial whose process has not marked it for this many heartbeats is interrupted.
STALE_HEARTBEATS = 5


def parse_directions(direction: Any) -> list[str]:
    values = [direction] if isinstance(direction, str) else list(direction or [])
    values = [str(v).lower() for v in values]
    if not values or any(v not in ("maximize", "minimize") for v in values):
        raise ConfigError(
            "hydra.sweeper.direction",
            f"{direction!r} is not a direction",
            "use maximize, minimize, or a list of them for several objectives",
        )
    return values


def space_json(distributions: dict[str, BaseDistribution]) -> str:
    return json.dumps({k: distribution_to_json(d) for k, d in sorted(distributions.items())})


def _describe(distributions: dict[str, BaseDistribution]) -> str:
    return ", ".join(f"{k}: {d!r}" for k, d in sorted(distributions.items())) or "(none)"


def check_matches(
    study: optuna.Study, distributions: dict[str, BaseDistribution], directions: list[str]
) -> None:
    """A resumed study must search the same space in the same directions."""
    name = study.study_name
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise ConfigError(
            "hydra.sweeper.direction",
            f"study {name!r} exists with directions {existing}, this sweep asks {directions}",
            "use the same direction or another hydra.sweeper.study_name",
        )
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is not None:
        previous = {k: json_to_distribution(v) for k, v in json.loads(stored).items()}
    else:  # a study made elsewhere: compare with the distributions its trials used
        previous = {}
        for trial in study.get_trials(deepcopy=False):
            previous.update(trial.distributions)
        if not previous:
            return
    if previous != distributions:
        raise ConfigError(
            "hydra.sweeper.params",
            f"study {name!r} exists with other parameter distributions "
            f"({_describe(previous)}); this sweep asks {_describe(distributions)}",
            "use the same search space to resume it, or another hydra.sweeper.study_name",
        )


def check_metric_names(study: optuna.Study, names: list[str]) -> None:
    """A resumed study must optimise the same metrics (a value of val/loss next to values of
    val/dice would rank nonsense)."""
    existing = study.metric_names
    if existing is not None and list(existing) != list(names):
        key = "optimized_metrics" if len(names) > 1 else "optimized_metric"
        raise ConfigError(
            key,
            f"study {study.study_name!r} optimises {list(existing)}, this sweep returns {names}",
            "return the same metrics to resume it, or use another hydra.sweeper.study_name",
        )


def config_key(params: dict[str, Any]) -> str:
    """One configuration (the sampled values), comparable across trials."""
    return json.dumps(params, sort_keys=True, default=str)


def space_size(space: Any) -> int | None:
    """How many configurations a search space holds; None when it is continuous."""
    size = 1
    for dist in space.distributions.values():
        if isinstance(dist, CategoricalDistribution):
            size *= len(dist.choices)
        elif isinstance(dist, IntDistribution):
            size *= (dist.high - dist.low) // (1 if dist.log else dist.step) + 1
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            size *= round((dist.high - dist.low) / dist.step) + 1
        else:
            return None
    return size


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished and running trials use up n_trials; waiting ones and interrupted ones do not."""
    if trial.state == TrialState.WAITING:
        return False
    return not (trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED_ATTR))


class StudyTrials:
    """A study with the storage it lives in: liveness marks and interrupted trials."""

    def __init__(self, study: optuna.Study, storage: BaseStorage) -> None:
        self.study = study
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study.study_name)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def used_budget(self) -> int:
        return sum(counts_toward_budget(t) for t in self.study.get_trials(deepcopy=False))

    def completed_configurations(self) -> dict[str, FrozenTrial]:
        """Each configuration the study completed, with the first trial that ran it."""
        done: dict[str, FrozenTrial] = {}
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            done.setdefault(config_key(trial.params), trial)
        return done

    def mark_alive(self, numbers: list[int]) -> None:
        for number in numbers:
            with contextlib.suppress(UpdateFinishedTrialError, KeyError):
                self.storage.set_trial_user_attr(self.trial_id(number), HEARTBEAT_ATTR, time.time())

    def interrupt(self, number: int, params: dict[str, Any], retry: bool) -> bool:
        """Fail trial ``number`` as interrupted (its process died); queue its params again."""
        tid = self.trial_id(number)
        try:
            self.storage.set_trial_user_attr(tid, INTERRUPTED_ATTR, True)
            if not self.storage.set_trial_state_values(tid, TrialState.FAIL):
                return False
        except UpdateFinishedTrialError:
            return False
        if retry and params:
            self.study.enqueue_trial(params, user_attrs={"sah.retry_of": number})
        log.warning("trial %d was interrupted; %s", number, "queued again" if retry else "failed")
        return True

    def fail_stale(self, heartbeat_s: float, ours: set[int], retry: bool) -> None:
        """Interrupt running trials of other (dead) processes that stopped marking themselves."""
        now = time.time()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in ours:
                continue
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            last = float(trial.user_attrs.get(HEARTBEAT_ATTR, started))
            if now - last > STALE_HEARTBEATS * heartbeat_s:
                self.interrupt(trial.number, trial.params, retry)
