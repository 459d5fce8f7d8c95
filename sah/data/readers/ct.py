"""CT volumes in one convention (float32 HU, RAS, axes x, y, z) whatever file they came from.

``load_ct`` reads a NIfTI file or a folder holding one DICOM series and refuses, with a DataError
that names the file and the fix, the inputs that would otherwise corrupt results quietly:
unreadable files, 2D images, NaN/inf voxels and intensities that are not Hounsfield units.
Rules (see docs/CONVENTIONS.md):

- A volume has at least 2 voxels along each axis; a single slice (2D image, one-file series) is
  an error, because its slice spacing and therefore every volume in ml would be unknown.
- Incomplete or unevenly spaced DICOM stacks are errors (see ``sah.data.readers.dicom``). A
  gantry-tilted stack is shifted back slice by slice onto an orthogonal grid, as dcm2niix does,
  and its tilt is reported in ``meta['gantry_tilt_deg']``.
- Raw scanner values (e.g. 0-4095 without the -1024 rescale) are detected from the histogram and
  refused; ``assume_offset=-1024`` is the documented repair. NaN/inf voxels are refused;
  ``fill_nonfinite=-1024`` (air) is the documented repair.
- Identifying DICOM attributes never reach ``CTVolume.meta`` (allow-list in
  ``sah.data.readers.privacy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np

from sah.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Raw-storage detection: after a +1024 offset soft tissue (0-80 HU) lands here.
RAW_TISSUE_RANGE = (900.0, 1200.0)
RAW_TISSUE_MIN_FRACTION = 0.05
# A CT in HU spans far more than this; a volume inside it is normalised data or a mask.
NORMALISED_ABS_MAX = 5.0


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume: ``array`` float32 HU indexed (x, y, z) in RAS, ``affine`` voxel -> RAS mm.

    ``spacing`` is the voxel size in mm along each array axis. ``meta`` holds non-identifying
    facts only (file format, slice count, scanner model, kernel, ...).
    """

    array: np.ndarray = field(repr=False)
    affine: np.ndarray = field(repr=False)
    spacing: tuple[float, float, float]
    source: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3 or self.affine.shape != (4, 4) or len(self.spacing) != 3:
            raise ValueError(
                f"CTVolume needs a 3D array, a 4x4 affine and 3 spacings; got array "
                f"{self.array.shape}, affine {self.affine.shape}, spacing {self.spacing}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"CTVolume(shape={self.shape}, spacing=({spacing}), source={str(self.source)!r}, "
            f"meta={self.meta!r})"
        )


def load_ct(
    path: str | Path,
    *,
    assume_offset: float | None = None,
    fill_nonfinite: float | None = None,
) -> CTVolume:
    """Load a CT volume from a NIfTI file (.nii/.nii.gz) or a folder holding one DICOM series.

    ``assume_offset``: add this to every voxel before the HU check, for files stored as raw
    scanner values without their rescale (typically ``-1024``).
    ``fill_nonfinite``: replace NaN/inf voxels with this value (e.g. ``-1024``, air) instead of
    refusing the file.
    """
    from sah.data.readers.dicom import read_dicom_series  # pydicom only when a DICOM folder is read

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            path,
            "does not exist",
            "check the path; manifest paths resolve against the manifest's folder",
        )
    if path.is_dir():
        array, affine, meta = read_dicom_series(path)
    elif is_nifti(path):
        array, affine, meta = read_nifti(path)
    elif path.suffix.lower() in {".dcm", ".ima", ""}:
        raise DataError(
            path,
            "is a single file; load_ct reads a whole DICOM series from its folder",
            f"pass the folder instead: {path.parent}",
        )
    else:
        raise DataError(
            path,
            "is neither a NIfTI file (.nii, .nii.gz) nor a DICOM folder",
            "convert the image to NIfTI (e.g. with dcm2niix)",
        )
    array, affine = to_closest_ras(array, affine)
    array = _finite_or_filled(array, path, fill_nonfinite)
    if assume_offset is not None:
        array = array + np.float32(assume_offset)
        meta = {**meta, "assumed_offset": float(assume_offset)}
    _check_hounsfield(array, path, assume_offset)
    return CTVolume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        affine=affine,
        spacing=voxel_spacing(affine),
        source=path,
        meta=meta,
    )


def load_label(path: str | Path, like: CTVolume, *, atol_mm: float = 1e-3) -> np.ndarray:
    """Load a NIfTI label map on the grid of ``like``, as uint8 in the same RAS orientation.

    Both files are reoriented to RAS first, so a label stored in another axis order still
    matches. A label whose shape or affine differs from the image by more than ``atol_mm`` is
    refused rather than resampled: a shifted label silently corrupts every metric.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(path, "does not exist", f"check the label path for image {like.source}")
    if not is_nifti(path):
        raise DataError(
            path,
            "is not a NIfTI label file (.nii, .nii.gz); DICOM SEG/RTSTRUCT are not supported",
            "convert the label to NIfTI on the image grid",
        )
    data, affine, _ = read_nifti(path)
    data, affine = to_closest_ras(data, affine)
    if data.shape != like.array.shape:
        raise DataError(
            path,
            f"label shape {data.shape} differs from shape {like.array.shape} of image "
            f"{like.source}",
            "use the label drawn on this image, or resample it to the image grid with "
            "nearest-neighbour interpolation",
        )
    offset = float(np.abs(affine - like.affine).max())
    if offset > atol_mm:
        raise DataError(
            path,
            f"label grid differs from the grid of image {like.source} by up to {offset:.3g} mm "
            f"(tolerance {atol_mm:g} mm)",
            "use the label drawn on this image, resample it to the image grid, or raise atol_mm "
            "if the difference is rounding",
        )
    if not np.all(np.isfinite(data)):
        raise DataError(path, "label holds NaN or infinite values", "export the label again")
    rounded = np.rint(data)
    if np.abs(data - rounded).max(initial=0.0) > 1e-3:
        raise DataError(
            path,
            "label holds non-integer values (resampled with linear interpolation?)",
            "resample labels with nearest-neighbour interpolation",
        )
    if rounded.min() < 0 or rounded.max() > 255:
        raise DataError(
            path,
            f"label values span {rounded.min():g}..{rounded.max():g}, outside 0..255",
            "store class indices 0..255",
        )
    return np.ascontiguousarray(rounded.astype(np.uint8))


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Voxels (float32, scaling applied), affine and metadata of a 3D NIfTI file."""
    try:
        image = cast(nib.Nifti1Image, nib.load(path))  # a .nii(.gz) file (is_nifti, _niftis)
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as error:  # nibabel, gzip and zlib raise many types for damaged files
        raise DataError(
            path,
            f"cannot read NIfTI ({type(error).__name__}: {error})",
            "the file is truncated or corrupt: download or export it again (a partial .nii.gz "
            "is typical of an interrupted download)",
        ) from error
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise DataError(
            path,
            f"has shape {data.shape}: several volumes in one file",
            "save the CT volume you need as its own 3D file",
        )
    if data.ndim < 3 or min(data.shape) < 2:
        raise DataError(
            path,
            f"is a 2D image (shape {data.shape}), not a volume",
            "pass the whole 3D volume; single slices have no slice spacing",
        )
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(
            path,
            "has an invalid affine (voxel-to-world matrix)",
            "export the image again with its geometry",
        )
    meta: dict[str, Any] = {"format": "nifti"}
    header = image.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        meta["orientation_unknown"] = True  # no xform: left/right cannot be trusted
    return data, affine, meta


def to_closest_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute and flip array axes so they run closest to R, A, S; the affine follows."""
    orientation = nib.orientations.io_orientation(affine)
    reoriented = nib.orientations.apply_orientation(array, orientation)
    new_affine = affine @ nib.orientations.inv_ornt_aff(orientation, array.shape)
    return np.ascontiguousarray(reoriented), new_affine


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis (column norms of the affine)."""
    sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return (float(sizes[0]), float(sizes[1]), float(sizes[2]))


def _finite_or_filled(array: np.ndarray, path: Path, fill: float | None) -> np.ndarray:
    finite = np.isfinite(array)
    if finite.all():
        return array
    count = int(finite.size - np.count_nonzero(finite))
    if fill is None:
        raise DataError(
            path,
            f"{count} voxels are NaN or infinite",
            "export the image again, or load it with fill_nonfinite=-1024 to treat them as air",
        )
    return np.where(finite, array, np.float32(fill))


def _check_hounsfield(array: np.ndarray, path: Path, assume_offset: float | None) -> None:
    """Refuse intensities that cannot be HU, judged from the histogram.

    Stored raw values (0-4095 written without the -1024 rescale) have no voxel below 0 and their
    soft tissue sits near 1024-1100, where HU data holds almost nothing but dense bone.
    """
    low, high = float(array.min()), float(array.max())
    after = f" after the offset {assume_offset:g}" if assume_offset is not None else ""
    if low >= 0:
        in_tissue_band = np.count_nonzero(
            (array >= RAW_TISSUE_RANGE[0]) & (array <= RAW_TISSUE_RANGE[1])
        )
        fraction = in_tissue_band / array.size
        if fraction >= RAW_TISSUE_MIN_FRACTION:
            raise DataError(
                path,
                f"intensities are not Hounsfield units{after}: minimum {low:g} with no air near "
                f"-1000, and {fraction:.0%} of voxels at {RAW_TISSUE_RANGE[0]:g}-"
                f"{RAW_TISSUE_RANGE[1]:g} where soft tissue lands when stored without rescale",
                "apply RescaleIntercept -1024: load it with assume_offset=-1024, or fix the "
                "file (NIfTI scl_inter / DICOM RescaleIntercept)",
            )
    if max(abs(low), abs(high)) <= NORMALISED_ABS_MAX:
        raise DataError(
            path,
            f"intensities span only {low:g}..{high:g}{after}: normalised data or a mask, not HU",
            "pass the original CT in Hounsfield units (and masks as labels)",
        )
