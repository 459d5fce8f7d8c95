"""build_manifest for each public layout on tiny fixture trees; BHSD label merging."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sah.data import build_manifest, load_ct, load_label, read_manifest
from sah.data.cohorts.layouts import LAYOUTS
from sah.errors import ConfigError, DataError

SHAPE = (6, 5, 4)


def ct_volume() -> np.ndarray:
    volume = np.full(SHAPE, -1000.0, dtype=np.float32)
    volume[1:5, 1:4, 1:3] = 40.0
    return volume


def save(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def bhsd_classes() -> np.ndarray:
    """One voxel of each BHSD class 1-5 (EDH, IPH, IVH, SAH, SDH), two of SAH."""
    classes = np.zeros(SHAPE, dtype=np.uint8)
    classes[0, 0, 0], classes[1, 1, 1], classes[2, 2, 2] = 1, 2, 3
    classes[3, 3, 3], classes[3, 4, 3], classes[4, 0, 1] = 4, 4, 5
    return classes


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


@pytest.fixture
def bhsd_root(tmp_path) -> Path:
    root = tmp_path / "label_192"
    for case in ("ID_aa", "ID_bb"):
        save(root / "images" / f"{case}.nii.gz", ct_volume())
        save(root / "ground truths" / f"{case}.nii.gz", bhsd_classes())
    save(root / "images" / "ID_cc.nii.gz", ct_volume())  # unlabelled volume
    return root


@pytest.mark.parametrize(("labels", "expected_voxels"), [("sah", 2), ("all", 6)])
def test_bhsd_merges_labels_without_touching_the_source(
    tmp_path, bhsd_root, labels, expected_voxels
):
    before = digest(bhsd_root)
    manifest = build_manifest("bhsd", bhsd_root, tmp_path / "out", labels=labels)
    assert digest(bhsd_root) == before
    table = read_manifest(manifest)
    assert table["patient_id"].tolist() == ["bhsd_ID_aa", "bhsd_ID_bb", "bhsd_ID_cc"]
    assert set(table["site"]) == {"bhsd"}
    assert table.loc[2, "label"] is None
    image = load_ct(table.loc[0, "image"])
    label = load_label(table.loc[0, "label"], like=image)
    assert Path(table.loc[0, "label"]).parent == tmp_path / "out" / "derived" / f"bhsd_{labels}"
    assert label.dtype == np.uint8 and set(np.unique(label).tolist()) == {0, 1}
    assert int(label.sum()) == expected_voxels
    if labels == "sah":
        np.testing.assert_array_equal(label, (bhsd_classes() == 4).astype(np.uint8))


def test_bhsd_rejects_unknown_label_values(tmp_path, bhsd_root):
    save(bhsd_root / "ground truths" / "ID_aa.nii.gz", np.full(SHAPE, 7, np.uint8))
    with pytest.raises(DataError, match=r"label values \[7\]"):
        build_manifest("bhsd", bhsd_root, tmp_path / "out")


def test_bhsd_rejects_unknown_labels_option(tmp_path, bhsd_root):
    with pytest.raises(ConfigError, match="'sah' or 'all'"):
        build_manifest("bhsd", bhsd_root, tmp_path / "out", labels="sdh")


def test_bhsd_with_wrong_folders_says_what_was_expected(tmp_path):
    root = tmp_path / "bhsd"
    save(root / "imagesTr" / "a.nii.gz", ct_volume())
    with pytest.raises(DataError) as caught:
        build_manifest("bhsd", root, tmp_path / "out")
    assert caught.value.path == root
    assert "has no 'images' folder" in str(caught.value)
    assert "ground truths" in str(caught.value)


def test_physionet_ct_ich_builds_manifest_with_type_flags(tmp_path):
    root = tmp_path / "ct-ich"
    for case in ("049", "050"):
        save(root / "ct_scans" / f"{case}.nii", ct_volume())
        save(root / "masks" / f"{case}.nii", (bhsd_classes() > 0).astype(np.uint8))
    (root / "hemorrhage_diagnosis_raw_ct.csv").write_text(
        "PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,"
        "Subdural,No_Hemorrhage,Fracture_Yes_No\n"
        "49,1,0,0,0,0,0,1,0\n49,2,0,0,1,0,0,0,0\n50,1,0,1,0,0,0,0,1\n50,2,0,0,0,0,0,1,0\n"
    )
    table = read_manifest(build_manifest("physionet_ct_ich", root, tmp_path / "out"))
    assert table["patient_id"].tolist() == ["ctich_049", "ctich_050"]
    assert table["sah"].tolist() == [1, 0] and table["iph"].tolist() == [0, 1]
    assert table.loc[0, "label"] == str(root / "masks" / "049.nii")
    load_label(table.loc[0, "label"], like=load_ct(table.loc[0, "image"]))


def test_physionet_ct_ich_without_csv_says_what_was_expected(tmp_path):
    root = tmp_path / "ct-ich"
    save(root / "ct_scans" / "049.nii", ct_volume())
    save(root / "masks" / "049.nii", np.zeros(SHAPE, np.uint8))
    with pytest.raises(DataError, match=r"hemorrhage_diagnosis_raw_ct\.csv"):
        build_manifest("physionet_ct_ich", root, tmp_path / "out")


def test_instance2022_builds_manifest_and_allows_unlabelled_sets(tmp_path):
    root = tmp_path / "instance"
    save(root / "data" / "001.nii.gz", ct_volume())
    save(root / "data" / "002.nii.gz", ct_volume())
    save(root / "label" / "001.nii.gz", np.zeros(SHAPE, np.uint8))
    table = read_manifest(build_manifest("instance2022", root, tmp_path / "out"))
    assert table["patient_id"].tolist() == ["instance_001", "instance_002"]
    assert table["label"].tolist() == [str(root / "label" / "001.nii.gz"), None]


def test_label_without_image_is_refused(tmp_path):
    root = tmp_path / "instance"
    save(root / "data" / "001.nii.gz", ct_volume())
    save(root / "label" / "009.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(DataError, match="have no image"):
        build_manifest("instance2022", root, tmp_path / "out")


def test_rhuh_sah_builds_manifest_from_subject_folders(tmp_path):
    root = tmp_path / "rhuh"
    save(root / "sub01" / "sub01_ct.nii.gz", ct_volume())
    save(root / "sub01" / "sub01_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    save(root / "sub02" / "sub02_ct.nii.gz", ct_volume())
    (root / "docs").mkdir()
    table = read_manifest(build_manifest("rhuh_sah", root, tmp_path / "out"))
    assert table["patient_id"].tolist() == ["rhuh_sub01", "rhuh_sub02"]
    assert table["label"].tolist() == [str(root / "sub01" / "sub01_seg.nii.gz"), None]


def test_rhuh_sah_with_wrong_layout_says_what_was_expected(tmp_path):
    root = tmp_path / "rhuh"
    save(root / "images" / "a.nii.gz", ct_volume())
    with pytest.raises(DataError, match=r"expected <subject>/<subject>_ct\.nii\.gz"):
        build_manifest("rhuh_sah", root, tmp_path / "out")


def test_unknown_layout_and_option_are_config_errors(tmp_path, bhsd_root):
    with pytest.raises(ConfigError, match="unknown layout"):
        build_manifest("kaggle", bhsd_root, tmp_path / "out")
    with pytest.raises(ConfigError, match="not an option of layout 'instance2022'"):
        build_manifest("instance2022", bhsd_root, tmp_path / "out", labels="sah")
    assert set(LAYOUTS) == {"bhsd", "physionet_ct_ich", "rhuh_sah", "instance2022"}


def test_missing_dataset_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="dataset folder does not exist"):
        build_manifest("bhsd", tmp_path / "nowhere", tmp_path / "out")


def test_rebuilding_is_idempotent(tmp_path, bhsd_root):
    first = build_manifest("bhsd", bhsd_root, tmp_path / "out")
    assert build_manifest("bhsd", bhsd_root, tmp_path / "out") == first
    with pytest.raises(DataError, match="exists with different content"):
        build_manifest("bhsd", bhsd_root, tmp_path / "out", labels="all")
