"""One MLflow parent run per study, joined by every process that works on the study.

Several sweeper processes may share a study (a database server, a journal file): the first one
to claim the parent creates it and records its id on the study; every later process, and a
later rerun of the study, finds it there and nests its trials under the same run. Claiming
happens under the storage lock, so two processes starting together cannot both create one.

Each process also signs itself in on the study (a user attr ``sah.process.<host>:<pid>``
holding its last sign of life, refreshed with the trials' heartbeat). A process leaving marks
itself ``left``; only the last live one ends the parent run, with its own end status
(FINISHED, KILLED, FAILED), so a process that finishes early does not end the parent while
another still runs trials under it. A process killed without warning no longer counts: at once
on the same machine (its process id is gone), after a few missed heartbeats elsewhere.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import optuna

from hydra_plugins.sah_optuna_sweeper._study import PARENT_ATTR, STALE_HEARTBEATS, TRACKING_ATTR
from sah.errors import ConfigError
from sah.tracking.sweep_runs import (
    ParentRun,
    TrackingTarget,
    close_parent_run,
    open_parent_run,
    require_run,
)

MEMBER_PREFIX = "sah.process."
LEFT = "left"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_parent(
    study: optuna.Study,
    target: TrackingTarget,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
) -> ParentRun:
    """The study's parent run, created by the first process and joined by the others. Call it
    under ``storage_lock``."""
    if target.parent_run_id:  # the user named a parent: nest under it, leave it as it is
        return open_parent_run(target, run_name, tags, params)
    previous = study.user_attrs.get(PARENT_ATTR)
    if previous and study.user_attrs.get(TRACKING_ATTR) == target.uri:
        try:
            require_run(target.uri, previous)
        except ConfigError:
            previous = None  # deleted from MLflow: start a new parent
    else:
        previous = None
    parent = open_parent_run(target, run_name, tags, params, reopen=previous)
    if parent.run_id != previous:
        study.set_user_attr(PARENT_ATTR, parent.run_id)
        study.set_user_attr(TRACKING_ATTR, target.uri)
    mark_alive(study)
    return parent


def mark_alive(study: optuna.Study) -> None:
    study.set_user_attr(MEMBER_PREFIX + this_process(), time.time())


def _still_running(member: str) -> bool:
    """False for a process of this machine that no longer exists (killed with SIGKILL); other
    machines' processes cannot be asked, their marks going stale tells."""
    host, _, pid = member.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def live_members(study: optuna.Study, heartbeat_s: float) -> list[str]:
    """Processes of the study, other than this one, that showed a sign of life lately."""
    now, me = time.time(), MEMBER_PREFIX + this_process()
    return [
        key.removeprefix(MEMBER_PREFIX)
        for key, value in study.user_attrs.items()
        if key.startswith(MEMBER_PREFIX)
        and key != me
        and isinstance(value, int | float)
        and now - value <= STALE_HEARTBEATS * heartbeat_s
        and _still_running(key.removeprefix(MEMBER_PREFIX))
    ]


def leave(study: optuna.Study, parent: ParentRun | None, status: str, heartbeat_s: float) -> bool:
    """Sign this process out; end the parent with ``status`` when no other process is left.
    Call it under ``storage_lock``. True when the parent was ended (or is not the study's)."""
    study.set_user_attr(MEMBER_PREFIX + this_process(), LEFT)
    if parent is None or not parent.owned:
        return True
    others = live_members(study, heartbeat_s)
    if others:
        return False
    close_parent_run(parent, status)
    return True
