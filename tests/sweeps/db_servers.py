"""Private database servers on 127.0.0.1 for tests: each its own data folder in a temporary
directory and a free port, trust authentication, stopped and deleted afterwards.

Debian's packages bring the binaries: ``apt-get install -y postgresql`` (initdb and pg_ctl in
``/usr/lib/postgresql/<version>/bin``) and ``apt-get install -y mariadb-server`` (mariadbd).
Both refuse to run their server as root, so as root it runs as their system user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def postgres_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def mariadb_binaries() -> tuple[str, str] | None:
    """(mariadb-install-db, mariadbd), or None when MariaDB is not installed."""
    install = shutil.which("mariadb-install-db")
    server = shutil.which("mariadbd") or (
        "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None
    )
    return (install, server) if install and server else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _folder_for(user: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"sah-{user}-"))
    if os.geteuid() == 0:
        shutil.chown(root, user, user)
    return root


@contextmanager
def private_postgres() -> Iterator[str]:
    """Start a throw-away PostgreSQL; yield the URL of its ``postgres`` database as ``sah``."""
    bindir = postgres_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql)")
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = _folder_for("postgres")
    data, port = root / "data", free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "sah", "--auth=trust", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
            "start")  # fmt: skip
        try:
            yield f"postgresql://sah@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def private_mariadb() -> Iterator[str]:
    """Start a throw-away MariaDB (no grant tables: any user, no password); yield the URL of
    its ``mysql`` database through pymysql."""
    import sqlalchemy

    binaries = mariadb_binaries()
    if binaries is None:
        raise FileNotFoundError("MariaDB is not installed (apt-get install -y mariadb-server)")
    install, server = binaries
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    root = _folder_for("mysql")
    data, port = root / "data", free_port()
    try:
        subprocess.run(
            [install, "--no-defaults", f"--datadir={data}", *user, "--skip-test-db",
             "--auth-root-authentication-method=normal"],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        proc = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={data}", f"--socket={root / 'sock'}",
             f"--port={port}", "--bind-address=127.0.0.1", "--skip-grant-tables",
             f"--log-error={root / 'log'}", *user],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"mysql+pymysql://root@127.0.0.1:{port}/mysql"
        try:
            engine = sqlalchemy.create_engine(url)
            for _ in range(600):  # until it accepts connections (at most a minute)
                try:
                    with engine.connect():
                        break
                except sqlalchemy.exc.OperationalError:
                    assert proc.poll() is None, (root / "log").read_text()
                    time.sleep(0.1)
            engine.dispose()
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A fresh, empty database on the server; its URL."""
    import sqlalchemy

    quote = "`" if server_url.startswith("mysql") else '"'
    engine = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {quote}{name}{quote}"))
    finally:
        engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
