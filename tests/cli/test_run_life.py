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
    import uuid

    experiment = client.create_experiment(f"life-{uuid.uuid4().hex[:8]}")
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


def sah_train(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """sah-train writing to files (a pipe nobody reads would block a long run's output)."""
    return subprocess.Popen(
        ["sah-train", *args],
        cwd=cwd,
        stdout=(cwd / "stdout.log").open("w"),
        stderr=(cwd / "stderr.log").open("w"),
        text=True,
    )


def finish(process: subprocess.Popen[str], cwd: Path, timeout: float = 600) -> str:
    """Wait for the process; its stderr."""
    process.wait(timeout=timeout)
    return (cwd / "stderr.log").read_text()


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
    stderr = finish(done, tmp_path)
    assert done.returncode == 2
    assert "config key 'fold'" in stderr
    assert [r.info.status for r in runs_of(tmp_path)] == []


def test_a_test_metric_is_refused_as_the_sweepers_objective(tmp_path: Path, tiny_overrides):
    done = sah_train(*tiny_overrides(tmp_path), "optimized_metric=test/dice", cwd=tmp_path)
    stderr = finish(done, tmp_path)
    assert done.returncode == 2
    (line,) = [x for x in stderr.splitlines() if x.startswith("sah-train:")]
    assert "config key 'optimized_metric'" in line and "'test/dice'" in line
    assert "val/dice" in line  # the fix
    assert runs_of(tmp_path) == []


def test_a_crash_during_training_leaves_the_run_failed(tmp_path: Path, tiny_overrides) -> None:
    # The checkpoint callback monitors optimized_metric; a name nothing logs stops fit.
    done = sah_train(*tiny_overrides(tmp_path), "optimized_metric=val/no_such_metric", cwd=tmp_path)
    finish(done, tmp_path)
    assert done.returncode != 0
    assert [r.info.status for r in runs_of(tmp_path)] == ["FAILED"]


def test_sigterm_during_training_leaves_the_run_killed(tmp_path: Path, tiny_overrides) -> None:
    # With its progress callback: one line per epoch on stderr says training runs.
    quiet = [o for o in tiny_overrides(tmp_path) if not o.startswith("callbacks.progress")]
    overrides = [*quiet, "trainer.max_epochs=500"]
    process = sah_train(*overrides, cwd=tmp_path)
    deadline = time.monotonic() + 300
    # The first epoch line says training runs (and the store exists: reading it earlier would
    # race sah-train's own creation of the database).
    while time.monotonic() < deadline and process.poll() is None:
        if "epoch 1/" in (tmp_path / "stderr.log").read_text():
            break
        time.sleep(1)
    assert [r.info.status for r in runs_of(tmp_path)] == ["RUNNING"]
    assert process.poll() is None, finish(process, tmp_path)[-2000:]
    process.send_signal(signal.SIGTERM)
    stderr = finish(process, tmp_path, timeout=120)
    assert "Traceback" not in stderr
    assert process.returncode != 0
    assert [r.info.status for r in runs_of(tmp_path)] == ["KILLED"]
