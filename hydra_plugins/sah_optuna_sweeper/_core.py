"""The sweep loop: ask Optuna for a trial, launch it as its own job, tell the outcome, repeat.

Up to ``n_jobs`` trials run at once, each launched as a batch of one from its own thread, so a
slow trial never holds the others back (the official plugin waits for a whole batch). What a
trial needs inside its job (storage, study, trial number, parent run) travels as overrides,
so a job on another process, node or DDP rank sees the very same sampled values.
"""

from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.sah_optuna_sweeper._parent import (
    claim_parent,
    leave,
    mark_alive,
    this_process,
)
from hydra_plugins.sah_optuna_sweeper._results import write_results
from hydra_plugins.sah_optuna_sweeper._search_space import (
    SearchSpace,
    build_search_space,
    probe_values,
)
from hydra_plugins.sah_optuna_sweeper._study import (
    PRUNER_ATTR,
    REUSED_ATTR,
    SPACE_ATTR,
    StudyTrials,
    check_matches,
    check_metric_names,
    config_key,
    parse_directions,
    space_json,
    space_size,
)
from sah.errors import ConfigError
from sah.tracking.studies import absolute_storage_url, display_url, open_storage, storage_lock
from sah.tracking.sweep_runs import (
    ParentRun,
    TrackingTarget,
    check_sweep_metric,
    end_status,
    format_values,
    show_sweep_progress,
    signals_interrupt,
)

log = show_sweep_progress()
_ABSENT = object()


@dataclass
class SweepSettings:
    """``hydra.sweeper`` as plain values."""

    sampler: dict[str, Any]
    pruner: dict[str, Any]
    direction: Any
    storage: str | None
    study_name: str | None
    n_trials: int
    n_jobs: int
    params: dict[str, str] | None
    custom_search_space: str | None
    heartbeat_s: float
    retry_interrupted: bool

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> SweepSettings:
        plain = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in settings.items()
        }
        params = plain.get("params")
        return cls(
            sampler=dict(plain["sampler"]),
            pruner=dict(plain.get("pruner") or {"_target_": "optuna.pruners.NopPruner"}),
            direction=plain.get("direction", "maximize"),
            storage=plain.get("storage"),
            study_name=plain.get("study_name"),
            n_trials=int(plain.get("n_trials", 20)),
            n_jobs=int(plain.get("n_jobs", 1)),
            params={str(k): str(v) for k, v in params.items()} if params else None,
            custom_search_space=plain.get("custom_search_space"),
            heartbeat_s=float(plain.get("heartbeat_s", 60)),
            retry_interrupted=bool(plain.get("retry_interrupted", True)),
        )


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def _first_line(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


class OptunaSweep:
    def __init__(
        self,
        settings: SweepSettings,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.settings = settings
        self.hydra_context = hydra_context
        self.config = config
        # Hydra sets this only inside jobs; the sweep's own keys (tracking.uri, sweep dir) may
        # interpolate ${hydra:runtime.cwd} too.
        HydraConfig.instance().set_config(config)
        # The sweep prints its own lines (trial, values, parent run); Optuna's repeat them.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.study_name = settings.study_name or str(config.hydra.job.name)
        self._stop_heartbeat = threading.Event()

    # ---------------------------------------------------------------- checks before any trial
    def _search_space(self, arguments: list[str]) -> SearchSpace:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = build_search_space(self.settings.params, arguments, parser)
        if not space.distributions and not self.settings.custom_search_space:
            raise ConfigError(
                "hydra.sweeper.params",
                "the search space is empty",
                "give params (adapter.rank: choice(4,8,16)) or sweeps on the command line",
            )
        return space

    def _check_budget(self) -> None:
        if self.settings.n_trials < 1:
            raise ConfigError("hydra.sweeper.n_trials", f"{self.settings.n_trials} < 1")
        if self.settings.n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_jobs", f"{self.settings.n_jobs} < 1")

    def _check_objectives(self, directions: list[str]) -> None:
        """A job must return as many values as the study has directions."""
        if "optimized_metrics" not in self.config:
            return
        metrics = self.config.get("optimized_metrics")
        count = len(metrics) if metrics else 1
        if count != len(directions):
            names = list(metrics) if metrics else [self.config.get("optimized_metric")]
            raise ConfigError(
                "optimized_metrics"
                if metrics or len(directions) > 1
                else "hydra.sweeper.direction",
                f"the study has {len(directions)} direction(s) {directions} but each job "
                f"returns {count} value(s) {names}",
                "set optimized_metrics to one metric per direction (hparams_search/rank_pareto)",
            )

    def _objective_names(self, count: int) -> list[str]:
        """What each job returns, by name (``val/dice``, ``trainable_params``): the study's
        metric names. Only selection metrics may choose anything: ``test/*`` is refused."""
        metrics = OmegaConf.select(self.config, "optimized_metrics", default=None)
        if metrics:
            names = [str(m) for m in metrics]
            for name in names:
                check_sweep_metric(name, "optimized_metrics")
            return names
        single = OmegaConf.select(self.config, "optimized_metric", default=None)
        if single:
            check_sweep_metric(str(single), "optimized_metric")
            if count == 1:
                return [str(single)]
        return [f"objective {i}" for i in range(count)]

    def _validate(self, space: SearchSpace) -> None:
        """Compose the config with each searched value before any trial starts, so a key the
        config lacks or a missing group option fails now, naming the key."""
        loader = self.hydra_context.config_loader
        groups = set(OmegaConf.select(self.config, "hydra.runtime.choices", default={}) or {})

        def compose(overrides: list[str], key: str) -> None:
            try:
                loader.load_sweep_config(self.config, overrides)
            except Exception as err:
                raise ConfigError(key, f"cannot compose the config: {_first_line(err)}") from err

        compose(space.fixed, "hydra.sweeper.params")
        for name, dist in space.distributions.items():
            key = space.where(name)
            plain_key = name not in groups and space.prefixes.get(name, "") == ""
            if plain_key and OmegaConf.select(self.config, name, default=_ABSENT) is _ABSENT:
                raise ConfigError(
                    key,
                    f"the config has no key {name!r}",
                    f"check the spelling, or write +{name} to add a new key",
                )
            for value in probe_values(dist, is_group=name in groups):
                compose(space.overrides({name: value}), key)

    # ---------------------------------------------------------------- study and parent run
    def _sampler(self, space: SearchSpace) -> optuna.samplers.BaseSampler:
        spec = dict(self.settings.sampler)
        if spec.get("_target_", "") == "optuna.samplers.GridSampler":
            spec["_target_"] = f"{__name__}.GridSampler"
            spec["search_space"] = spec.get("search_space") or grid_space(space)
        return instantiate(spec, _convert_="all")

    def _budget(self, sampler: optuna.samplers.BaseSampler) -> int:
        if isinstance(sampler, optuna.samplers.GridSampler):
            sizes = [len(v) for v in sampler._search_space.values()]
            return min(self.settings.n_trials, math.prod(sizes))
        return self.settings.n_trials

    def _open_study(
        self,
        storage: Any,
        space: SearchSpace,
        directions: list[str],
        sampler: Any,
        names: list[str],
    ) -> StudyTrials:
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            sampler=sampler,
            directions=directions,
            load_if_exists=True,
        )
        check_matches(study, space.distributions, directions)
        check_metric_names(study, names)
        if SPACE_ATTR not in study.user_attrs:
            study.set_user_attr(SPACE_ATTR, space_json(space.distributions))
        study.set_user_attr(PRUNER_ATTR, self.settings.pruner)
        if study.metric_names != names:  # optuna-dashboard shows them instead of "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(names)
        return StudyTrials(study, storage)

    def _open_parent(
        self, trials: StudyTrials, url: str, space: SearchSpace, directions: list[str]
    ) -> ParentRun | None:
        """The study's parent run: created by the first process, joined by the others."""
        tracking = OmegaConf.select(self.config, "tracking", default=None)
        settings = (
            {k: OmegaConf.select(tracking, k, default=None) for k in tracking}
            if isinstance(tracking, DictConfig)
            else None
        )
        default = OmegaConf.select(self.config, "task.experiment_name", default=None)
        target = TrackingTarget.from_settings(settings, default)
        if target is None:
            return None
        params = {
            "sweep.sampler": self.settings.sampler.get("_target_", ""),
            "sweep.pruner": self.settings.pruner.get("_target_", ""),
            "sweep.direction": ",".join(directions),
            "sweep.n_trials": self.settings.n_trials,
            "sweep.n_jobs": self.settings.n_jobs,
            "sweep.fixed_overrides": " ".join(space.fixed),
            **{f"sweep.params.{k}": repr(d) for k, d in space.distributions.items()},
        }
        tags = {
            "sah.sweeper": "sah_optuna",
            "sah.sweep_dir": str(self.sweep_dir),
            "optuna.study_name": self.study_name,
            "optuna.storage": display_url(url),
        }
        parent = claim_parent(
            trials.study, target, f"sweep-{self.study_name}", tags=tags, params=params
        )
        if parent.owned:
            from sah.tracking.sweep_runs import log_files

            log_files(target.uri, parent.run_id, [self.sweep_dir / "multirun.yaml"])
        return parent

    # ---------------------------------------------------------------- the loop
    def run(self, arguments: list[str]) -> list[JobReturn]:
        self._check_budget()
        directions = parse_directions(self.settings.direction)
        self._check_objectives(directions)
        self.names = self._objective_names(len(directions))
        space = self._search_space(arguments)
        self._validate(space)
        sampler = self._sampler(space)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        url = absolute_storage_url(
            self.settings.storage or f"sqlite:///{self.sweep_dir / 'optuna.db'}", Path.cwd()
        )
        # Processes sharing a storage must not create it, the study or its parent run twice.
        with storage_lock(url):
            storage = open_storage(url)  # a ConfigError naming the key if it cannot be reached
            trials = self._open_study(storage, space, directions, sampler, self.names)
            parent = self._open_parent(trials, url, space, directions)
        log.info(
            "Optuna study %r in %s: %d of %d trials done before this run",
            self.study_name,
            display_url(url),
            trials.used_budget(),
            self.settings.n_trials,
        )
        if parent is not None:
            log.info("MLflow parent run of this study: %s", parent.run_id)
        error: BaseException | None = None
        try:
            with signals_interrupt():
                results = self._loop(trials, space, url, parent, self._budget(sampler))
                write_results(trials.study, self.sweep_dir, url, parent)
            return results
        except BaseException as err:
            error = err
            raise
        finally:
            self._leave(trials, url, parent, end_status(error))

    def _leave(self, trials: StudyTrials, url: str, parent: ParentRun | None, status: str) -> None:
        """Sign out of the study; the last process out ends the parent run with ``status``."""
        try:
            with storage_lock(url):
                ended = leave(trials.study, parent, status, self.settings.heartbeat_s)
        except Exception as err:  # the storage went away: still end what this process owns
            log.warning("could not sign out of the study: %s", err)
            from sah.tracking.sweep_runs import close_parent_run

            close_parent_run(parent, status)
            ended = True
        if parent is not None and parent.owned:
            if ended:
                log.info("MLflow parent run %s ended %s", parent.run_id, status)
            else:
                log.info(
                    "MLflow parent run %s stays open: other processes of the study still run",
                    parent.run_id,
                )

    def _concurrency(self) -> int:
        n = self.settings.n_jobs
        if n > 1 and type(self.launcher).__name__ == "BasicLauncher":
            log.warning(
                "n_jobs=%d: the basic launcher runs jobs inside this process, one at a time; "
                "use hydra/launcher=gpus (or joblib, slurm) to run trials in parallel",
                n,
            )
            return 1
        return n

    def _loop(
        self,
        trials: StudyTrials,
        space: SearchSpace,
        url: str,
        parent: ParentRun | None,
        budget: int,
    ) -> list[JobReturn]:
        slots = self._concurrency()
        asked: dict[int, optuna.Trial] = {}
        results: list[JobReturn] = []
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(trials, asked), name="sah-optuna-heartbeat", daemon=True
        )
        heartbeat.start()
        pool = ThreadPoolExecutor(slots, thread_name_prefix="sah-trial") if slots > 1 else None
        futures: dict[Future, optuna.Trial] = {}
        try:
            while True:
                while len(asked) < slots:
                    trial = self._ask(trials, space, url, asked, budget)
                    if trial is None:
                        break
                    if self._reuse_if_done(trials, trial, space):
                        continue
                    asked[trial.number] = trial
                    overrides = self._overrides(trial, space, url, parent)
                    if pool is None:  # in this thread: the basic launcher is not thread-safe
                        outcome = self._launch(overrides, trial.number)
                        self._finish(trials, asked.pop(trial.number), outcome, parent, results)
                    else:
                        futures[pool.submit(self._launch, overrides, trial.number)] = trial
                if not futures:
                    break
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    trial = futures.pop(future)
                    asked.pop(trial.number)
                    self._finish(trials, trial, future.result(), parent, results)
        except BaseException:
            for number, trial in list(asked.items()):
                trials.interrupt(number, trial.params, self.settings.retry_interrupted)
            raise
        finally:
            self._stop_heartbeat.set()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        return results

    def _heartbeat(self, trials: StudyTrials, asked: dict[int, optuna.Trial]) -> None:
        while not self._stop_heartbeat.wait(self.settings.heartbeat_s):
            try:
                trials.mark_alive(list(asked))
                mark_alive(trials.study)  # this process still works on the study
            except Exception as err:  # a storage hiccup must not end the sweep
                log.warning("could not mark running trials alive: %s", err)

    def _ask(
        self,
        trials: StudyTrials,
        space: SearchSpace,
        url: str,
        asked: dict[int, optuna.Trial],
        budget: int,
    ) -> optuna.Trial | None:
        with storage_lock(url):
            trials.fail_stale(
                self.settings.heartbeat_s, set(asked), retry=self.settings.retry_interrupted
            )
            if trials.used_budget() >= budget:
                return None
            size = space_size(space) if not self.settings.custom_search_space else None
            if size is not None and len(trials.completed_configurations()) >= size:
                log.info("all %d configurations of the search space are complete", size)
                return None
            trial = trials.study.ask(fixed_distributions=dict(space.distributions))
        trials.mark_alive([trial.number])
        if self.settings.custom_search_space:
            get_method(self.settings.custom_search_space)(self.config, trial)
        return trial

    def _overrides(
        self, trial: optuna.Trial, space: SearchSpace, url: str, parent: ParentRun | None
    ) -> list[str]:
        overrides = space.overrides(trial.params)
        if isinstance(OmegaConf.select(self.config, "optuna", default=None), DictConfig):
            overrides += [
                f"optuna.storage={_quote(url)}",
                f"optuna.study_name={_quote(self.study_name)}",
                f"optuna.trial_number={trial.number}",
            ]
        if parent is not None:
            overrides.append(f"tracking.parent_run_id={_quote(parent.run_id)}")
        shown = [o.replace(url, display_url(url)) for o in overrides]  # no password stored
        trial.set_user_attr("sah.overrides", shown)
        trial.set_user_attr("sah.sweeper", this_process())
        sampled = " ".join(f"{k}={v}" for k, v in trial.params.items())
        log.info("trial %d: %s", trial.number, sampled)
        return overrides

    def _reuse_if_done(self, trials: StudyTrials, trial: optuna.Trial, space: SearchSpace) -> bool:
        """A configuration the study already completed is not run again: the new trial takes
        the earlier trial's values (and MLflow run), and the sweep says so."""
        earlier = trials.completed_configurations().get(config_key(trial.params))
        if earlier is None:
            return False
        trial.set_user_attr(REUSED_ATTR, earlier.number)
        if earlier.user_attrs.get("mlflow_run_id"):
            trial.set_user_attr("mlflow_run_id", earlier.user_attrs["mlflow_run_id"])
        trials.study.tell(trial, values=earlier.values)
        sampled = " ".join(f"{k}={v}" for k, v in trial.params.items())
        log.info(
            "trial %d: %s was completed by trial %d; its values reused, no job run: %s",
            trial.number,
            sampled,
            earlier.number,
            format_values(self.names, earlier.values),
        )
        return True

    def _launch(self, overrides: list[str], number: int) -> JobReturn | BaseException:
        try:
            (ret,) = self.launcher.launch([overrides], initial_job_idx=number)
            return ret
        except Exception as err:  # the launcher itself failed (worker killed, submit error)
            return err

    def _finish(
        self,
        trials: StudyTrials,
        trial: optuna.Trial,
        outcome: JobReturn | BaseException,
        parent: ParentRun | None,
        results: list[JobReturn],
    ) -> None:
        if isinstance(outcome, JobReturn):
            results.append(outcome)
        n_objectives = len(trials.study.directions)
        state, values, problem = interpret(outcome, n_objectives)
        run_id = self._child_run(parent, trial) if parent is not None else None
        frozen = trials.study.tell(trial, values=values, state=state, skip_if_finished=True)
        if problem:
            log.error("trial %d failed: %s", trial.number, problem)
        else:
            shown = format_values(self.names, frozen.values)
            log.info("trial %d %s: %s", trial.number, frozen.state.name, shown)
        if parent is not None and run_id is not None:
            self._tag_child(parent, run_id, frozen)

    def _child_run(self, parent: ParentRun, trial: optuna.Trial) -> str | None:
        """The job's MLflow run, linked from the trial (``mlflow_run_id``) while it is open."""
        from sah.tracking.sweep_runs import find_child_run

        try:
            run_id = find_child_run(parent.uri, parent.run_id, self.study_name, trial.number)
            if run_id is not None:
                trial.set_user_attr("mlflow_run_id", run_id)
            return run_id
        except Exception as err:
            log.warning("could not find the MLflow run of trial %d: %s", trial.number, err)
            return None

    def _tag_child(self, parent: ParentRun, run_id: str, frozen: Any) -> None:
        """Mark the job's MLflow run with the trial's final state and values."""
        from sah.tracking import get_client

        try:
            client = get_client(parent.uri)
            client.set_tag(run_id, "optuna.state", frozen.state.name)
            if frozen.values is not None:
                client.set_tag(run_id, "optuna.values", format_values(self.names, frozen.values))
        except Exception as err:
            log.warning("could not tag the MLflow run of trial %d: %s", frozen.number, err)


def interpret(
    outcome: JobReturn | BaseException, n_objectives: int
) -> tuple[TrialState, list[float] | None, str | None]:
    """(state, values, problem) of a finished job, for ``study.tell``."""
    if isinstance(outcome, BaseException):
        return TrialState.FAIL, None, f"the launcher failed: {type(outcome).__name__}: {outcome}"
    if outcome.status != JobStatus.COMPLETED:
        error = outcome._return_value  # the job's exception
        if isinstance(error, optuna.TrialPruned):
            return TrialState.PRUNED, None, None
        return TrialState.FAIL, None, f"{type(error).__name__}: {error}"
    value = outcome.return_value
    values = list(value) if isinstance(value, list | tuple) else [value]
    if len(values) != n_objectives or not all(
        isinstance(v, Real) and not isinstance(v, bool) for v in values
    ):
        return (
            TrialState.FAIL,
            None,
            f"the job returned {value!r}; a study with {n_objectives} objective(s) needs "
            f"{n_objectives} number(s) (optimized_metric / optimized_metrics)",
        )
    floats = [float(v) for v in values]
    if not all(math.isfinite(v) for v in floats):
        return TrialState.FAIL, None, f"the job returned {value!r}, not a finite number"
    return TrialState.COMPLETE, floats, None


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its ``study.stop()`` once the grid is done: that works only
    inside ``study.optimize``; here the sweep's budget, capped at the grid size, ends it."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def grid_space(space: SearchSpace) -> dict[str, list[Any]]:
    """The grid sampler's value lists from categorical and stepped params."""
    grid: dict[str, list[Any]] = {}
    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step) + 1
            grid[name] = [round(dist.low + i * dist.step, 12) for i in range(n)]
        else:
            raise ConfigError(
                space.where(name),
                "the grid sampler needs choice(...) or range(...) values, not an interval",
            )
    return grid
