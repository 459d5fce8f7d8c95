"""A tracked run's life: created only for a valid config, ended FINISHED, FAILED or KILLED."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sah.tracking.runs import StopSignal, run_life


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")


def new_run(client: MlflowClient) -> str:
    experiment = client.create_experiment("life")
    return client.create_run(experiment).info.run_id


def status(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


def test_a_run_ends_finished_failed_or_killed(client: MlflowClient) -> None:
    finished = new_run(client)
    with run_life(client, finished):
        pass
    assert status(client, finished) == "FINISHED"

    failed = new_run(client)
    with pytest.raises(ValueError), run_life(client, failed):
        raise ValueError("a crash")
    assert status(client, failed) == "FAILED"

    killed = new_run(client)
    with pytest.raises(StopSignal), run_life(client, killed):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert status(client, killed) == "KILLED"
    # The handlers are the caller's again afterwards.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_turned_into_system_exit_still_counts_as_killed(client: MlflowClient) -> None:
    """Lightning catches a KeyboardInterrupt inside fit and calls sys.exit(1)."""
    run_id = new_run(client)
    with pytest.raises(SystemExit), run_life(client, run_id):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise SystemExit(1) from None
    assert status(client, run_id) == "KILLED"


def sah_train(*args: str, cwd: Path, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["sah-train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def runs_of(workdir: Path) -> list:
    store = workdir / "mlflow.db"
    if not store.exists():
        return []
    client = MlflowClient(f"sqlite:///{store}")
    try:
        experiments = client.search_experiments()
    except Exception:  # the store is being created by the run itself
        return []
    return client.search_runs([e.experiment_id for e in experiments]) if experiments else []


def test_a_config_error_found_after_composition_leaves_no_run(tmp_path: Path, tiny_overrides):
    done = sah_train(*tiny_overrides(tmp_path), "fold=7", cwd=tmp_path)
    _, stderr = done.communicate(timeout=600)
    assert done.returncode == 2
    assert "config key 'fold'" in stderr
    assert [r.info.status for r in runs_of(tmp_path)] == []


def test_a_test_metric_is_refused_as_the_sweepers_objective(tmp_path: Path, tiny_overrides):
    done = sah_train(*tiny_overrides(tmp_path), "optimized_metric=test/dice", cwd=tmp_path)
    _, stderr = done.communicate(timeout=600)
    assert done.returncode == 2
    (line,) = [x for x in stderr.splitlines() if x.startswith("sah-train:")]
    assert "config key 'optimized_metric'" in line and "'test/dice'" in line
    assert "val/dice" in line  # the fix
    assert runs_of(tmp_path) == []


def test_a_crash_during_training_leaves_the_run_failed(tmp_path: Path, tiny_overrides) -> None:
    # The checkpoint callback monitors optimized_metric; a name nothing logs stops fit.
    done = sah_train(*tiny_overrides(tmp_path), "optimized_metric=val/no_such_metric", cwd=tmp_path)
    done.communicate(timeout=600)
    assert done.returncode != 0
    assert [r.info.status for r in runs_of(tmp_path)] == ["FAILED"]


def test_sigterm_during_training_leaves_the_run_killed(tmp_path: Path, tiny_overrides) -> None:
    overrides = [*tiny_overrides(tmp_path), "trainer.max_epochs=500"]
    process = sah_train(*overrides, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        running = [r for r in runs_of(tmp_path) if r.info.status == "RUNNING"]
        if running and "train/loss" in running[0].data.metrics:  # an epoch has finished
            break
        time.sleep(1)
    assert process.poll() is None, process.communicate()[1][-2000:]
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode != 0
    assert [r.info.status for r in runs_of(tmp_path)] == ["KILLED"]
