"""A sweep's MLflow parent run ends with the sweep: FINISHED when it completes, KILLED on Ctrl-C
(SIGINT) or SIGTERM, FAILED when the sweep itself crashes; for both sweepers, each run as a
real process of the tiny app. The basic sweeper also prints a line per job."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import (
    TINY_APP,
    children_and_parents,
    clean_env,
    mlflow_runs,
    optuna_trials,
    tail,
)

OPTUNA = ["-m", "hydra/sweeper=sah_optuna", "hydra.sweeper.n_trials=2", "x=interval(0,1)"]
BASIC = ["-m", "x=0.1,0.2"]


def the_parent(workdir: Path):
    _, parents = children_and_parents(mlflow_runs(workdir, "tiny"))
    assert len(parents) == 1, parents
    return parents[0]


def interrupt_when(workdir: Path, args: list[str], line: str, signum: int) -> str:
    """Start the app, send ``signum`` once it printed ``line`` (its first job is then running,
    sleeping), and return everything it printed."""
    proc = subprocess.Popen(
        [sys.executable, str(TINY_APP), *args, "sleep_s=120"],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        for text in proc.stdout:  # type: ignore[union-attr]
            seen.append(text)
            if line in text:
                proc.send_signal(signum)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode != 0, output
    assert line in output, output
    return output


@pytest.mark.parametrize(
    "signum",
    [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM],
    ids=["SIGINT", "SIGTERM"],
)
def test_an_interrupted_basic_sweep_ends_its_parent_killed(workdir: Path, signum: int) -> None:
    output = interrupt_when(workdir, BASIC, "job 0: x=0.1", signum)
    parent = the_parent(workdir)
    assert parent.info.status == "KILLED", output
    assert f"MLflow parent run {parent.info.run_id} ended KILLED" in output


@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGTERM"],
)
def test_an_interrupted_optuna_sweep_ends_its_parent_killed(workdir: Path, signum: int) -> None:
    output = interrupt_when(workdir, OPTUNA, "trial 0: x=", signum)
    parent = the_parent(workdir)
    assert parent.info.status == "KILLED", output
    (trial,) = optuna_trials(f"sqlite:///{workdir / 'multirun' / 'optuna.db'}", "app")[:1]
    assert trial.state == TrialState.FAIL and trial.user_attrs["sah.interrupted"]


def test_a_crashed_basic_sweep_ends_its_parent_failed(run_app, workdir: Path) -> None:
    result = run_app("-m", "x=0.1,0.9", "fail_when=0.5")  # Hydra's basic sweeper stops on it
    assert result.returncode != 0, tail(result)
    assert the_parent(workdir).info.status == "FAILED"
    assert "job 1 FAILED: RuntimeError: injected failure at x=0.9" in result.stderr


@pytest.mark.slow
def test_a_crashed_optuna_sweep_ends_its_parent_failed(run_app, workdir: Path) -> None:
    result = run_app(*OPTUNA, "hydra.sweeper.custom_search_space=app.broken_search_space")
    assert result.returncode != 0, tail(result)
    assert "bug in the custom search space" in result.stderr
    assert the_parent(workdir).info.status == "FAILED"


def test_a_basic_sweep_prints_its_parent_and_a_line_per_job(run_app, workdir: Path) -> None:
    result = run_app(*BASIC)
    assert result.returncode == 0, tail(result)
    parent = the_parent(workdir)
    assert parent.info.status == "FINISHED"
    lines = [
        line.split("] ", 1)[-1] for line in result.stderr.splitlines() if "[sah.sweep]" in line
    ]
    assert lines[0] == f"MLflow parent run of this sweep: {parent.info.run_id} (experiment 'tiny')"
    # val/score of the tiny app: 1 - (x - 0.3)^2 - 0.01 y with y = 1.
    assert lines[1:5] == [
        "job 0: x=0.1",
        "job 0 COMPLETED: val/score=0.95",
        "job 1: x=0.2",
        "job 1 COMPLETED: val/score=0.98",
    ]
    assert lines[-1] == f"MLflow parent run {parent.info.run_id} ended FINISHED"
