"""Which processes still work on a shared study: the last one out ends the parent run."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import optuna

from hydra_plugins.sah_optuna_sweeper._parent import LEFT, MEMBER_PREFIX, leave, live_members
from sah.tracking.sweep_runs import ParentRun


def test_live_members_are_those_alive_and_recent() -> None:
    study = optuna.create_study()
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its process id is gone
    now = time.time()
    study.set_user_attr(f"{MEMBER_PREFIX}{host}:{os.getppid()}", now)  # alive, recent
    study.set_user_attr(f"{MEMBER_PREFIX}{host}:{dead.pid}", now)  # killed: not alive
    study.set_user_attr(f"{MEMBER_PREFIX}other-node:12", now - 30)  # elsewhere, recent
    study.set_user_attr(f"{MEMBER_PREFIX}other-node:13", now - 3600)  # elsewhere, stale
    study.set_user_attr(f"{MEMBER_PREFIX}other-node:14", LEFT)
    alive = live_members(study, heartbeat_s=60)
    assert sorted(alive) == sorted([f"{host}:{os.getppid()}", "other-node:12"])


def test_the_last_process_out_ends_the_parent(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"))
    parent = ParentRun(uri, run.info.run_id, owned=True)
    study = optuna.create_study()
    other = f"{MEMBER_PREFIX}other-node:12"
    study.set_user_attr(other, time.time())
    assert not leave(study, parent, "KILLED", heartbeat_s=60)  # the other still runs trials
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    study.set_user_attr(other, LEFT)
    assert leave(study, parent, "FINISHED", heartbeat_s=60)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
