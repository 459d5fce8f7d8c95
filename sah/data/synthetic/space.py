"""One patient's sampling space: the atlas seen through that patient's geometry.

Only sub-voxels inside the head are "active"; everything else is air. Values live in flat
arrays over the active sub-voxels, and ``Slab`` averages them into output voxels (the slice
profile), which is also how lesion volumes are measured while they are being fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from sah.data.synthetic.anatomy import Anatomy
from sah.data.synthetic.deform import Geometry, smooth_noise


@dataclass
class Slab:
    """Maps active sub-voxels to output voxels and averages over each slice's sub-slices."""

    out_index: np.ndarray  # flat output-voxel index of each active sub-voxel
    n_out: int
    sub: int

    def mean(self, values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Average of ``values`` (0 outside the head) per output voxel, flat."""
        index = self.out_index if where is None else self.out_index[where]
        total = np.bincount(index, weights=values, minlength=self.n_out)
        return (total / self.sub).astype(np.float32)


@dataclass
class PatientSpace:
    """Atlas channels, atlas coordinates and random fields at the active sub-voxels."""

    anatomy: Anatomy
    geometry: Geometry
    rng: np.random.Generator
    active: np.ndarray  # flat indices into the sub-voxel grid (nx, ny, nz * sub)
    index: np.ndarray  # (3, n_active) fractional atlas voxel indices
    slab: Slab
    _cache: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(
        cls, anatomy: Anatomy, geometry: Geometry, rng: np.random.Generator, coords: np.ndarray
    ) -> PatientSpace:
        """``coords``: atlas mm of every sub-voxel, shape (3, nx, ny, nz * sub)."""
        index = anatomy.to_index(coords.reshape(3, -1)).astype(np.float32)
        shape = np.asarray(anatomy.shape)
        nearest = np.rint(index).astype(np.int32)
        inside = np.all((nearest >= 0) & (nearest < shape[:, None]), axis=0)
        active = np.flatnonzero(inside)
        nearest = nearest[:, active]
        keep = anatomy.channels["head"][nearest[0], nearest[1], nearest[2]] > 0
        active = active[keep]
        nx, ny, nzs = coords.shape[1:]
        i, j, k = np.unravel_index(active, (nx, ny, nzs))
        out_index = np.ravel_multi_index((i, j, k // geometry.sub), geometry.shape)
        slab = Slab(out_index=out_index, n_out=int(np.prod(geometry.shape)), sub=geometry.sub)
        return cls(anatomy, geometry, rng, active, index[:, active], slab)

    @property
    def size(self) -> int:
        return int(self.active.size)

    def channel(self, name: str) -> np.ndarray:
        """Trilinear sample of an anatomy channel (memoised)."""
        if name not in self._cache:
            self._cache[name] = ndi.map_coordinates(
                self.anatomy.channels[name], self.index, order=1, mode="nearest"
            ).astype(np.float32)
        return self._cache[name]

    def atlas_mm(self) -> np.ndarray:
        """Atlas (MNI) mm of the active sub-voxels, (3, n)."""
        a = self.anatomy
        return (self.index * a.voxel_mm + a.origin[:, None]).astype(np.float32)

    def noise(self, scale_mm: float) -> np.ndarray:
        """A smooth random field (sd about 1) at the active sub-voxels."""
        field_ = smooth_noise(self.rng, self.geometry.axes_mm(), scale_mm)
        return field_.ravel()[self.active]

    def to_volume(self, flat: np.ndarray) -> np.ndarray:
        """Flat output-voxel values -> (nx, ny, nz) array."""
        return flat.reshape(self.geometry.shape)
