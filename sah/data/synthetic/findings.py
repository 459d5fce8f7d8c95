"""Image findings a radiologist would report, computed from a phantom's label and lesion maps.

These become manifest columns and feed the clinical-variables table: total blood volume,
intraventricular volume, the thickest cisternal clot and the modified Fisher grade.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# Modified Fisher "thick" SAH: a clot completely filling a cistern or fissure. Basal cisterns and
# fissures are a few mm wide, so a clot at least this thick (in-plane) is taken to fill one.
THICK_CLOT_MM = 4.0
IVH_MIN_ML = 0.05  # less than a few voxels of ventricular blood is not reported
LESION_KINDS = ("sah", "ivh", "edh", "sdh", "iph", "tsah")


def lesion_volumes(label: np.ndarray, kind_map: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Volume (ml) of each lesion kind: labelled voxels by their dominant kind."""
    counts = np.bincount(kind_map[label > 0].ravel(), minlength=len(LESION_KINDS) + 1)
    return {
        f"{k}_volume_ml": round(float(counts[i + 1]) * voxel_ml, 3)
        for i, k in enumerate(LESION_KINDS)
    }


def max_clot_thickness_mm(
    subarachnoid: np.ndarray, cistern: np.ndarray, spacing: tuple[float, float, float]
) -> float:
    """Thickest subarachnoid clot inside cisterns/fissures, measured in-plane per axial slice.

    The thickness at a voxel is the diameter of the largest disc of blood centred there
    (2 x distance to the clot's edge minus one pixel); radiologists grade axial images.
    """
    if not (subarachnoid & cistern).any():
        return 0.0
    best = 0.0
    pixel = float(min(spacing[0], spacing[1]))
    for k in np.flatnonzero((subarachnoid & cistern).any(axis=(0, 1))):
        dist = ndi.distance_transform_edt(subarachnoid[:, :, k], sampling=spacing[:2])
        inside = dist[cistern[:, :, k] & subarachnoid[:, :, k]]
        best = max(best, float(2.0 * inside.max() - pixel))
    return round(max(best, 0.0), 2)


def modified_fisher(thickness_mm: float, sah_ml: float, ivh_ml: float) -> int:
    """Modified Fisher grade (Frontera 2006).

    0 no SAH or IVH, 1 thin SAH, 2 thin SAH + IVH, 3 thick SAH, 4 thick SAH + IVH.
    """
    ivh = ivh_ml >= IVH_MIN_ML
    if sah_ml <= 0 and not ivh:
        return 0
    thick = thickness_mm >= THICK_CLOT_MM
    return (3 if thick else 1) + (1 if ivh else 0)


def summarise(
    label: np.ndarray,
    kind_map: np.ndarray,
    cistern: np.ndarray,
    spacing: tuple[float, float, float],
) -> dict[str, float | int]:
    """All findings of one patient: total and per-kind volumes, thickest cisternal clot, grade.

    ``kind_map`` holds 1 + the index in LESION_KINDS of each labelled voxel's dominant lesion;
    ``cistern`` marks basal cisterns and fissures.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volumes = lesion_volumes(label, kind_map, voxel_ml)
    subarachnoid = np.isin(kind_map, [LESION_KINDS.index(k) + 1 for k in ("sah", "tsah")])
    thickness = max_clot_thickness_mm(subarachnoid, cistern, spacing)
    sah_ml = volumes["sah_volume_ml"] + volumes["tsah_volume_ml"]
    return {
        "blood_volume_ml": round(float((label > 0).sum()) * voxel_ml, 3),
        **volumes,
        "max_cisternal_thickness_mm": thickness,
        "modified_fisher": modified_fisher(thickness, sah_ml, volumes["ivh_volume_ml"]),
    }
