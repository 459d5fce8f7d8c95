"""Parent runs: one MLflow run per sweep, each job's run nested under it as a child.

MLflow nests a run under another through the tag ``mlflow.parentRunId``; the UI then folds a
sweep's jobs under one row. The parent holds what describes the sweep as a whole: its search
space, the study's name and storage, and at the end the best trial or the Pareto set.

Both sweepers use this module: the basic one through sah's Hydra callback
(``sah.cli.sweep_callback``), the sah_optuna sweeper directly. The parent ends FINISHED when the
sweep completes, KILLED when it is interrupted (Ctrl-C, SIGTERM), FAILED when it crashes.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run

from sah.errors import ConfigError
from sah.tracking.mlflow_run import get_client, log_params, resolve_experiment

PARENT_ENV = "SAH_PARENT_RUN_ID"
KIND_TAG = "sah.kind"

log = logging.getLogger("sah.sweep")


def show_sweep_progress() -> logging.Logger:
    """The ``sah.sweep`` logger, printing to stderr (see ``stderr_lines``)."""
    return stderr_lines("sah.sweep")


def stderr_lines(name: str) -> logging.Logger:
    """Logger ``name`` printing ``[HH:MM:SS][name] message`` to stderr even when the app turned
    Hydra's logging off (sah-train does: hydra/hydra_logging=none). The sweeper and both
    launchers report their jobs through it."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"[%(asctime)s][{name}] %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


@dataclass(frozen=True)
class TrackingTarget:
    """Where a sweep's runs go: MLflow store, experiment, artifact root, a user-named parent."""

    uri: str
    experiment: str
    artifact_location: str | None
    parent_run_id: str | None

    @classmethod
    def from_settings(
        cls, tracking: Mapping[str, Any] | None, default_experiment: str | None
    ) -> TrackingTarget | None:
        """From the ``tracking`` settings of an app; None for an app without them."""
        if not tracking or not tracking.get("uri"):
            return None
        experiment = tracking.get("experiment") or default_experiment
        if not experiment:
            return None
        parent = tracking.get("parent_run_id")
        location = tracking.get("artifact_location")
        return cls(
            uri=str(tracking["uri"]),
            experiment=str(experiment),
            artifact_location=str(location) if location else None,
            parent_run_id=str(parent) if parent else None,
        )


@dataclass(frozen=True)
class ParentRun:
    """The parent run a sweep process logs under; ``owned`` when the sweep opened it (and so
    ends it), not when the user named an existing run with ``tracking.parent_run_id``."""

    uri: str
    run_id: str
    owned: bool


def require_run(tracking_uri: str, run_id: str, key: str = "tracking.parent_run_id") -> Run:
    """The run ``run_id``, or a ConfigError naming ``key`` when the store has no such run."""
    from mlflow.exceptions import MlflowException

    try:
        return get_client(tracking_uri).get_run(run_id)
    except MlflowException as err:
        raise ConfigError(
            key,
            f"there is no MLflow run {run_id!r} in {tracking_uri}",
            "give the id of an existing run (see the MLflow UI) or leave it null",
        ) from err


def start_parent_run(
    tracking_uri: str,
    experiment: str,
    artifact_location: str | None,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    run_id: str | None = None,
) -> str:
    """Create the sweep's parent run, or reopen ``run_id`` (a resumed study keeps its parent)."""
    client = get_client(tracking_uri)
    if run_id:
        require_run(tracking_uri, run_id)
        client.update_run(run_id, status="RUNNING")
    else:
        experiment_id = resolve_experiment(client, experiment, artifact_location)
        run = client.create_run(experiment_id, run_name=run_name, tags={KIND_TAG: "sweep"})
        run_id = run.info.run_id
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))
    log_params(client, run_id, params)
    return run_id


def open_parent_run(
    target: TrackingTarget,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    reopen: str | None = None,
) -> ParentRun:
    """The sweep's parent: the run the user named (checked, left as it is), else ``reopen``
    (an earlier parent of the same study) set running again, else a new run."""
    if target.parent_run_id:
        require_run(target.uri, target.parent_run_id)
        return ParentRun(target.uri, target.parent_run_id, owned=False)
    run_id = start_parent_run(
        target.uri,
        target.experiment,
        target.artifact_location,
        run_name=run_name,
        tags=tags,
        params=params,
        run_id=reopen,
    )
    return ParentRun(target.uri, run_id, owned=True)


def end_parent_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    get_client(tracking_uri).set_terminated(run_id, status=status)


def close_parent_run(parent: ParentRun | None, status: str) -> None:
    """End a parent the sweep owns with ``status``; a store that fails here only warns."""
    if parent is None or not parent.owned:
        return
    try:
        end_parent_run(parent.uri, parent.run_id, status)
    except Exception as err:
        log.warning("could not close the MLflow parent run %s: %s", parent.run_id, err)


def end_status(error: BaseException | None) -> str:
    """The parent's final status: FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (a crash)."""
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM (kill, SLURM preemption) ends the sweep like Ctrl-C, as a KeyboardInterrupt, so
    running trials are marked interrupted and the parent run is closed KILLED instead of the
    process dying silently. Only the main thread can install handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = install_interrupt_handlers()
    try:
        yield
    finally:
        restore_handlers(previous)


def install_interrupt_handlers(
    on_signal: Callable[[int], None] | None = None,
) -> dict[int, Any]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (after ``on_signal``);
    returns the handlers they replace."""

    def interrupt(signum: int, frame: Any) -> None:
        if on_signal is not None:
            on_signal(signum)
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    return {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore_handlers(previous: Mapping[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def log_files(
    tracking_uri: str, run_id: str, paths: list[Path], artifact_path: str | None = None
) -> None:
    client = get_client(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def find_child_run(
    tracking_uri: str, parent_run_id: str, study_name: str, number: int
) -> str | None:
    """Id of the job run of Optuna trial ``number`` under a parent run, if it was created."""
    client = get_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
            f"and tags.`optuna.study_name` = '{study_name}' "
            f"and tags.`optuna.trial_number` = '{number}'"
        ),
        max_results=5,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def format_values(names: list[str], values: list[float] | None) -> str:
    """``val/dice=0.6123, trainable_params=19536``: what a sweep's lines and files show."""
    if values is None:
        return "-"
    return ", ".join(f"{n}={format_number(v)}" for n, v in zip(names, values, strict=False))


def format_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def check_sweep_metric(name: str, key: str) -> None:
    """Only selection metrics (``val/*``) and ``trainable_params`` may be returned to a sweeper:
    a run's test patients (``test/*``) never choose anything."""
    if name == "trainable_params" or name.startswith("val/"):
        return
    if name.startswith("test/"):
        problem = f"{name!r} is measured on the run's test patients, which may not choose anything"
    else:
        problem = f"{name!r} is not a selection metric"
    raise ConfigError(key, problem, "return a val/* metric (val/dice, val/auc) or trainable_params")
