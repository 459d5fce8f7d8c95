"""Per-patient evaluation of a trained segmentation net on whole validation volumes.

2D nets are evaluated in the input's own grid (slice by slice). 3D nets are evaluated in the
grid their data was preprocessed to (e.g. the Swin UNETR study's 1.5x1.5x2.0 mm, cropped to the
head and padded to the patch size): masks are not resampled back, and the metrics in mm and mL
use that grid's spacing. Specificity then counts the voxels of that grid only.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sah.data.modules.case import Case
from sah.data.preprocess.geometry import center_crop_or_pad_xy, resampled_shape
from sah.data.preprocess.intensity import apply_window
from sah.data.readers.ct import CTVolume
from sah.metrics import segmentation_metrics
from sah.tasks.segmentation.module import predict_slices
from sah.tasks.segmentation.sliding_window import SlidingWindow

# A 2D net sees scans whose in-plane spacing is within 10 % of its training pixel size as they
# are; others are resampled to that pixel size and the probabilities mapped back.
PIXEL_TOLERANCE = 0.1


def predict_volume(
    net: nn.Module,
    image_hu: np.ndarray,
    window: tuple[float, float],
    size: int,
    threshold: float = 0.5,
) -> np.ndarray:
    """Binary mask (x, y, z) for a whole volume, slice by slice, in the input's own grid."""
    return slice_probabilities(net, image_hu, window, size) >= threshold


def slice_probabilities(
    net: nn.Module, image_hu: np.ndarray, window: tuple[float, float], size: int
) -> np.ndarray:
    """Blood probability (x, y, z) from a 2D net applied to each axial slice, in the input grid.

    Slices are windowed and centre-cropped/padded to the training size, as in training; the
    result is mapped back to the input's in-plane size (zero outside a crop).
    """
    nx, ny, nz = image_hu.shape
    windowed = center_crop_or_pad_xy(apply_window(image_hu, *window), size, 0.0)
    stack = torch.from_numpy(np.ascontiguousarray(windowed.transpose(2, 0, 1)))[:, None]
    net.eval()
    prob = predict_slices(net, stack).numpy().transpose(1, 2, 0)
    out = np.zeros((nx, ny, nz), dtype=np.float32)
    sx, sy = _offsets(nx, size), _offsets(ny, size)
    out[sx[0] : sx[1], sy[0] : sy[1]] = prob[sx[2] : sx[3], sy[2] : sy[3]]
    return out


def predict_probabilities(
    net: nn.Module, ct: CTVolume, spec: dict, flip_tta: bool = False
) -> np.ndarray:
    """Probabilities on the grid of a raw HU volume, preprocessed as the checkpoint's spec says.

    2D nets run slice by slice on the scan itself, resampled in-plane to the training pixel size
    when it differs by more than PIXEL_TOLERANCE. 3D nets run by sliding windows on the
    preprocessed (resampled, cropped) volume; the probabilities are then mapped back onto the
    scan's own voxels through the two affines (linear interpolation, 0 outside the crop).
    """
    kind = spec.get("kind")
    if kind == "slices":
        window, size = tuple(spec["window"]), int(spec["slice_size"])
        image = ct.array
        trained_mm = spec.get("pixel_mm")  # absent in checkpoints from before it was recorded
        if trained_mm and max(abs(s / trained_mm - 1.0) for s in ct.spacing[:2]) > PIXEL_TOLERANCE:
            # Blood must look as large (in pixels) as in training: slices go to its pixel size.
            shape = resampled_shape(image.shape[:2], ct.spacing[:2], (trained_mm, trained_mm))
            image = resample_in_plane(image, shape)
        prob = slice_probabilities(net, image, window, size)
        if flip_tta:
            # Left-right flip (axis 0 is x in RAS): predict on the mirror, mirror back.
            mirrored = slice_probabilities(net, image[::-1].copy(), window, size)
            prob = (prob + mirrored[::-1]) / 2
        if prob.shape != ct.array.shape:
            prob = resample_in_plane(prob, ct.array.shape[:2])
        return prob
    if kind == "volume":
        return volume_probabilities(net, ct, spec, flip_tta)
    raise ValueError(f"unknown inference kind {kind!r} in the checkpoint's spec")


def resample_in_plane(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``volume`` (x, y, z) linearly resampled to ``shape`` in-plane over the same field of
    view (voxel centres aligned as grids of equal extent); slices are kept."""
    from scipy.ndimage import map_coordinates

    nx, ny, nz = volume.shape
    axes = [
        (np.arange(n_new, dtype=np.float32) + 0.5) * (n_old / n_new) - 0.5
        for n_old, n_new in zip((nx, ny), shape, strict=True)
    ]
    gx, gy = np.meshgrid(*axes, indexing="ij")
    out = np.empty((shape[0], shape[1], nz), dtype=np.float32)
    for k in range(nz):
        out[:, :, k] = map_coordinates(volume[:, :, k], [gx, gy], order=1, mode="nearest")
    return out


def volume_probabilities(
    net: nn.Module, ct: CTVolume, spec: dict, flip_tta: bool = False
) -> np.ndarray:
    """A 3D net's probabilities, computed in its preprocessed grid, on the scan's voxel grid."""
    from scipy.ndimage import map_coordinates

    from sah.data.preprocess import build_preprocess

    params = dict(spec["preprocess"])
    case = build_preprocess(params.pop("name"), **params)(ct)
    window = SlidingWindow(
        tuple(spec.get("roi_size") or spec["patch_size"]), flip_axes=(0,) if flip_tta else ()
    )
    net.eval()
    device = next(net.parameters()).device
    volume = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))[None, None]
    prob = window.probability(net, volume.to(device)).cpu().numpy()
    # Scan voxel -> world (mm) -> preprocessed voxel, then interpolate there.
    to_pre = np.linalg.inv(case.affine) @ ct.affine
    grid = np.indices(ct.array.shape, dtype=np.float32).reshape(3, -1)
    coords = to_pre[:3, :3] @ grid + to_pre[:3, 3:4]
    mapped = map_coordinates(prob, coords, order=1, mode="constant", cval=0.0)
    return mapped.reshape(ct.array.shape).astype(np.float32)


def _offsets(n: int, size: int) -> tuple[int, int, int, int]:
    """(dst_start, dst_stop, src_start, src_stop) mapping the centred size-grid back to n."""
    if n >= size:
        start = (n - size) // 2
        return start, start + size, 0, size
    before = (size - n) // 2
    return 0, n, before, before + n


def evaluate_patients(
    net: nn.Module,
    patients: Sequence[Case],
    window: tuple[float, float],
    size: int,
    threshold: float = 0.5,
) -> tuple[list[dict[str, object]], dict[str, np.ndarray]]:
    """Metrics per patient (the full clinical suite) and the predicted masks by patient id."""
    rows: list[dict[str, object]] = []
    masks: dict[str, np.ndarray] = {}
    for pv in patients:
        pred = predict_volume(net, pv.image, window, size, threshold)
        masks[pv.patient_id] = pred
        metrics = segmentation_metrics(pred, pv.mask.astype(bool), pv.spacing)
        rows.append({"patient_id": pv.patient_id, **metrics})
    return rows, masks


def predict_volume_3d(
    net: nn.Module,
    image: np.ndarray,
    window: SlidingWindow,
    threshold: float = 0.5,
) -> np.ndarray:
    """Binary mask (x, y, z) of a preprocessed volume by sliding windows, in the same grid."""
    device = next(net.parameters()).device
    net.eval()
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    prob = window.probability(net, volume.to(device))
    return (prob >= threshold).cpu().numpy()


def evaluate_volumes(
    net: nn.Module,
    cases: Sequence[Case],
    window: SlidingWindow,
    threshold: float = 0.5,
) -> tuple[list[dict[str, object]], dict[str, np.ndarray]]:
    """Metrics per patient (the full clinical suite, in the preprocessed grid's spacing) and the
    predicted masks by patient id, for 3D nets on preprocessed volumes."""
    rows: list[dict[str, object]] = []
    masks: dict[str, np.ndarray] = {}
    for case in cases:
        pred = predict_volume_3d(net, case.image, window, threshold)
        masks[case.patient_id] = pred
        metrics = segmentation_metrics(pred, case.mask.astype(bool), case.spacing)
        rows.append({"patient_id": case.patient_id, **metrics})
    return rows, masks


def write_rows(rows: Sequence[dict[str, object]], path: str | Path) -> Path:
    """Write per-patient rows as CSV (one column per metric)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0]) if rows else ["patient_id"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path
