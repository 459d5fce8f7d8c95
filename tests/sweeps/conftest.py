"""Fixtures for sweep tests: run a Hydra app in a fresh process, read MLflow and Optuna after.

Every app runs as a subprocess in its own folder (``workdir``), as a user would run it. An empty
MLflow SQLite store is created once per session and copied, because creating one (running its
migrations) takes several seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sweep_helpers import TINY_APP, clean_env


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def sah_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic-cohort cache for every sah-train run of the session."""
    return tmp_path_factory.mktemp("sah-cache")


@pytest.fixture
def workdir(tmp_path: Path, empty_mlflow_db: Path) -> Path:
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")
    return tmp_path


RunApp = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def run_app(workdir: Path) -> RunApp:
    """Run the tiny app (``app=TINY_APP``) or any command in ``workdir``; output is kept."""

    def run(
        *args: str, command: list[str] | None = None, timeout: float = 240, **env: str
    ) -> subprocess.CompletedProcess:
        cmd = command or [sys.executable, str(TINY_APP)]
        result = subprocess.run(
            [*cmd, *args],
            cwd=workdir,
            env=clean_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        (workdir / "last_stdout.txt").write_text(result.stdout)
        (workdir / "last_stderr.txt").write_text(result.stderr)
        return result

    return run
