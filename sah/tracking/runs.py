"""A tracked run's life and identity: which configuration it is, and how it ends.

A run is created only after its whole config has been checked, and it ends FINISHED when the
task returns, KILLED when SIGINT or SIGTERM stopped it (Ctrl-C, ``kill``, a SLURM
cancellation), FAILED on any other exception, so the MLflow UI never shows a dead run as
RUNNING.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mlflow.tracking import MlflowClient

CONFIG_ID_TAG = "sah.config_id"

log = logging.getLogger("sah.train")

# Keys that place a run (which fold, which seed, where files go), not what was trained: runs
# that differ only in these are the same configuration.
_PLACEMENT_ROOTS = ("fold", "seed", "paths", "tracking", "optuna", "hydra", "resume")
_PLACEMENT_LEAVES = ("fold", "split_seed", "seed", "cache_dir", "cache_root", "dirpath", "root")
# Keys naming code by its import path: only the class name counts, so moving a module does not
# make its runs a new configuration.
_CODE_KEYS = ("_target_", "runner")


def config_id(resolved: Mapping[str, Any]) -> str:
    """12 hex digits naming a configuration: the resolved config without fold, seed and the
    path and tracking keys, classes by name rather than module path. Folds and repeats of one
    configuration share it; runs that differ in anything trained (lr, alpha, init, epochs, ...)
    do not."""
    kept = _without_placement(resolved, top=True)
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _without_placement(tree: Any, top: bool = False) -> Any:
    if isinstance(tree, Mapping):
        drop = _PLACEMENT_ROOTS if top else _PLACEMENT_LEAVES
        return {
            str(k): v.rsplit(".", 1)[-1]
            if str(k) in _CODE_KEYS and isinstance(v, str)
            else _without_placement(v)
            for k, v in tree.items()
            if str(k) not in drop and not str(k).endswith("_dir")
        }
    if isinstance(tree, list | tuple):
        return [_without_placement(v) for v in tree]
    return tree


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised where the process was when it arrived."""


@contextmanager
def signals_as_interrupts(received: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM raise ``StopSignal`` (and are recorded in ``received``) instead of
    killing the process, so the run can be ended first. Only the main thread can own signals;
    elsewhere (a sweeper's worker thread) the caller's handlers stay as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        received.append(signum)
        raise StopSignal(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def run_life(client: MlflowClient, run_id: str) -> Iterator[None]:
    """End ``run_id`` FINISHED, KILLED or FAILED, whatever ends the block.

    Lightning turns a KeyboardInterrupt inside ``fit`` into ``sys.exit(1)`` and a SIGTERM into
    its own SystemExit, so a stop is recognised by the signal recorded here, not by the type
    of the exception that reaches this frame."""
    received: list[int] = []
    try:
        with signals_as_interrupts(received):
            yield
    except BaseException as err:
        stopped = bool(received) or isinstance(err, KeyboardInterrupt)
        status = "KILLED" if stopped else "FAILED"
        client.set_terminated(run_id, status)
        cause = signal.Signals(received[0]).name if received else type(err).__name__
        log.warning("MLflow run %s ended %s (%s)", run_id, status, cause)
        raise
    client.set_terminated(run_id, "FINISHED")
