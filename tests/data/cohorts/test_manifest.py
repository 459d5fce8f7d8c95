"""read_manifest / write_manifest: validation errors, path resolution, atomic careful writes."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from sah.data import read_manifest, write_manifest
from sah.errors import DataError


@pytest.fixture
def cohort(tmp_path) -> Path:
    """A cohort folder with two images, one label and one DICOM-style folder."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "p1.nii.gz").write_bytes(b"x")
    (tmp_path / "images" / "p1_seg.nii.gz").write_bytes(b"x")
    (tmp_path / "dicom" / "p2").mkdir(parents=True)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_valid_manifest_resolves_paths_and_keeps_other_columns(cohort):
    manifest = write(
        cohort / "manifest.csv",
        "patient_id,image,label,site,age,wfns\n"
        "007,images/p1.nii.gz,images/p1_seg.nii.gz,A,61,2\n"
        "008,dicom/p2,,B,54,4\n",
    )
    table = read_manifest(manifest)
    assert table["patient_id"].tolist() == ["007", "008"]  # leading zeros kept
    assert table.loc[0, "image"] == str(cohort / "images" / "p1.nii.gz")
    assert table.loc[1, "image"] == str(cohort / "dicom" / "p2")
    assert table.loc[0, "label"] == str(cohort / "images" / "p1_seg.nii.gz")
    assert table.loc[1, "label"] is None
    assert table["site"].tolist() == ["A", "B"]
    assert table["age"].tolist() == [61, 54] and table["wfns"].tolist() == [2, 4]


def test_absolute_paths_are_kept(cohort):
    image = cohort / "images" / "p1.nii.gz"
    manifest = write(cohort / "m.csv", f"patient_id,image\np1,{image}\n")
    assert read_manifest(manifest).loc[0, "image"] == str(image)


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist") as caught:
        read_manifest(tmp_path / "absent.csv")
    assert caught.value.path == tmp_path / "absent.csv"


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "manifest is empty"), ("patient_id,image\n", "no patient rows")],
    ids=["empty-file", "header-only"],
)
def test_empty_manifest_is_refused(tmp_path, text, problem):
    with pytest.raises(DataError, match=problem):
        read_manifest(write(tmp_path / "m.csv", text))


def test_missing_columns_are_named_with_the_file(tmp_path):
    manifest = write(tmp_path / "m.csv", "id,scan\np1,a.nii\n")
    with pytest.raises(DataError) as caught:
        read_manifest(manifest)
    assert caught.value.path == manifest
    message = str(caught.value)
    assert "lacks column(s) 'patient_id', 'image'" in message and "found: 'id', 'scan'" in message


def test_duplicate_patients_are_named(cohort):
    manifest = write(
        cohort / "m.csv",
        "patient_id,image\np1,images/p1.nii.gz\np2,dicom/p2\np1,dicom/p2\n",
    )
    with pytest.raises(DataError, match=r"duplicate patient_id\(s\): p1 —") as caught:
        read_manifest(manifest)
    assert caught.value.path == manifest


def test_blank_required_cell_is_refused(cohort):
    manifest = write(cohort / "m.csv", "patient_id,image\np1,images/p1.nii.gz\np2,\n")
    with pytest.raises(DataError, match=r"empty image in data row\(s\) 2"):
        read_manifest(manifest)


def test_missing_image_names_patient_and_path(cohort):
    manifest = write(cohort / "m.csv", "patient_id,image\np1,images/p1.nii.gz\np9,images/p9.nii\n")
    with pytest.raises(DataError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    assert caught.value.path == manifest
    assert "patient p9" in message and str(cohort / "images" / "p9.nii") in message
    assert read_manifest(manifest, check_files=False)["patient_id"].tolist() == ["p1", "p9"]


def test_missing_label_names_patient_and_path(cohort):
    manifest = write(cohort / "m.csv", "patient_id,image,label\np1,images/p1.nii.gz,nope.nii\n")
    with pytest.raises(DataError, match=r"patient p1: label .*nope\.nii does not exist"):
        read_manifest(manifest)


def test_write_then_read_round_trips_with_relative_paths(cohort):
    table = pd.DataFrame(
        {
            "patient_id": ["007", "008"],
            "image": [str(cohort / "images" / "p1.nii.gz"), str(cohort / "dicom" / "p2")],
            "label": [str(cohort / "images" / "p1_seg.nii.gz"), None],
            "gcs": [14, 7],
        }
    )
    path = write_manifest(table, cohort / "out" / "manifest.csv")
    text = path.read_text()
    assert "../images/p1.nii.gz" in text and str(cohort) not in text
    back = read_manifest(path)
    assert back["patient_id"].tolist() == ["007", "008"]
    assert back["image"].tolist() == table["image"].tolist()
    assert back["label"].tolist() == [str(cohort / "images" / "p1_seg.nii.gz"), None]
    assert back["gcs"].tolist() == [14, 7]
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "manifest.csv"]
    assert leftovers == []  # no temporary file left behind


def test_write_refuses_to_replace_a_different_manifest(cohort):
    first = pd.DataFrame({"patient_id": ["a"], "image": [str(cohort / "images" / "p1.nii.gz")]})
    path = write_manifest(first, cohort / "m.csv")
    assert write_manifest(first, path) == path  # same content: fine
    second = first.assign(patient_id=["b"])
    with pytest.raises(DataError, match="exists with different content") as caught:
        write_manifest(second, path)
    assert caught.value.path == path and "overwrite=True" in str(caught.value)
    assert read_manifest(path)["patient_id"].tolist() == ["a"]
    write_manifest(second, path, overwrite=True)
    assert read_manifest(path)["patient_id"].tolist() == ["b"]


def test_write_requires_the_manifest_columns(tmp_path):
    with pytest.raises(DataError, match="patient_id"):
        write_manifest(pd.DataFrame({"image": ["a.nii"]}), tmp_path / "m.csv")
    assert not os.path.exists(tmp_path / "m.csv")
