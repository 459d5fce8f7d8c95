"""Optuna storages named by one string: SQLite, journal files, paths made absolute, locks."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sah.errors import ConfigError
from sah.tracking.studies import (
    absolute_storage_url,
    is_journal,
    load_trial,
    open_storage,
    storage_file,
    storage_lock,
)


def test_relative_paths_become_absolute(tmp_path: Path) -> None:
    assert (
        absolute_storage_url("sqlite:///optuna.db", tmp_path) == f"sqlite:///{tmp_path}/optuna.db"
    )
    assert absolute_storage_url("sqlite:////abs/o.db", tmp_path) == "sqlite:////abs/o.db"
    assert (
        absolute_storage_url("journal:studies.log", tmp_path) == f"journal:{tmp_path}/studies.log"
    )
    assert absolute_storage_url("studies.jsonl", tmp_path) == f"journal:{tmp_path}/studies.jsonl"
    assert absolute_storage_url("postgresql://u@db/optuna", tmp_path) == "postgresql://u@db/optuna"
    assert is_journal("journal:/x") and not is_journal("sqlite:///x.log")
    assert storage_file("postgresql://u@db/optuna") is None


@pytest.mark.parametrize("url", ["sqlite:///{}/o.db", "journal:{}/o.log"])
def test_a_job_reports_to_its_trial(tmp_path: Path, url: str) -> None:
    url = url.format(tmp_path)
    study = optuna.create_study(storage=open_storage(url), study_name="s", direction="maximize")
    asked = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    with storage_lock(url):  # the lock file sits next to the storage file
        trial = load_trial(url, "s", asked.number, optuna.pruners.ThresholdPruner(lower=0.5))
    trial.report(0.1, step=0)
    assert trial.should_prune()
    assert study.trials[0].intermediate_values == {0: 0.1}


def test_a_storage_that_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path}/missing/o.db")
    with pytest.raises(ConfigError, match="cannot open the Optuna storage"):
        open_storage("nosuchdialect://host/db")
