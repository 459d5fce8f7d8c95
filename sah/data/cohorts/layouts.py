"""Manifests for public hemorrhage CT datasets, built from each one's published folder layout.

``build_manifest("bhsd", root, out_dir)`` reads a downloaded dataset where it lies and writes
``out_dir/manifest.csv``. Source files are never modified: labels that need deriving (BHSD's
multi-class maps) are written as new NIfTI files under ``out_dir/derived``. Patient ids carry a
dataset prefix (``bhsd_``, ``ctich_``, ``rhuh_``, ``instance_``) so manifests of several datasets
can be concatenated without collisions; ``site`` names the dataset.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pandas as pd

from sah.data.cohorts.manifest import require_columns, write_manifest
from sah.data.readers.ct import read_nifti
from sah.errors import ConfigError, DataError

MANIFEST_NAME = "manifest.csv"
NIFTI_GLOBS = ("*.nii.gz", "*.nii")

# BHSD label values (dataset.json of the release).
BHSD_CLASSES = {1: "EDH", 2: "IPH", 3: "IVH", 4: "SAH", 5: "SDH"}
BHSD_SAH = 4
# PhysioNet CT-ICH per-slice diagnosis columns -> manifest column (1 if any slice shows it).
CT_ICH_TYPES = {
    "Intraventricular": "ivh",
    "Intraparenchymal": "iph",
    "Subarachnoid": "sah",
    "Epidural": "edh",
    "Subdural": "sdh",
}
CT_ICH_CSV = "hemorrhage_diagnosis_raw_ct.csv"


def build_manifest(
    layout: str, root: str | Path, out_dir: str | Path, *, overwrite: bool = False, **options
) -> Path:
    """Build ``out_dir/manifest.csv`` for the dataset at ``root`` laid out as ``layout``.

    ``options`` go to the layout (e.g. ``labels="all"`` for BHSD); see each layout's docstring
    in ``LAYOUTS`` for the folder structure it expects. An existing different manifest is kept
    unless ``overwrite`` is True.
    """
    builder = LAYOUTS.get(layout)
    if builder is None:
        raise ConfigError(
            "layout", f"unknown layout {layout!r}", f"choose one of {sorted(LAYOUTS)}"
        )
    accepted = [n for n in inspect.signature(builder).parameters if n not in ("root", "out_dir")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            unknown[0],
            f"is not an option of layout {layout!r}",
            f"options: {accepted or 'none'}",
        )
    root, out_dir = Path(root).expanduser().absolute(), Path(out_dir).expanduser().absolute()
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist", "pass the unpacked dataset folder")
    table = builder(root, out_dir, **options)
    return write_manifest(table, out_dir / MANIFEST_NAME, overwrite=overwrite)


def bhsd(root: Path, out_dir: Path, *, labels: str = "sah") -> pd.DataFrame:
    """BHSD, Brain Hemorrhage Segmentation Dataset (Wu et al., MLMI 2023): 192 annotated volumes.

    Expected layout (the unpacked ``label_192`` archive)::

        root/images/<case>.nii.gz
        root/ground truths/<case>.nii.gz    0 background, 1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH

    ``labels="sah"``: binary label of SAH (value 4) only; ``labels="all"``: every blood class
    merged into one. The binary labels are written to ``out_dir/derived/bhsd_<labels>/``.
    Images without a ground truth get an empty label.
    """
    if labels not in ("sah", "all"):
        raise ConfigError(
            "labels",
            f"must be 'sah' or 'all', got {labels!r}",
            "'sah' keeps SAH (4) only; 'all' merges EDH, IPH, IVH, SAH and SDH",
        )
    expected = "images/<case>.nii.gz and 'ground truths'/<case>.nii.gz (the label_192 archive)"
    images = _niftis(_folder(root, "images", expected))
    truths = _niftis(_folder(root, "ground truths", expected))
    _no_orphan_labels(images, truths, root / "ground truths", root / "images")
    derived = out_dir / "derived" / f"bhsd_{labels}"
    rows = []
    for case, image in sorted(images.items()):
        label = None
        if case in truths:
            label = _write_binary_label(truths[case], derived / f"{case}.nii.gz", labels)
        rows.append(
            {"patient_id": f"bhsd_{case}", "image": str(image), "label": label, "site": "bhsd"}
        )
    return pd.DataFrame(rows, columns=["patient_id", "image", "label", "site"])


def physionet_ct_ich(root: Path, out_dir: Path) -> pd.DataFrame:
    """PhysioNet CT-ICH (Hssayeni et al., 2020): 75 head CTs of traumatic brain injury.

    Expected layout (the unpacked PhysioNet release folder)::

        root/ct_scans/<NNN>.nii
        root/masks/<NNN>.nii                     binary: any hemorrhage type
        root/hemorrhage_diagnosis_raw_ct.csv     per slice: PatientNumber, SliceNumber,
                                                 Intraventricular, Intraparenchymal,
                                                 Subarachnoid, Epidural, Subdural, ...

    Masks are not typed per voxel, so the label is "any blood"; the CSV's per-slice types become
    per-patient 0/1 columns ``ivh``, ``iph``, ``sah``, ``edh``, ``sdh``.
    """
    expected = f"ct_scans/<NNN>.nii, masks/<NNN>.nii and {CT_ICH_CSV}"
    scans = _niftis(_folder(root, "ct_scans", expected))
    masks = _niftis(_folder(root, "masks", expected))
    _no_orphan_labels(scans, masks, root / "masks", root / "ct_scans")
    types = _ct_ich_types(root / CT_ICH_CSV, expected)
    rows = []
    for case, scan in sorted(scans.items()):
        flags = types.get(_as_int(case), {})
        rows.append(
            {
                "patient_id": f"ctich_{case}",
                "image": str(scan),
                "label": str(masks[case]) if case in masks else None,
                "site": "physionet_ct_ich",
                **{column: flags.get(column) for column in CT_ICH_TYPES.values()},
            }
        )
    columns = ["patient_id", "image", "label", "site", *CT_ICH_TYPES.values()]
    table = pd.DataFrame(rows, columns=columns)
    for column in CT_ICH_TYPES.values():
        table[column] = table[column].astype("Int64")
    return table


def rhuh_sah(root: Path, out_dir: Path, *, label_suffix: str = "_seg") -> pd.DataFrame:
    """RHUH-SAH (Río Hortega University Hospital, aneurysmal SAH): one folder per subject.

    Expected layout (the naming of the group's SAH pipeline; the release itself could not be
    checked, so ``label_suffix`` lets you match another mask name)::

        root/<subject>/<subject>_ct.nii.gz
        root/<subject>/<subject><label_suffix>.nii.gz    binary blood mask (optional)
    """
    expected = f"<subject>/<subject>_ct.nii.gz and <subject>/<subject>{label_suffix}.nii.gz"
    rows = []
    for subject in sorted(p for p in root.iterdir() if p.is_dir()):
        image = _first_existing(subject, f"{subject.name}_ct")
        if image is None:
            continue
        label = _first_existing(subject, f"{subject.name}{label_suffix}")
        rows.append(
            {
                "patient_id": f"rhuh_{subject.name}",
                "image": str(image),
                "label": str(label) if label else None,
                "site": "rhuh_sah",
            }
        )
    if not rows:
        raise DataError(root, "holds no RHUH-SAH subject folders", f"expected {expected}")
    return pd.DataFrame(rows, columns=["patient_id", "image", "label", "site"])


def instance2022(root: Path, out_dir: Path) -> pd.DataFrame:
    """INSTANCE 2022 challenge (MICCAI 2022): intracranial hemorrhage on non-contrast CT.

    Expected layout (training set; the validation set has no ``label`` folder)::

        root/data/<NNN>.nii.gz
        root/label/<NNN>.nii.gz     binary: any intracranial hemorrhage
    """
    expected = "data/<NNN>.nii.gz and label/<NNN>.nii.gz"
    images = _niftis(_folder(root, "data", expected))
    labels = _niftis(root / "label") if (root / "label").is_dir() else {}
    _no_orphan_labels(images, labels, root / "label", root / "data")
    rows = [
        {
            "patient_id": f"instance_{case}",
            "image": str(image),
            "label": str(labels[case]) if case in labels else None,
            "site": "instance2022",
        }
        for case, image in sorted(images.items())
    ]
    return pd.DataFrame(rows, columns=["patient_id", "image", "label", "site"])


LAYOUTS: dict[str, Callable[..., pd.DataFrame]] = {
    "bhsd": bhsd,
    "physionet_ct_ich": physionet_ct_ich,
    "rhuh_sah": rhuh_sah,
    "instance2022": instance2022,
}


def _case_name(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _niftis(folder: Path) -> dict[str, Path]:
    """NIfTI files of ``folder`` by case name (file name without .nii/.nii.gz)."""
    found: dict[str, Path] = {}
    for pattern in NIFTI_GLOBS:
        for path in folder.glob(pattern):
            found.setdefault(_case_name(path), path)
    return found


def _folder(root: Path, name: str, expected: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        raise DataError(root, f"has no '{name}' folder", f"expected {expected} under it")
    if not _niftis(folder):
        raise DataError(folder, "holds no .nii/.nii.gz files", f"expected {expected}")
    return folder


def _first_existing(folder: Path, stem: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _no_orphan_labels(images: dict, labels: dict, label_dir: Path, image_dir: Path) -> None:
    """A label without its image means a mismatched or partial download: say so."""
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DataError(
            label_dir,
            f"{len(orphans)} label(s) have no image in {image_dir}: {', '.join(orphans[:5])}",
            "download the dataset again completely, or remove the stray labels",
        )


def _as_int(case: str) -> int | None:
    return int(case) if case.isdigit() else None


def _ct_ich_types(csv: Path, expected: str) -> dict[int | None, dict[str, int]]:
    """Per patient, 1 for each hemorrhage type that any of its slices shows (keyed to be looked
    up with ``_as_int``, whose None, a case name that is no number, finds nothing)."""
    if not csv.is_file():
        raise DataError(csv.parent, f"has no {csv.name}", f"expected {expected}")
    try:
        slices = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(csv, f"is not a readable CSV: {error}", "download it again") from error
    needed = ["PatientNumber", *CT_ICH_TYPES]
    require_columns(
        slices, needed, csv, "use the hemorrhage_diagnosis_raw_ct.csv of the PhysioNet release"
    )
    per_patient = slices.groupby("PatientNumber")[list(CT_ICH_TYPES)].max()
    return {
        int(patient): {CT_ICH_TYPES[c]: int(row[c] > 0) for c in CT_ICH_TYPES}
        for patient, row in per_patient.iterrows()
    }


def _write_binary_label(source: Path, target: Path, labels: str) -> str:
    """Write the binary label derived from a BHSD class map, atomically; return its path."""
    data, _, _ = read_nifti(source)
    classes = np.rint(data).astype(np.int16)
    unexpected = sorted(set(np.unique(classes).tolist()) - {0, *BHSD_CLASSES})
    if unexpected:
        raise DataError(
            source,
            f"holds label values {unexpected}; BHSD uses 0-5",
            "check that this is a BHSD ground truth",
        )
    binary = (classes == BHSD_SAH) if labels == "sah" else (classes > 0)
    original = cast(nib.Nifti1Image, nib.load(source))  # a BHSD .nii(.gz) label
    derived = nib.Nifti1Image(binary.astype(np.uint8), original.affine, header=original.header)
    derived.set_data_dtype(np.uint8)
    derived.header.set_slope_inter(1.0, 0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".nii.gz", dir=target.parent
    )
    os.close(descriptor)
    try:
        nib.save(derived, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return str(target)
