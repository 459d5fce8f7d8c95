"""Optuna storages named by one string, opened the same way by the sweeper and by each job.

A storage is either an SQLAlchemy URL (``sqlite:///sweep/optuna.db``, ``postgresql://...``,
``mysql+pymysql://...``) or an Optuna journal file, written ``journal:<path>`` (a plain path
ending in ``.log`` or ``.jsonl`` is read as a journal file too). Journal files need no database
server and work on network file systems, so several machines can share one study.

Processes sharing a storage serialise what must not interleave (creating the schema, claiming
the study's parent run, counting the budget and asking for a trial) with ``storage_lock``: a
file lock next to a SQLite or journal file, an advisory lock on a PostgreSQL or MySQL server.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sah.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

JOURNAL_PREFIX = "journal:"
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_SQLITE_PREFIX = "sqlite:///"
# Seconds an SQLite writer waits for another process's lock before giving up.
_SQLITE_TIMEOUT_S = 120
# One server-side lock per database, shared by every sah sweeper using it.
_LOCK_NAME = "sah.optuna.storage"
_PG_LOCK_KEY = zlib.crc32(_LOCK_NAME.encode())
# SQLAlchemy driver name -> the pip package that provides it.
_DRIVER_PACKAGES = {
    "psycopg": "'psycopg[binary]'",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "pymysql": "pymysql",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
}


def is_journal(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX) or (url.endswith(_JOURNAL_SUFFIXES) and "://" not in url)


def absolute_storage_url(url: str, base: str | Path) -> str:
    """The same storage with relative file paths made absolute against ``base``.

    Jobs may run in another folder (or on another node), so what the sweeper hands them must
    not depend on the working directory.
    """
    if is_journal(url):
        path = Path(url.removeprefix(JOURNAL_PREFIX)).expanduser()
        return JOURNAL_PREFIX + str(path if path.is_absolute() else Path(base, path).resolve())
    if url.startswith(_SQLITE_PREFIX):
        path_part = url.removeprefix(_SQLITE_PREFIX)
        if path_part in ("", ":memory:"):
            return url
        path = Path(path_part).expanduser()
        if not path.is_absolute():
            path = Path(base, path).resolve()
        return f"{_SQLITE_PREFIX}{path}"
    return url


def storage_file(url: str) -> Path | None:
    """The local file behind a storage URL (SQLite database or journal), if it has one."""
    if is_journal(url):
        return Path(url.removeprefix(JOURNAL_PREFIX))
    if url.startswith(_SQLITE_PREFIX):
        path_part = url.removeprefix(_SQLITE_PREFIX)
        return Path(path_part) if path_part not in ("", ":memory:") else None
    return None


def display_url(url: str) -> str:
    """The storage URL as it may be shown or logged: any password replaced by ``***``."""
    if is_journal(url) or "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://***"


def server_dialect(url: str) -> str | None:
    """``postgresql`` or ``mysql`` for a database server URL, else None (files, other servers)."""
    if is_journal(url) or storage_file(url) is not None:
        return None
    backend = url.split("://", 1)[0].split("+", 1)[0].lower()
    if backend in ("postgresql", "postgres"):
        return "postgresql"
    return "mysql" if backend in ("mysql", "mariadb") else None


def _missing_module(err: BaseException) -> ImportError | None:
    """The ImportError behind ``err`` (Optuna wraps the driver's own in a vaguer one)."""
    seen: BaseException | None = err
    found = None
    while seen is not None:
        if isinstance(seen, ImportError):
            found = seen
        seen = seen.__cause__ or seen.__context__
    return found


def _driver_fix(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    driver, backend = parsed.get_driver_name(), parsed.get_backend_name()
    package = _DRIVER_PACKAGES.get(driver, f"the {driver} module")
    if backend == "postgresql":
        other = "postgresql+psycopg2://" if driver != "psycopg2" else "postgresql+psycopg://"
        return (
            f"install {package} (pip install -e '.[postgres]' brings psycopg, the default "
            f"driver of postgresql://), or name an installed driver in the URL: {other}..."
        )
    if backend in ("mysql", "mariadb"):
        return (
            f"install {package}, or use pymysql (pip install -e '.[mysql]') and write "
            "mysql+pymysql://..."
        )
    return f"install {package}"


def storage_error(url: str, err: BaseException, key: str) -> ConfigError:
    """A user-facing error for a storage that cannot be opened, naming the driver when the
    problem is a missing one."""
    missing = _missing_module(err)
    if missing is not None:
        return ConfigError(
            key,
            f"cannot open the Optuna storage {display_url(url)!r}: its database driver is not "
            f"installed ({type(missing).__name__}: {missing})",
            _driver_fix(url),
        )
    detail = " ".join(str(err).split())[:300]
    return ConfigError(
        key,
        f"cannot open the Optuna storage {display_url(url)!r} ({type(err).__name__}: {detail})",
        "give a reachable database URL (sqlite:///path.db, postgresql://...) "
        "or journal:<file> for a journal file",
    )


def open_storage(url: str, key: str = "hydra.sweeper.storage") -> BaseStorage:
    """Open (creating if needed) the storage ``url``; a ConfigError naming ``key`` if it fails.

    Creating the schema of a new server database is not safe when two processes do it at once
    (PostgreSQL: ``UniqueViolation ... CREATE TYPE studydirection``), so on a server it happens
    under ``storage_lock`` (taken here unless the caller holds it already).
    """
    import optuna

    file = storage_file(url)
    if file is not None and not file.parent.is_dir():
        raise ConfigError(
            key,
            f"cannot open the Optuna storage {url!r}: folder {file.parent} does not exist",
            "create it or give another path",
        )
    try:
        if is_journal(url):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(str(file)))
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            engine_kwargs = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}}
        else:  # a server that dropped an idle connection must not fail a long sweep
            engine_kwargs = {"pool_pre_ping": True}
        if server_dialect(url) is None or _held_locks.get(url):
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        with storage_lock(url, key):
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ConfigError:
        raise
    except Exception as err:  # driver missing, server unreachable, bad URL: all user-fixable
        raise storage_error(url, err, key) from err


# URL -> how many storage_lock blocks this process holds on it (open_storage inside one must
# not wait for a second server lock).
_held_locks: dict[str, int] = {}
_held_guard = threading.Lock()
_lock_engines: dict[str, Any] = {}


def _lock_engine(url: str) -> Any:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if url not in _lock_engines:
        _lock_engines[url] = sqlalchemy.create_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
    return _lock_engines[url]


@contextmanager
def _server_lock(url: str, dialect: str, key: str) -> Iterator[None]:
    """A lock the database server holds for this connection (released if the process dies)."""
    from sqlalchemy import text

    try:
        conn = _lock_engine(url).connect()
    except Exception as err:
        raise storage_error(url, err, key) from err
    try:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            release = text("SELECT pg_advisory_unlock(:k)")
        else:
            # GET_LOCK waits at most 10 s: 1 got it, 0 timed out (try again), NULL an error.
            while (
                got := conn.execute(text("SELECT GET_LOCK(:n, 10)"), {"n": _LOCK_NAME}).scalar()
            ) != 1:
                if got is None:
                    raise RuntimeError(f"MySQL GET_LOCK({_LOCK_NAME!r}) failed")
                time.sleep(0.1)
            release = text("SELECT RELEASE_LOCK(:n)")
        with _held_guard:
            _held_locks[url] = _held_locks.get(url, 0) + 1
        try:
            yield
        finally:
            with _held_guard:
                _held_locks[url] -= 1
            conn.execute(release, {"k": _PG_LOCK_KEY, "n": _LOCK_NAME})
    finally:
        conn.close()


@contextmanager
def storage_lock(url: str, key: str = "hydra.sweeper.storage") -> Iterator[None]:
    """Exclusive lock shared by every process using the storage ``url``.

    A file lock next to a SQLite database or journal file; an advisory lock on a PostgreSQL
    (``pg_advisory_lock``) or MySQL (``GET_LOCK``) server; a no-op for other storages. Creating
    the schema, claiming the study's parent run, counting the study's trials and asking for a
    new one happen under it, so processes that share a study neither create it twice nor
    overshoot ``n_trials`` between them.
    """
    dialect = server_dialect(url)
    if dialect is not None:
        with _server_lock(url, dialect, key):
            yield
        return
    file = storage_file(url)
    if file is None or not file.parent.is_dir():  # no file storage (yet): open_storage says why
        yield
        return
    lock_path = file.with_name(file.name + ".sah.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def load_trial(
    storage_url: str, study_name: str, number: int, pruner: optuna.pruners.BasePruner | None = None
) -> optuna.Trial:
    """The live trial ``number`` of a study, so a job can report to it and be pruned."""
    import optuna

    storage = open_storage(storage_url, key="optuna.storage")
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)
