"""What every haemorrhage is made of, and how one is grown to a target volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sah.data.synthetic.geodesic import UNREACHABLE
from sah.data.synthetic.space import Slab

BLOOD_HU = (50.0, 90.0)  # acute clot on non-contrast CT
LABEL_THRESHOLD = 0.5  # an output voxel is labelled blood when at least half of it is blood


@dataclass
class Lesion:
    """One haemorrhage: blood fraction and attenuation at each active sub-voxel."""

    kind: str  # sah, ivh, edh, sdh, iph, tsah
    fraction: np.ndarray
    hu: np.ndarray


@dataclass
class Edema:
    """Vasogenic oedema around a parenchymal bleed: brain attenuation lowered by ``drop`` HU."""

    drop: np.ndarray


def ramp(x: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 over ``width`` around x = 0: a soft, partial-volume edge."""
    return np.clip(0.5 + x / width, 0.0, 1.0).astype(np.float32)


def blood_hu(
    rng: np.random.Generator, smooth: np.ndarray, centre: tuple[float, float]
) -> np.ndarray:
    """Clot attenuation: a per-lesion level in ``centre`` plus smooth heterogeneity, in 50-90."""
    level = rng.uniform(*centre)
    return np.clip(level + 5.0 * smooth, *BLOOD_HU).astype(np.float32)


def fit_level(
    arrival: np.ndarray,
    capacity: np.ndarray,
    slab: Slab,
    target_voxels: int,
    base: np.ndarray | None = None,
    width: float = 2.0,
) -> tuple[float, np.ndarray]:
    """Grow blood through increasing ``arrival`` until ``target_voxels`` output voxels are blood.

    Blood fills ``capacity`` (the fraction of a sub-voxel it may occupy) where arrival < level,
    with a soft edge of ``width``. ``base`` is blood already present per output voxel (flat).
    Bisection on the level: the labelled count only grows with it. Returns the level and the
    blood fraction per active sub-voxel; if the space is too small the whole of it is used.
    """
    base_out = np.zeros(slab.n_out, np.float32) if base is None else base
    where = np.flatnonzero((arrival < UNREACHABLE / 4) & (capacity > 0))
    t, c = arrival[where], capacity[where]

    def blood(level: float) -> np.ndarray:
        return c * ramp(level - t, width)

    def count(level: float) -> int:
        out = base_out + slab.mean(blood(level), where=where)
        return int((out >= LABEL_THRESHOLD).sum())

    already = int((base_out >= LABEL_THRESHOLD).sum())
    lo, hi = 0.0, float(t.max()) + width if t.size else 0.0
    if target_voxels <= already or t.size == 0:
        hi = 0.0
    elif count(hi) > target_voxels:
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if count(mid) < target_voxels:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-3:
                break
    fraction = np.zeros(arrival.shape, np.float32)
    if hi > 0:
        fraction[where] = blood(hi)
    return hi, fraction
