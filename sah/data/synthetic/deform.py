"""Where each output voxel looks in the atlas: scanner grid, head pose, size and elastic warp.

The output grid is a CT series in RAS (x right, y anterior, z superior, z = slice index). Each
slice is rendered as the average of ``sub`` thinner sub-slices, which models the slice profile:
a 5 mm slice blurs a thin sulcus of blood into a faint partial-volume band, as a scanner does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sah.data.synthetic.config import SynthConfig

HEAD_CENTRE_MNI = np.array([0.0, -17.0, 14.0])  # halfway from foramen magnum to vertex
SUB_SLICE_MM = 1.7  # sub-slices are at most this thick


@dataclass(frozen=True)
class Geometry:
    """The scanner grid and the pose of the head in it (atlas mm -> scanner mm)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray  # output voxel index -> scanner RAS mm
    sub: int  # sub-slices per slice
    rotation: np.ndarray  # 3x3
    scale: float
    shift: np.ndarray  # mm

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scanner coordinates of the sub-sampled grid: x (nx), y (ny), z (nz * sub)."""
        nx, ny, nz = self.shape
        sx, sy, sz = self.spacing
        o = self.affine[:3, 3]
        x = o[0] + sx * np.arange(nx)
        y = o[1] + sy * np.arange(ny)
        offsets = ((np.arange(self.sub) + 0.5) / self.sub - 0.5) * sz
        z = (o[2] + sz * np.arange(nz))[:, None] + offsets[None, :]
        return x, y, z.ravel()


def rotation_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation about y (roll), x (pitch, the gantry-tilt direction) and z (yaw), in degrees."""
    r, p, w = np.deg2rad([roll, pitch, yaw])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(r), 0, np.sin(r)], [0, 1, 0], [-np.sin(r), 0, np.cos(r)]])
    rz = np.array([[np.cos(w), -np.sin(w), 0], [np.sin(w), np.cos(w), 0], [0, 0, 1]])
    return rz @ rx @ ry


def sample_geometry(config: SynthConfig, rng: np.random.Generator) -> Geometry:
    """Draw slice thickness (a 0.5 mm step within ``config.slice_mm``) and head pose."""
    lo, hi = config.slice_mm
    choices = np.arange(np.ceil(lo * 2.0) / 2.0, hi + 1e-9, 0.5)  # scanners use 0.5 mm steps
    slice_mm = float(rng.choice(choices)) if choices.size else float(lo)
    nz = config.slices_for(slice_mm)
    n = int(config.matrix)
    s = float(config.spacing_mm)
    spacing = (s, s, slice_mm)
    shape = (n, n, nz)
    affine = np.diag([s, s, slice_mm, 1.0])
    affine[:3, 3] = HEAD_CENTRE_MNI - (np.array(shape) - 1) / 2.0 * np.array(spacing)
    angles = rng.uniform(-1.0, 1.0, 3) * np.asarray(config.max_rotation_deg)
    scale = float(rng.uniform(*config.scale))
    shift = rng.uniform(-1.0, 1.0, 3) * config.max_shift_mm * np.array([1.0, 1.0, 0.6])
    sub = max(1, int(np.ceil(slice_mm / SUB_SLICE_MM - 1e-9)))
    return Geometry(shape, spacing, affine, sub, rotation_matrix(*angles), scale, shift)


def smooth_noise(
    rng: np.random.Generator, axes: tuple[np.ndarray, ...], scale_mm: float
) -> np.ndarray:
    """A smooth random field (mean about 0, sd about 1) on the grid spanned by ``axes`` (mm).

    Random values on a lattice of spacing ``scale_mm`` are spread with separable Gaussian
    kernels: smooth everywhere (no lattice creases) and cheap (three small matrix products).
    """
    out = None
    weights = []
    for coord in axes:
        lo, hi = float(coord.min()) - scale_mm, float(coord.max()) + scale_mm
        knots = np.linspace(lo, hi, max(2, int(np.ceil((hi - lo) / scale_mm)) + 1))
        w = np.exp(-0.5 * ((coord[:, None] - knots[None, :]) / (0.6 * scale_mm)) ** 2)
        weights.append((w / w.sum(1, keepdims=True)).astype(np.float32))
    lattice = rng.standard_normal([w.shape[1] for w in weights]).astype(np.float32)
    out = np.einsum("ia,abc->ibc", weights[0], lattice)
    out = np.einsum("jb,ibc->ijc", weights[1], out)
    out = np.einsum("kc,ijc->ijk", weights[2], out)
    sd = float(out.std())
    return out / sd if sd > 0 else out


def atlas_coordinates(geom: Geometry, rng: np.random.Generator, elastic_mm: float) -> np.ndarray:
    """Atlas (MNI) mm for every sub-voxel, shape (3, nx, ny, nz * sub), float32.

    Inverse of the patient's pose (scanner = centre + R * scale * (atlas - centre) + shift)
    plus a smooth elastic displacement, so that heads differ in shape as well as position.
    """
    x, y, z = geom.axes_mm()
    inverse = geom.rotation.T / geom.scale
    c = HEAD_CENTRE_MNI + geom.shift
    dx, dy, dz = (
        (x - c[0]).astype(np.float32),
        (y - c[1]).astype(np.float32),
        (z - c[2]).astype(np.float32),
    )
    out = np.empty((3, x.size, y.size, z.size), dtype=np.float32)
    for i in range(3):
        out[i] = HEAD_CENTRE_MNI[i]
        out[i] += inverse[i, 0] * dx[:, None, None]
        out[i] += inverse[i, 1] * dy[None, :, None]
        out[i] += inverse[i, 2] * dz[None, None, :]
    if elastic_mm > 0:
        for i in range(3):
            out[i] += elastic_mm * smooth_noise(rng, (x, y, z), 40.0)
    return out
