"""The cohort and its splits as MLflow dataset inputs, read back from a real sqlite store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sah.errors import DataError
from sah.tracking.datasets import log_cohort

SPLITS = {"train": ["p1", "p2", "p3"], "selection": ["p4"], "test": ["p5", "p6"]}


def manifest_file(folder: Path, extra_row: str = "") -> Path:
    path = folder / "manifest.csv"
    rows = [
        f"p{i},images/p{i}.nii.gz,labels/p{i}.nii.gz,site{i % 2},{i * 1.5}" for i in range(1, 7)
    ]
    lines = ["patient_id,image,label,site,blood_volume_ml", *rows]
    path.write_text("\n".join(lines) + "\n" + extra_row)
    return path


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """One sqlite store for the module (creating its tables takes seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    store = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    store.create_experiment("sah-test", artifact_location=str(folder / "artifacts"))
    return store


def new_run(client: MlflowClient, tmp_path: Path) -> str:
    experiment = client.get_experiment_by_name("sah-test")
    assert experiment is not None
    return client.create_run(experiment.experiment_id).info.run_id


def test_the_run_page_names_the_cohort_its_digest_and_each_split(client, tmp_path) -> None:
    manifest = manifest_file(tmp_path)
    run_id = new_run(client, tmp_path)
    log_cohort(client, run_id, manifest, SPLITS, name="sah-n6-seed0")

    inputs = client.get_run(run_id).inputs.dataset_inputs
    by_context = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs
    }
    assert set(by_context) == {"cohort", "train", "selection", "test"}
    cohort = by_context["cohort"]
    assert cohort.name == "sah-n6-seed0"
    # The digest is the manifest file's sha256, computed here independently.
    assert cohort.digest == hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    assert str(manifest.resolve()) in cohort.source
    columns = [c["name"] for c in json.loads(cohort.schema)["mlflow_colspec"]]
    assert columns == ["patient_id", "image", "label", "site", "blood_volume_ml"]
    assert json.loads(cohort.profile)["num_rows"] == 6
    for split, patients in SPLITS.items():
        dataset = by_context[split]
        assert dataset.name == f"sah-n6-seed0/{split}"
        profile = json.loads(dataset.profile)
        assert profile["num_rows"] == len(patients)
        assert profile["patients"] == sorted(patients)
    assert len({d.digest for d in by_context.values()}) == 4


def test_another_version_of_the_manifest_gets_another_digest(client, tmp_path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    run_a, run_b = new_run(client, tmp_path), new_run(client, tmp_path)
    log_cohort(client, run_a, manifest_file(first), SPLITS, name="cohort")
    log_cohort(
        client,
        run_b,
        manifest_file(second, "p7,images/p7.nii.gz,,site1,3.0\n"),
        SPLITS,
        name="cohort",
    )

    def digest(run_id: str, context: str) -> str:
        for item in client.get_run(run_id).inputs.dataset_inputs:
            if any(t.value == context for t in item.tags):
                return item.dataset.digest
        raise AssertionError(context)

    assert digest(run_a, "cohort") != digest(run_b, "cohort")
    assert digest(run_a, "train") != digest(run_b, "train")  # same patients, other cohort file


def test_a_split_patient_missing_from_the_manifest_is_named(client, tmp_path) -> None:
    manifest = manifest_file(tmp_path)
    run_id = new_run(client, tmp_path)
    with pytest.raises(DataError, match=r"manifest\.csv.*no patient\(s\) \['p9'\] of split 'test'"):
        log_cohort(client, run_id, manifest, {**SPLITS, "test": ["p5", "p9"]}, name="c")
    assert client.get_run(run_id).inputs.dataset_inputs == []  # nothing half logged
