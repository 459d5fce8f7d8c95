"""A fabricated study: read in place by the tests that only read it, copied into a fresh store
for each test that logs a report back to MLflow."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from report_fixtures import EXPERIMENT, Study, expected_dice, make_study

from sah.report.collect import Collected, Source, collect, study_runs

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def open_study(db: Path) -> Study:
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parent = client.search_runs([experiment.experiment_id], "tags.`sah.kind` = 'sweep'")[0]
    return Study(uri, parent.info.run_id, expected_dice())


@pytest.fixture(scope="session")
def study_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study-template")
    make_study(folder)
    return folder


@pytest.fixture
def study(tmp_path: Path, study_template: Path) -> Study:
    """A copy of the template store; artifact paths are absolute, so they stay shared."""
    shutil.copy(study_template / "mlflow.db", tmp_path / "mlflow.db")
    return open_study(tmp_path / "mlflow.db")


@pytest.fixture(scope="session")
def read_only_study(study_template: Path) -> Study:
    """The template store itself, for tests that write nothing to MLflow."""
    return open_study(study_template / "mlflow.db")


@pytest.fixture(scope="session")
def found(read_only_study: Study) -> Collected:
    """The study's runs and test rows, collected once."""
    client = MlflowClient(read_only_study.uri)
    return collect(client, study_runs(client, Source(read_only_study.uri, EXPERIMENT)))
