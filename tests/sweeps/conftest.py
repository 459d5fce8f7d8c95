"""Fixtures for sweep tests: run a Hydra app in a fresh process, read MLflow and Optuna after.

Every app runs as a subprocess in its own folder (``workdir``), as a user would run it. An empty
MLflow SQLite store is created once per session and copied, because creating one (running its
migrations) takes several seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL server on 127.0.0.1 for the session (see db_servers.py)."""
    from db_servers import postgres_bindir, private_postgres

    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install -y postgresql)")
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install -e '.[postgres]'")
    with private_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[str]:
    """A private MariaDB (MySQL) server on 127.0.0.1 for the session (see db_servers.py)."""
    from db_servers import mariadb_binaries, private_mariadb

    if mariadb_binaries() is None:
        pytest.skip("MariaDB is not installed here (apt-get install -y mariadb-server)")
    pytest.importorskip("pymysql", reason="no MySQL driver: pip install -e '.[mysql]'")
    with private_mariadb() as url:
        yield url


def _database_name(request: pytest.FixtureRequest) -> str:
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].lower()
    return f"t_{name}_{os.getpid()}"


@pytest.fixture
def fresh_database(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty PostgreSQL database (no Optuna schema yet)."""
    from db_servers import create_database

    return create_database(postgres_server, _database_name(request))


@pytest.fixture(params=["postgresql", pytest.param("mysql", marks=pytest.mark.slow)])
def fresh_server_database(request: pytest.FixtureRequest) -> str:
    """A new, empty database on each kind of server the storage lock serves."""
    from db_servers import create_database

    server = request.getfixturevalue(
        "postgres_server" if request.param == "postgresql" else "mariadb_server"
    )
    return create_database(server, _database_name(request))
