"""Read one CT series from a folder of DICOM files, checking the geometry real exports get wrong.

The series is rebuilt from ImagePositionPatient / ImageOrientationPatient, never from file names
or InstanceNumber, because exports shuffle and renumber files. Stacks that have no regular voxel
grid (missing or unevenly spaced slices, several series mixed in one folder) are refused with a
DataError rather than silently resampled or merged: a wrong slice spacing changes every blood
volume computed downstream.

A series acquired with gantry tilt (many head-CT protocols tilt along the orbitomeatal line) is a
sheared grid: each slice sits shifted sideways, in its own plane, by an amount proportional to its
distance along the slice normal. Like dcm2niix, the reader shifts each slice back (linear
interpolation within the slice; no slice is mixed with another) onto the orthogonal grid of the
first slice, reports the tilt (``meta['gantry_tilt_deg']``, a log warning) and keeps what is needed
to put a mask back on the acquired slices (``mask_on_acquired_grid``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from sah.data.readers.privacy import SAFE_DICOM_ATTRIBUTES
from sah.errors import DataError

log = logging.getLogger(__name__)

# Slices drifting sideways by more than half a pixel over the whole stack are not one orthogonal
# grid; a real gantry tilt (typically 5-30 degrees) drifts by many millimetres, rounding of
# positions in exports by far less. A drift that is not proportional to the distance along the
# normal (within this much) is no tilt, and is refused.
MAX_SIDEWAYS_DRIFT_PIXELS = 0.5
MAX_TILT_DEG = 45.0
# HU shifted in from outside a tilted slice's field of view: air.
OUTSIDE_HU = -1024.0
# Slice gaps may differ from the median gap by this much (rounding of positions in exports).
GAP_TOLERANCE_MM = 0.01
GAP_TOLERANCE_RELATIVE = 0.02
# Defer reading large elements (pixel data) until a series has been chosen and checked.
DEFER_ELEMENTS_LARGER_THAN = "64 KB"

_RESAMPLE_FIX = (
    "convert the series with dcm2niix (which reports uneven slices) and load the NIfTI, or "
    "resample it to a regular grid"
)


def read_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read the single CT series in ``folder``.

    Returns the HU array in DICOM index order (column, row, slice), the 4x4 RAS affine of that
    index order, and non-identifying metadata (see ``sah.data.readers.privacy``).
    """
    slices = _read_image_headers(folder)
    slices = _single_series(slices, folder)
    _check_is_ct(slices, folder)
    slices, affine_lps, tilt = _stack_geometry(slices, folder)
    array = np.stack([read_slice_hu(ds).T for ds in slices], axis=-1)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    meta: dict[str, Any] = {"format": "dicom", "n_slices": len(slices)}
    meta.update(_safe_attributes(slices[0]))
    if tilt is not None:
        array = shift_slices(array, tilt.shifts, order=1, cval=OUTSIDE_HU)
        meta["gantry_tilt_deg"] = round(tilt.degrees, 2)
        # The acquired (sheared) grid, in the array's DICOM index order, for writing masks back.
        meta["acquired_affine"] = (lps_to_ras @ tilt.acquired_affine).round(6).tolist()
        meta["tilt_shifts_px"] = tilt.shifts.round(4).tolist()
        meta["orthogonal_affine"] = (lps_to_ras @ affine_lps).round(6).tolist()
        log.warning(
            "%s: gantry tilt of %.1f°; slices shifted back onto an orthogonal grid (as dcm2niix "
            "does, up to %.1f mm)",
            folder,
            tilt.degrees,
            tilt.max_shift_mm,
        )
    return array, lps_to_ras @ affine_lps, meta


@dataclass(frozen=True)
class Tilt:
    """A gantry-tilted stack: per slice, the in-plane shift (pixels along array axes 0 and 1)
    that brings it onto the orthogonal grid, and the sheared LPS affine it was acquired on."""

    shifts: np.ndarray
    degrees: float
    acquired_affine: np.ndarray
    max_shift_mm: float


def shift_slices(array: np.ndarray, shifts: np.ndarray, *, order: int, cval: float) -> np.ndarray:
    """Shift slice ``k`` of ``array`` (axes 0, 1 in-plane) by ``shifts[k]`` pixels:
    ``out[i, j, k] = array[i - shifts[k, 0], j - shifts[k, 1], k]``, interpolated with
    ``order`` (1 linear for HU, 0 nearest for masks), ``cval`` outside."""
    from scipy import ndimage

    out = np.empty_like(array)
    for k in range(array.shape[2]):
        out[:, :, k] = ndimage.shift(
            array[:, :, k], shifts[k], order=order, mode="constant", cval=cval, prefilter=False
        )
    return out


def mask_on_acquired_grid(
    mask_ras: np.ndarray, meta: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """A mask of a tilted series' ``CTVolume`` (RAS, orthogonal grid) on the acquired slices:
    the array in DICOM index order (voxel (i, j, k) is pixel (i, j) of slice k) and the sheared
    RAS affine of those slices. The inverse per-slice shifts use nearest neighbour."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    orthogonal = np.asarray(meta["orthogonal_affine"], dtype=float)
    transform = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(orthogonal))
    dicom_order = apply_orientation(np.asarray(mask_ras, dtype=np.uint8), transform)
    shifts = -np.asarray(meta["tilt_shifts_px"], dtype=float)
    acquired = shift_slices(dicom_order, shifts, order=0, cval=0)
    return acquired, np.asarray(meta["acquired_affine"], dtype=float)


def read_slice_hu(ds: Dataset) -> np.ndarray:
    """One slice in HU (float32, rows x columns): stored value * slope + intercept."""
    source = Path(str(ds.filename)) if ds.filename else Path("<dataset>")
    try:
        pixels = ds.pixel_array
    except Exception as error:  # pydicom raises many types for undecodable or truncated data
        transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataError(
            source,
            f"cannot decode pixel data (transfer syntax {transfer_syntax}): {error}",
            "decompress the file (e.g. `gdcmconv --raw`) or install a pydicom decoder plugin "
            "(pylibjpeg, python-gdcm); if the file is truncated, export it again",
        ) from error
    if pixels.ndim != 2:
        raise DataError(
            source,
            f"pixel data has shape {pixels.shape}, not one grayscale slice "
            "(enhanced multi-frame or colour images are not supported)",
            "convert the series with dcm2niix and load the NIfTI",
        )
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return (pixels.astype(np.float64) * slope + intercept).astype(np.float32)


def _read_image_headers(folder: Path) -> list[Dataset]:
    """Headers of the DICOM images in ``folder`` (not recursive; other files are skipped)."""
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images: list[Dataset] = []
    for file in candidates:
        if file.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(file, defer_size=DEFER_ELEMENTS_LARGER_THAN)
        except InvalidDicomError:
            continue
        except Exception as error:
            raise DataError(
                file, f"cannot read DICOM header: {error}", "export the file again"
            ) from error
        if "PixelData" in ds:  # reports, structure sets and other non-image objects are ignored
            images.append(ds)
    if not images:
        niftis = [p.name for p in candidates if p.name.lower().endswith((".nii", ".nii.gz"))]
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if niftis:
            fix = f"it holds NIfTI files; pass one of them, e.g. {folder / niftis[0]}"
        elif subfolders:
            fix = f"pass the subfolder of one series (found: {', '.join(subfolders[:5])})"
        else:
            fix = "pass a folder holding the .dcm files of one series, or a NIfTI file"
        raise DataError(folder, "holds no DICOM images", fix)
    return images


def _describe_series(slices: list[Dataset]) -> str:
    first = slices[0]
    number = first.get("SeriesNumber", "?")
    description = str(first.get("SeriesDescription", "") or "no description")[:64]
    return f"series {number} '{description}' ({len(slices)} slices)"


def _single_series(slices: list[Dataset], folder: Path) -> list[Dataset]:
    """Refuse folders mixing series: merging them would interleave unrelated slices."""
    by_uid: dict[str, list[Dataset]] = {}
    for ds in slices:
        uid = ds.get("SeriesInstanceUID")
        if not uid:
            raise DataError(
                Path(str(ds.filename)),
                "has no SeriesInstanceUID, so its series cannot be told apart",
                "export the series again with complete headers",
            )
        by_uid.setdefault(str(uid), []).append(ds)
    if len(by_uid) > 1:
        listing = "; ".join(
            _describe_series(group)
            for group in sorted(by_uid.values(), key=lambda g: str(g[0].get("SeriesNumber", "")))
        )
        raise DataError(
            folder,
            f"holds {len(by_uid)} series: {listing}",
            "move each series into its own folder and pass the folder of the one to load",
        )
    return slices


def _check_is_ct(slices: list[Dataset], folder: Path) -> None:
    modality = str(slices[0].get("Modality", "") or "")
    if modality and modality != "CT":
        raise DataError(folder, f"holds a {modality} series, not CT", "pass a CT series")
    for ds in slices:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(
                Path(str(ds.filename)),
                "is an enhanced multi-frame image, which is not supported",
                "convert the series with dcm2niix and load the NIfTI",
            )


def _required(ds: Dataset, keyword: str) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        raise DataError(
            Path(str(ds.filename)),
            f"lacks {keyword}, so the slice cannot be placed in space",
            "export the series with complete geometry, or convert it with dcm2niix",
        )
    return value


def _stack_geometry(
    slices: list[Dataset], folder: Path
) -> tuple[list[Dataset], np.ndarray, Tilt | None]:
    """Sort slices along the slice normal, check they form a regular grid, return its orthogonal
    LPS affine and, for a gantry-tilted stack, how to shift its slices onto that grid."""
    first = slices[0]
    orientation = np.array(_required(first, "ImageOrientationPatient"), dtype=float)
    pixel_spacing = np.array(_required(first, "PixelSpacing"), dtype=float)
    grid = (int(_required(first, "Rows")), int(_required(first, "Columns")))
    for ds in slices:
        if not np.allclose(
            np.array(_required(ds, "ImageOrientationPatient"), float), orientation, atol=1e-4
        ):
            raise DataError(
                folder,
                "slices have different orientations (ImageOrientationPatient)",
                "pass a folder holding one axial series only",
            )
        same_grid = (int(_required(ds, "Rows")), int(_required(ds, "Columns"))) == grid
        if not same_grid or not np.allclose(
            np.array(_required(ds, "PixelSpacing"), float), pixel_spacing, atol=1e-4
        ):
            raise DataError(
                folder,
                "slices differ in size or pixel spacing",
                "pass a folder holding one series only",
            )
    if orientation.shape != (6,) or pixel_spacing.shape != (2,) or np.any(pixel_spacing <= 0):
        raise DataError(
            folder,
            "has malformed ImageOrientationPatient or PixelSpacing",
            "export the series again, or convert it with dcm2niix",
        )

    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    unit_and_orthogonal = (
        np.isclose(np.linalg.norm(row_direction), 1, atol=1e-3)
        and np.isclose(np.linalg.norm(column_direction), 1, atol=1e-3)
        and abs(float(row_direction @ column_direction)) < 1e-3
    )
    if not unit_and_orthogonal:
        raise DataError(
            folder,
            f"ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit vectors",
            "export the series again",
        )
    normal /= np.linalg.norm(normal)

    positions = np.array([_required(ds, "ImagePositionPatient") for ds in slices], dtype=float)
    along_normal = positions @ normal
    order = np.argsort(along_normal, kind="stable")
    slices = [slices[i] for i in order]
    positions, along_normal = positions[order], along_normal[order]

    if len(slices) < 2:
        raise DataError(
            folder,
            "holds a single slice, not a volume (the slice spacing is unknown)",
            "pass the folder of a complete series; load_ct needs at least 2 slices",
        )
    _check_regular_gaps(np.diff(along_normal), along_normal, folder)
    sideways = _sideways_per_mm(positions, along_normal, normal, float(pixel_spacing.min()), folder)

    row_spacing, column_spacing = pixel_spacing  # DICOM order: between rows, between columns
    affine = np.eye(4)
    affine[:3, 0] = row_direction * column_spacing  # array axis 0 walks along a row (columns)
    affine[:3, 1] = column_direction * row_spacing  # array axis 1 walks down a column (rows)
    affine[:3, 2] = (positions[-1] - positions[0]) / (len(slices) - 1)
    affine[:3, 3] = positions[0]
    if sideways is None:
        return slices, affine, None
    acquired = affine.copy()
    affine[:3, 2] = normal * (along_normal[-1] - along_normal[0]) / (len(slices) - 1)
    # Slice k sits shifted in its plane by sideways * (its distance along the normal): the
    # orthogonal grid's voxel (i, j, k) is its pixel (i - shift_0, j - shift_1), in pixels along
    # array axes 0 (row direction) and 1 (column direction).
    offsets = np.outer(along_normal - along_normal[0], sideways)
    shifts = np.stack(
        [(offsets @ row_direction) / column_spacing, (offsets @ column_direction) / row_spacing],
        axis=1,
    )
    degrees = float(np.degrees(np.arctan(np.linalg.norm(sideways))))
    mm = float(np.linalg.norm(offsets, axis=1).max())
    return slices, affine, Tilt(shifts, degrees, acquired, mm)


def _sideways_per_mm(
    positions: np.ndarray,
    along_normal: np.ndarray,
    normal: np.ndarray,
    pixel_size: float,
    folder: Path,
) -> np.ndarray | None:
    """None when slices stack straight along their normal; for gantry tilt, the sideways shift
    per mm along the normal (a vector in the slice plane, its length the tangent of the tilt).
    A sideways drift that is not proportional to the distance along the normal is refused."""
    offsets = positions - positions[0]
    sideways = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(sideways, axis=1).max())
    tolerance = MAX_SIDEWAYS_DRIFT_PIXELS * pixel_size
    if drift <= tolerance:
        return None
    distance = along_normal - along_normal[0]
    per_mm = (distance @ sideways) / float(distance @ distance)  # least squares through 0
    residual = float(np.linalg.norm(sideways - np.outer(distance, per_mm), axis=1).max())
    degrees = float(np.degrees(np.arctan(np.linalg.norm(per_mm))))
    if residual > tolerance or degrees > MAX_TILT_DEG:
        raise DataError(
            folder,
            f"slices shift sideways by up to {drift:.2f} mm across the stack, not in proportion "
            f"to their distance as a gantry tilt does (off by up to {residual:.2f} mm), so they "
            "do not form a voxel grid",
            _RESAMPLE_FIX,
        )
    return per_mm


def _check_regular_gaps(gaps: np.ndarray, along_normal: np.ndarray, folder: Path) -> None:
    """Tell duplicated, missing and unevenly spaced slices apart: each has its own fix."""
    if np.any(gaps < GAP_TOLERANCE_MM):
        duplicates = int(np.sum(gaps < GAP_TOLERANCE_MM))
        raise DataError(
            folder,
            f"{duplicates} slice(s) share a position with another slice (duplicated files or "
            "several acquisitions in one series)",
            "keep one copy of each slice, or put each acquisition in its own folder",
        )
    spacing = float(np.median(gaps))
    tolerance = GAP_TOLERANCE_MM + GAP_TOLERANCE_RELATIVE * spacing
    odd = np.abs(gaps - spacing) > tolerance
    if not odd.any():
        return
    multiples = np.rint(gaps / spacing)
    is_missing = (multiples >= 2) & (np.abs(gaps - multiples * spacing) <= tolerance)
    if np.all(is_missing[odd]):
        missing = int((multiples[odd] - 1).sum())
        where = ", ".join(
            f"{along_normal[i]:.1f}-{along_normal[i + 1]:.1f} mm" for i in np.flatnonzero(odd)[:5]
        )
        raise DataError(
            folder,
            f"{missing} slice(s) missing: gaps at {where} along the slice normal where the "
            f"spacing is {spacing:.2f} mm",
            "export the complete series again (check the slice count on the scanner/PACS)",
        )
    raise DataError(
        folder,
        f"slice spacing is irregular: gaps from {gaps.min():.2f} to {gaps.max():.2f} mm "
        f"(median {spacing:.2f} mm)",
        _RESAMPLE_FIX,
    )


def _plain(value: Any) -> Any:
    """DICOM values as plain Python types, so metadata pickles and serialises cleanly."""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _safe_attributes(ds: Dataset) -> dict[str, Any]:
    """Only allow-listed, non-identifying attributes leave the loader."""
    meta: dict[str, Any] = {}
    for keyword in SAFE_DICOM_ATTRIBUTES:
        value = ds.get(keyword)
        if value is not None and value != "":
            meta[keyword] = _plain(value)
    return meta
