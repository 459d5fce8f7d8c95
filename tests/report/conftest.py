"""A fabricated study in a fresh MLflow store for each report test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_fixtures import Study, make_study


@pytest.fixture(scope="session")
def study_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study-template")
    make_study(folder)
    return folder


@pytest.fixture
def study(tmp_path: Path, study_template: Path) -> Study:
    """A copy of the template store; artifact paths are absolute, so they stay shared."""
    from mlflow.tracking import MlflowClient

    shutil.copy(study_template / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lora-study")
    parent = client.search_runs([experiment.experiment_id], "tags.`sah.kind` = 'sweep'")[0]
    from report_fixtures import CONFIGS, patient_dice

    dice = {}
    for method, _target, rank, _params, base in CONFIGS:
        dice[(method, rank)] = {f"p{i}": patient_dice(base, i, method) for i in range(9)}
    return Study(uri, parent.info.run_id, dice)
