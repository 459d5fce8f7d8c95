"""Optuna storages named by one string, opened the same way by the sweeper and by each job.

A storage is either an SQLAlchemy URL (``sqlite:///sweep/optuna.db``, ``postgresql://...``,
``mysql+pymysql://...``) or an Optuna journal file, written ``journal:<path>`` (a plain path
ending in ``.log`` or ``.jsonl`` is read as a journal file too). Journal files need no database
server and work on network file systems, so several machines can share one study.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sah.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

JOURNAL_PREFIX = "journal:"
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_SQLITE_PREFIX = "sqlite:///"
# Seconds an SQLite writer waits for another process's lock before giving up.
_SQLITE_TIMEOUT_S = 120


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


def open_storage(url: str, key: str = "hydra.sweeper.storage") -> BaseStorage:
    """Open (creating if needed) the storage ``url``; a ConfigError naming ``key`` if it fails."""
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
        engine_kwargs = {}
        if url.startswith("sqlite"):
            engine_kwargs = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as err:  # driver missing, server unreachable, bad URL: all user-fixable
        detail = " ".join(str(err).split())[:300]
        raise ConfigError(
            key,
            f"cannot open the Optuna storage {url!r} ({type(err).__name__}: {detail})",
            "give a reachable database URL (sqlite:///path.db, postgresql://...) "
            "or journal:<file> for a journal file",
        ) from err


@contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Exclusive lock shared by every process using a file storage; a no-op for servers.

    Counting a study's trials and asking for a new one happen under it, so processes that
    share a study never overshoot ``n_trials`` between them.
    """
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
