"""Per-patient metrics for binary hemorrhage masks (2D or 3D), in physical units.

Definitions follow MONAI 1.6 so that numbers are comparable with papers that use it (the tests
check agreement on anisotropic volumes):

- surface of a mask: the mask minus its binary erosion with the face-connected structuring
  element (scipy's default; 6-connectivity in 3D, 4 in 2D), with everything outside the array
  counted as background, so a mask touching the array border has a surface there.
- directed surface distances A -> B: for every surface voxel of A, the Euclidean distance in mm
  (voxel centres scaled by ``spacing``) to the nearest surface voxel of B.
- ``sasd_mm``: the mean over the union of both directed distance sets, so the larger surface
  weighs more (MONAI ``SurfaceDistanceMetric(symmetric=True)``), not the average of the two
  directed means.
- ``hd95_mm``: the larger of the two directed 95th percentiles, linear interpolation
  (MONAI ``HausdorffDistanceMetric(percentile=95)``).
- ``vsi``: volumetric similarity, ``1 - |Vp - Vg| / (Vp + Vg)``.
- volumes in mL: voxel count times the voxel volume (product of ``spacing`` / 1000 unless
  ``voxel_volume_ml`` is given, e.g. for a volume resampled from its original spacing).

Empty masks. MONAI returns NaN or inf when a mask is empty, and its mean then drops the case, so a
missed bleed disappears from the average (MONAI issue 9095). Here every metric is always finite:

- both empty (a true negative): dice = iou = vsi = 1, distances 0, sensitivity = 1.
- exactly one empty (a missed bleed or a bleed hallucinated on a clean scan): dice = iou = vsi = 0
  and both distances equal ``empty_penalty_mm``, by default the diagonal of the array's
  physical extent, ``sqrt(sum((shape * spacing) ** 2))``: no two voxels can be farther apart,
  so a miss always scores worse than any hit.
- sensitivity is 1 when the truth is empty (no bleed voxel could be missed); specificity is 1
  when the truth fills the whole array (no background voxel could be wrong). False positives on
  a clean scan still show in dice, vsi, specificity and the distances.
- ``empty_pred`` and ``empty_truth`` (0.0 or 1.0) flag these cases so reports can count them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

SurfaceDistances = tuple[np.ndarray, np.ndarray]


def _as_binary(mask: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != bool and ((array != 0) & (array != 1)).any():
        raise ValueError(
            f"{name} must be a binary mask (0/1 or bool); threshold probabilities or select a "
            "label (e.g. `labels == 1`) before computing metrics"
        )
    return array.astype(bool, copy=False)


def _as_spacing(spacing: float | Sequence[float] | np.ndarray, ndim: int) -> np.ndarray:
    """One positive spacing per axis; a single number means isotropic voxels."""
    values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be {ndim} positive numbers in mm, got {spacing!r}")
    return values


def _validated(
    pred: np.ndarray, truth: np.ndarray, spacing: float | Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred_mask, truth_mask = _as_binary(pred, "pred"), _as_binary(truth, "truth")
    if pred_mask.shape != truth_mask.shape:
        raise ValueError(
            f"pred shape {pred_mask.shape} differs from truth shape {truth_mask.shape}"
        )
    if pred_mask.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {pred_mask.shape}")
    return pred_mask, truth_mask, _as_spacing(spacing, pred_mask.ndim)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Binary Dice ``2 |P & T| / (|P| + |T|)`` of two masks of one shape; 1 when both are empty
    (nothing to find, nothing found). The cheap overlap a training loop validates with; the
    same value as ``segmentation_metrics(...)["dice"]``."""
    pred_mask, truth_mask = _as_binary(pred, "pred"), _as_binary(truth, "truth")
    if pred_mask.shape != truth_mask.shape:
        raise ValueError(
            f"pred shape {pred_mask.shape} differs from truth shape {truth_mask.shape}"
        )
    total = int(pred_mask.sum()) + int(truth_mask.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred_mask & truth_mask)) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour in the background (outside the array counts)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _crop_to_union(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the union's bounding box plus one background voxel on every side.

    Surfaces and nearest-surface distances are unchanged (everything outside the box is background
    in both masks), and the distance transforms run on the box rather than the whole scan.
    """
    coords = np.argwhere(pred | truth)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(coords.min(0), coords.max(0), strict=True))
    return np.pad(pred[box], 1), np.pad(truth[box], 1)


def surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: float | Sequence[float] | np.ndarray
) -> SurfaceDistances:
    """Directed surface distances in mm: (pred surface -> truth surface, truth -> pred).

    Both masks must be non-empty; the empty cases are ``segmentation_metrics``'s business.
    """
    pred_mask, truth_mask, spacing_mm = _validated(pred, truth, spacing)
    if not pred_mask.any() or not truth_mask.any():
        raise ValueError("surface distances are undefined when pred or truth is empty")
    pred_box, truth_box = _crop_to_union(pred_mask, truth_mask)
    pred_surface, truth_surface = surface(pred_box), surface(truth_box)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=spacing_mm)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing_mm)
    return to_truth[pred_surface], to_pred[truth_surface]


def physical_diagonal_mm(
    shape: Sequence[int], spacing: float | Sequence[float] | np.ndarray
) -> float:
    """Diagonal of the array's physical extent: the default distance penalty for empty masks."""
    spacing_mm = _as_spacing(spacing, len(shape))
    return float(np.sqrt(np.sum((np.asarray(shape) * spacing_mm) ** 2)))


def segmentation_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: float | Sequence[float],
    *,
    voxel_volume_ml: float | None = None,
    empty_penalty_mm: float | None = None,
) -> dict[str, float]:
    """Overlap, surface-distance, detection and volume metrics for one patient.

    ``spacing`` is in mm per array axis; see the module docstring for definitions and for the
    rules that keep empty masks finite and counted.
    """
    pred_mask, truth_mask, spacing_mm = _validated(pred, truth, spacing)
    if voxel_volume_ml is None:
        voxel_volume_ml = float(np.prod(spacing_mm)) / 1000.0
    elif not voxel_volume_ml > 0:
        raise ValueError(f"voxel_volume_ml must be positive, got {voxel_volume_ml!r}")
    if empty_penalty_mm is None:
        empty_penalty_mm = physical_diagonal_mm(pred_mask.shape, spacing_mm)
    elif not (np.isfinite(empty_penalty_mm) and empty_penalty_mm >= 0):
        raise ValueError(f"empty_penalty_mm must be finite and >= 0, got {empty_penalty_mm!r}")

    n_pred, n_truth = int(pred_mask.sum()), int(truth_mask.sum())
    true_pos = int(np.count_nonzero(pred_mask & truth_mask))
    false_pos, false_neg = n_pred - true_pos, n_truth - true_pos
    true_neg = pred_mask.size - true_pos - false_pos - false_neg

    if n_pred == 0 and n_truth == 0:
        dice = iou = vsi = 1.0
        sasd = hd95 = 0.0
    else:
        dice = 2.0 * true_pos / (n_pred + n_truth)
        iou = true_pos / (n_pred + n_truth - true_pos)
        vsi = 1.0 - abs(n_pred - n_truth) / (n_pred + n_truth)
        if n_pred == 0 or n_truth == 0:
            sasd = hd95 = float(empty_penalty_mm)
        else:
            pred_to_truth, truth_to_pred = surface_distances(pred_mask, truth_mask, spacing_mm)
            sasd = float(np.concatenate([pred_to_truth, truth_to_pred]).mean())
            hd95 = float(max(np.percentile(pred_to_truth, 95), np.percentile(truth_to_pred, 95)))

    volume_pred, volume_true = n_pred * voxel_volume_ml, n_truth * voxel_volume_ml
    return {
        "dice": float(dice),
        "iou": float(iou),
        "vsi": float(vsi),
        "sasd_mm": sasd,
        "hd95_mm": hd95,
        "sensitivity": true_pos / n_truth if n_truth else 1.0,
        "specificity": true_neg / (true_neg + false_pos) if true_neg + false_pos else 1.0,
        "volume_pred_ml": volume_pred,
        "volume_true_ml": volume_true,
        "volume_abs_error_ml": abs(volume_pred - volume_true),
        "empty_pred": float(n_pred == 0),
        "empty_truth": float(n_truth == 0),
    }
