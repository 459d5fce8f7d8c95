"""Optuna studies on real database servers (private PostgreSQL and MariaDB servers on 127.0.0.1,
see db_servers.py): processes that start together create the schema once, share one parent run
and the trial budget; a missing database driver is named with its fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sweep_helpers import (
    REPO,
    TINY_APP,
    TINY_TRAIN,
    children_and_parents,
    clean_env,
    optuna_trials,
)

from sah.errors import ConfigError
from sah.tracking.studies import display_url, open_storage

SWEEP = ["-m", "hydra/sweeper=sah_optuna"]
SAH_TRAIN = [sys.executable, "-m", "sah.cli.train"]


def start_together(commands: list[list[str]], workdir: Path, **env: str) -> list[tuple[int, str]]:
    """Run the commands at once; (return code, output) of each."""
    procs = [
        subprocess.Popen(
            cmd,
            cwd=workdir,
            env=clean_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for cmd in commands
    ]
    return [(p.wait(timeout=900), p.stdout.read()) for p in procs]  # type: ignore[union-attr]


def test_a_missing_driver_is_named_with_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(ConfigError) as caught:
        open_storage("postgresql://sah:secret@127.0.0.1:9/optuna")
    message = str(caught.value)
    assert message.startswith("config key 'hydra.sweeper.storage': ")
    assert "database driver is not installed" in message and "psycopg" in message
    assert "pip install -e '.[postgres]'" in message and "postgresql+psycopg2://" in message
    assert "secret" not in message  # the password is never shown

    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    with pytest.raises(ConfigError, match=r"mysqlclient.*mysql\+pymysql://"):
        open_storage("mysql://sah@127.0.0.1:9/optuna")


def test_passwords_are_hidden_from_what_is_shown() -> None:
    assert display_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert display_url("sqlite:////a/b.db") == "sqlite:////a/b.db"


def test_processes_starting_together_create_the_schema_once(
    fresh_server_database: str, tmp_path: Path
) -> None:
    """Without the server lock, one of two processes creating the schema of a new PostgreSQL
    database dies with UniqueViolation (CREATE TYPE studydirection). Each process waits for a
    start signal after its imports, so they really open the storage at the same moment."""
    go = tmp_path / "go"
    code = (
        "import sys, time, pathlib\n"
        "from sah.tracking.studies import open_storage\n"
        "pathlib.Path(sys.argv[2]).touch()\n"
        "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.01)\n"
        "open_storage(sys.argv[3])\n"
        "print('opened')\n"
    )
    commands = [
        [sys.executable, "-c", code, str(go), str(tmp_path / f"ready{i}"), fresh_server_database]
        for i in range(3)
    ]
    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for cmd in commands
    ]
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)):
        assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
    go.touch()
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert all(out.strip().endswith("opened") for out in outputs), outputs


@pytest.mark.slow
def test_two_sweeps_started_together_share_one_study(
    workdir: Path, fresh_server_database: str
) -> None:
    """Two sah_optuna processes on one study in a fresh server database: 6 unique, complete
    trials between them, one MLflow parent run holding all 6 child runs, ended by the last
    process."""
    fresh_database = fresh_server_database
    command = [
        sys.executable,
        str(TINY_APP),
        *SWEEP,
        f"hydra.sweeper.storage={fresh_database}",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=6",
        "x=interval(0,1)",
        "sleep_s=2",
    ]
    done = start_together([[*command, f"hydra.sweep.dir=multirun/p{i}"] for i in (0, 1)], workdir)
    assert [rc for rc, _ in done] == [0, 0], [out[-3000:] for _, out in done]

    trials = optuna_trials(fresh_database, "shared")
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["sah.sweeper"] for t in trials}) == 2  # both processes ran trials

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    children, parents = children_and_parents(client.search_runs([experiment.experiment_id]))
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
    assert len(children) == 6
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == list(range(6))
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.storage"] == display_url(fresh_database)
    # The first process out leaves the parent open for the other, which ends it.
    ended = [out for _, out in done if f"MLflow parent run {parent.info.run_id} ended" in out]
    kept = [out for _, out in done if "stays open: other processes of the study" in out]
    assert len(ended) == 1 and len(kept) == 1


@pytest.mark.slow
def test_two_sah_train_sweeps_on_one_postgresql_study(
    workdir: Path, fresh_database: str, sah_cache: Path
) -> None:
    """The issue-14 scenario with the real sah-train: two processes started together on a
    fresh database; both succeed, 4 unique complete trials, one parent with all 4 runs."""
    command = [
        *SAH_TRAIN,
        *SWEEP,
        "hydra/sweeper/sampler=grid",
        f"hydra.sweeper.storage={fresh_database}",
        "hydra.sweeper.study_name=ranks",
        "hydra.sweeper.n_trials=4",
        "adapter.rank=choice(1,2,3,4)",
        *TINY_TRAIN,
    ]
    done = start_together(
        [[*command, f"hydra.sweep.dir=multirun/p{i}"] for i in (0, 1)],
        workdir,
        SAH_CACHE_DIR=str(sah_cache),
    )
    assert [rc for rc, _ in done] == [0, 0], [out[-3000:] for _, out in done]

    trials = optuna_trials(fresh_database, "ranks")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.params["adapter.rank"] for t in trials) == [1, 2, 3, 4]  # none twice

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sah-segmentation")
    children, parents = children_and_parents(client.search_runs([experiment.experiment_id]))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    for child in children:
        trial = trials[int(child.data.tags["optuna.trial_number"])]
        assert child.data.metrics["val/dice"] == pytest.approx(trial.value)
