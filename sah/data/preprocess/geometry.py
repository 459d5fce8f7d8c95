"""Grid operations that keep the affine true: every crop, pad or resampling updates the
voxel -> RAS mm map, so a structure keeps its physical position and volumes in ml stay right."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from sah.data.readers.ct import to_closest_ras, voxel_spacing


def shift_affine(affine: np.ndarray, offset: Sequence[float] | np.ndarray) -> np.ndarray:
    """The affine of a grid whose voxel 0 sits at index ``offset`` of the old grid."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, 3] = affine[:3, :3] @ np.asarray(offset, dtype=np.float64) + affine[:3, 3]
    return out


def ensure_ras(
    image: np.ndarray, affine: np.ndarray, label: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reorient to the closest RAS axes; a no-op for volumes from ``load_ct``, already in RAS."""
    new_image, new_affine = to_closest_ras(image, affine)
    new_label = None if label is None else to_closest_ras(label, affine)[0]
    return new_image, new_affine, new_label


def resampled_shape(
    shape: Sequence[int],
    spacing: Sequence[float] | np.ndarray,
    new_spacing: Sequence[float] | np.ndarray,
) -> tuple[int, ...]:
    """Voxel count that keeps the field of view (n x spacing) at the new spacing."""
    return tuple(
        max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, new_spacing, strict=True)
    )


def resample_to_spacing(
    array: np.ndarray, affine: np.ndarray, new_spacing: Sequence[float], order: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resample to ``new_spacing`` mm keeping the axes' directions and the field-of-view centre.

    ``order`` 1 is (tri)linear for images, 0 nearest for labels (class values stay exact).
    Samples up to half a voxel beyond the old grid's edge take the edge value. Unlike MONAI's
    ``Spacing`` (origin kept at the first voxel) the grid is centred on the old one; both are
    exact in world coordinates because the returned affine describes the new grid.
    """
    spacing = np.asarray(voxel_spacing(affine))
    target = np.asarray(new_spacing, dtype=np.float64)
    shape = np.asarray(array.shape)
    new_shape = np.asarray(resampled_shape(array.shape, spacing, target))
    if np.array_equal(new_shape, shape) and np.allclose(spacing, target, rtol=0, atol=1e-6):
        return array, np.asarray(affine, dtype=np.float64)
    ratio = target / spacing  # old-grid index step per new voxel
    offset = (shape - 1) / 2.0 - (new_shape - 1) / 2.0 * ratio
    out = ndi.affine_transform(
        array,
        ratio,
        offset=offset,
        output_shape=tuple(int(n) for n in new_shape),
        order=order,
        mode="nearest",
        prefilter=False,
    )
    new_affine = shift_affine(affine, offset)
    new_affine[:3, :3] = np.asarray(affine)[:3, :3] * ratio[None, :]
    return out, new_affine


def center_crop_or_pad(
    array: np.ndarray, shape: Sequence[int | None], fill: float
) -> tuple[np.ndarray, np.ndarray]:
    """Crop or pad each axis to ``shape`` around the centre (``None`` keeps that axis).

    Returns the array and the old-grid index of its voxel 0 (negative where padded), for
    ``shift_affine``. Odd differences put the extra voxel at the far end, as AUCMEDI's
    Padding/Crop do.
    """
    if len(shape) != array.ndim:
        raise ValueError(f"shape {tuple(shape)} does not match array of {array.ndim} dimensions")
    slices, pads, offset = [], [], []
    for n, size in zip(array.shape, shape, strict=True):
        if size is None or size == n:
            slices.append(slice(None))
            pads.append((0, 0))
            offset.append(0)
        elif n > size:
            start = (n - size) // 2
            slices.append(slice(start, start + size))
            pads.append((0, 0))
            offset.append(start)
        else:
            before = (size - n) // 2
            slices.append(slice(None))
            pads.append((before, size - n - before))
            offset.append(-before)
    out = array[tuple(slices)]
    if any(p != (0, 0) for p in pads):
        out = np.pad(out, pads, mode="constant", constant_values=fill)
    return np.ascontiguousarray(out), np.asarray(offset, dtype=np.int64)


def center_crop_or_pad_xy(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    """The in-plane axes (x, y) cropped or padded to ``size`` around the centre, any others
    kept: the square a 2D net sees of an axial slice or of a stack of them."""
    return center_crop_or_pad(array, (size, size, *[None] * (array.ndim - 2)), fill)[0]


def pad_to_at_least(
    array: np.ndarray, min_shape: Sequence[int], fill: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centre-pad axes shorter than ``min_shape``; longer axes are kept whole."""
    target = [max(n, m) for n, m in zip(array.shape, min_shape, strict=True)]
    return center_crop_or_pad(array, target, fill)


def foreground_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the true voxels of ``mask`` grown by ``margin`` voxels; None if empty."""
    if not mask.any():
        return None
    box = []
    for axis, n in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(0, int(hits[0]) - margin), min(n, int(hits[-1]) + 1 + margin)))
    return tuple(box)
