"""Head anatomy for the phantoms, derived once from the MNI152 2009 templates shipped in nilearn.

The nilearn T1 template is brain-extracted, so only the brain comes from it: grey and white
matter from the tissue-probability maps, CSF where the intracranial space is neither, skull and
scalp as shells around the intracranial space. Everything a patient needs is precomputed here as
channels on one isotropic grid (MNI mm), so that a patient is little more than resampling:

- tissue fractions ``gm``, ``wm``, ``csf`` (``vent`` is its ventricular part), ``bone``,
  ``scalp`` (they sum to at most 1, the rest is air), ``bone_hu`` (cortical tables denser than
  the diploe), ``falx`` (dense dural sheet in the interhemispheric fissure);
- geometry: ``depth_in`` (mm inside the inner table), ``brain_depth`` (mm from CSF into brain,
  for atrophy), ``near_vent`` (1 where the nearest CSF is ventricular), ``cistern`` (1 in basal
  cisterns and deep fissures, where clot thickness is graded);
- ``geo_<site>``: geodesic arrival distance (mm, cost-weighted) of blood spreading through CSF
  from each bleeding site, which lets a patient's haemorrhage be any sublevel set of it;
- point lists for where traumatic lesions start.

The result is cached (keyed by resolution and ANATOMY_VERSION) because building it takes tens
of seconds.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from sah.data.cache import atomic_file, cache_dir, commit_file, content_key
from sah.data.progress import stamp
from sah.data.synthetic.geodesic import geodesic_distance, voxels_near
from sah.errors import DataError

ANATOMY_VERSION = 2
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
MARGIN_MM = 26.0  # room around the template brain for skull and scalp
SAS_MM = 2.0  # convexity subarachnoid space added outside the template's brain mask
SCALP_MM = 5.5

# Bleeding sites of ruptured aneurysms (MNI mm): where the clot starts and spreads from.
SAH_SITES: dict[str, tuple[float, float, float]] = {
    "suprasellar": (0.0, 4.0, -14.0),  # ICA / PCOM, the basal cisterns
    "interhemispheric": (0.0, 22.0, -4.0),  # ACOM, the anterior interhemispheric fissure
    "sylvian_left": (-40.0, 8.0, -8.0),  # left MCA bifurcation
    "sylvian_right": (40.0, 8.0, -8.0),  # right MCA bifurcation
    "prepontine": (0.0, -16.0, -30.0),  # basilar tip / posterior circulation
}
# Points inside the ventricular system: frontal horns, atria, third and fourth ventricles.
VENTRICLE_POINTS = [(-12, 12, 14), (12, 12, 14), (-28, -44, 12), (28, -44, 12), (0, -8, 2)]
FOURTH_VENTRICLE = (0.0, -44.0, -30.0)
# Where intraventricular blood collects in a supine patient: occipital horns, 3rd, 4th ventricle.
IVH_SITES = [(-24, -56, 8), (24, -56, 8), (0, -12, 2), FOURTH_VENTRICLE]
# Physiological calcifications (pineal gland, choroid plexus glomera): bright, not blood.
CALCIFICATIONS = {
    "pineal": (0.0, -30.0, 2.0),
    "choroid_left": (-26.0, -40.0, 16.0),
    "choroid_right": (26.0, -40.0, 16.0),
}
SPREAD_COST = 15.0  # how much slower blood advances through brain than through open CSF
# Blood reaches the thin convexity subarachnoid space (under the inner table) late: it fills
# the basal cisterns and fissures first.
CONVEXITY_COST = 4.0


@dataclass(frozen=True)
class Anatomy:
    """Precomputed channels on an isotropic grid: world mm = origin + voxel_mm * index."""

    origin: np.ndarray
    voxel_mm: float
    channels: dict[str, np.ndarray]
    points: dict[str, np.ndarray]  # named (n, 3) arrays of MNI mm

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.channels.values())).shape

    def to_index(self, world: np.ndarray) -> np.ndarray:
        """World mm (3, ...) -> fractional voxel indices (3, ...)."""
        return (world - self.origin.reshape((3,) + (1,) * (world.ndim - 1))) / self.voxel_mm


def template_dir() -> Path:
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


def _load_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    path = template_dir() / TEMPLATE_FILES[name]
    if not path.exists():
        raise DataError(path, "MNI152 2009 template not found", "install nilearn >= 0.10")
    image = cast(nib.Nifti1Image, nib.load(path))  # the templates are .nii.gz files
    return np.asarray(image.dataobj, dtype=np.float32) / 255.0, image.affine


def _resample(
    volume: np.ndarray, affine: np.ndarray, coords: list[np.ndarray], h: float
) -> np.ndarray:
    """Template (1 mm, axis-aligned) -> atlas grid given per-axis world coordinates."""
    if h > 1.0:
        volume = ndi.gaussian_filter(volume, sigma=0.4 * h)
    per_axis = [(c - affine[i, 3]) / affine[i, i] for i, c in enumerate(coords)]
    grid = np.meshgrid(*per_axis, indexing="ij", sparse=False)
    return ndi.map_coordinates(volume, grid, order=1, mode="constant", cval=0.0).astype(np.float32)


def _signed_distance(mask: np.ndarray, h: float) -> np.ndarray:
    """mm to the mask's surface, positive outside."""
    return ndi.distance_transform_edt(~mask, sampling=h) - ndi.distance_transform_edt(mask, h)


def _inside_fraction(signed: np.ndarray, h: float) -> np.ndarray:
    """Partial-volume fraction of a voxel inside the surface signed == 0."""
    return np.clip(0.5 - signed / h, 0.0, 1.0).astype(np.float32)


def _closing_mm(mask: np.ndarray, radius: float, h: float) -> np.ndarray:
    grown = ndi.distance_transform_edt(~mask, sampling=h) <= radius
    return ndi.distance_transform_edt(grown, sampling=h) > radius


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _points_to_index(points, origin: np.ndarray, h: float, shape) -> np.ndarray:
    idx = np.rint((np.asarray(points, dtype=np.float64) - origin) / h).astype(int)
    return np.clip(idx, 0, np.asarray(shape) - 1)


def _nearest_in(mask: np.ndarray, point_idx: np.ndarray) -> tuple[int, int, int]:
    """The voxel of ``mask`` nearest to ``point_idx`` (mask must be non-empty)."""
    cand = np.argwhere(mask)
    return tuple(cand[np.argmin(((cand - point_idx) ** 2).sum(1))])


@dataclass
class _Grid:
    """The atlas grid being built: origin, voxel size, shape and sparse world coordinates."""

    origin: np.ndarray
    h: float
    shape: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    def index(self, point) -> np.ndarray:
        return _points_to_index(point, self.origin, self.h, self.shape)

    def world(self, mask: np.ndarray) -> np.ndarray:
        return (np.argwhere(mask) * self.h + self.origin).astype(np.float32)


def _templates_on_grid(h: float) -> tuple[_Grid, np.ndarray, np.ndarray, np.ndarray]:
    """T1, GM and WM resampled to an h-mm grid around the brain with room for skull/scalp."""
    t1, affine = _load_template("t1")
    nz_idx = np.argwhere(t1 > 0)
    lo = nz_idx.min(0) * np.diag(affine)[:3] + affine[:3, 3] - MARGIN_MM
    hi = nz_idx.max(0) * np.diag(affine)[:3] + affine[:3, 3] + MARGIN_MM
    lo[2] = affine[2, 3]  # nothing below the template's lowest slice (the brainstem cut)
    shape = cast(
        "tuple[int, int, int]", tuple(int(np.ceil((hi[i] - lo[i]) / h)) + 1 for i in range(3))
    )
    coords = [lo[i] + h * np.arange(shape[i]) for i in range(3)]
    t1 = _resample(t1, affine, coords, h)
    gm = _resample(_load_template("gm")[0], affine, coords, h)
    wm = _resample(_load_template("wm")[0], affine, coords, h)
    x, y, z = np.meshgrid(*[c.astype(np.float32) for c in coords], indexing="ij", sparse=True)
    return _Grid(lo, h, shape, x, y, z), t1, gm, wm


def _intracranial(t1: np.ndarray, h: float) -> np.ndarray:
    """Signed distance (mm, positive outside) to the inner table: the template's brain mask,
    smoothed, plus a thin convexity subarachnoid layer the template leaves out."""
    brain_mask = _largest_component(t1 > 0.05)
    brain_mask = ndi.binary_fill_holes(_closing_mm(brain_mask, 4.0, h))
    return ndi.gaussian_filter(_signed_distance(brain_mask, h) - SAS_MM, 1.0 / h)


def _ventricles(grid: _Grid, csf: np.ndarray, ic: np.ndarray, depth_in: np.ndarray):
    """Deep CSF connected to known ventricular points (plus its partial-volume rim)."""
    csf_core = (csf > 0.5) & ic
    allowed = csf_core & (depth_in > 12.0)
    seeds = np.zeros_like(csf_core)
    for point in [*VENTRICLE_POINTS, FOURTH_VENTRICLE]:
        seeds[_nearest_in(allowed, grid.index(point))] = True
    region = ndi.binary_propagation(seeds, mask=allowed)
    return ndi.binary_dilation(region, iterations=1) & ic


def _skull_and_scalp(grid: _Grid, sd_ic: np.ndarray, f_ic: np.ndarray):
    """Bone fraction, bone HU and scalp fraction as shells outside the inner table.

    The vault is 3-9.5 mm thick (thicker frontally and occipitally, thin over the temporal
    squama); concavities of the skull base are filled with bone hollowed by air cells
    (sinuses, mastoids); cortical tables are denser than the diploe between them.
    """
    h, x, y, z = grid.h, grid.x, grid.y, grid.z
    yn = (y + 20.0) / 95.0
    temporal = np.exp(-(((np.abs(x) - 62.0) / 14.0) ** 2)) * np.exp(-(((z + 5.0) / 22.0) ** 2))
    thickness = np.clip(5.5 + 3.0 * yn**2 - 2.5 * temporal, 3.0, 9.5)
    skull_solid = _closing_mm(sd_ic < thickness, 18.0, h)
    sd_out = ndi.gaussian_filter(_signed_distance(skull_solid, h), 0.8 / h)
    f_skull_in = np.maximum(_inside_fraction(sd_out, h), f_ic)
    f_head = np.maximum(_inside_fraction(sd_out - SCALP_MM, h), f_skull_in)
    bone = f_skull_in - f_ic
    scalp = f_head - f_skull_in
    # Air cells only where the base was filled in, beyond the vault's usual thickness.
    core = np.minimum(sd_ic - thickness - 1.0, -sd_out - 2.5)
    honeycomb = ndi.gaussian_filter(np.random.default_rng(0).standard_normal(core.shape), 1.5 / h)
    honeycomb /= honeycomb.std()
    air_cells = np.clip(0.5 + core / h, 0, 1) * np.clip(0.5 + honeycomb + 0.6, 0, 1)
    air_cells *= (z < 25.0) & ((y > -5.0) | ((np.abs(x) > 25.0) & (z < -15.0)))
    bone = bone * (1.0 - air_cells)
    tables = np.maximum(np.exp(-np.maximum(sd_ic, 0) / 1.8), np.exp(-np.maximum(-sd_out, 0) / 1.8))
    bone_hu = (780.0 + 620.0 * tables).astype(np.float32)
    return bone.astype(np.float32), bone_hu, scalp.astype(np.float32), f_head


def _spread_maps(grid: _Grid, csf_sa, vent, vent_region, ic, depth_in, brain_depth):
    """Geodesic arrival distance of subarachnoid blood from each bleeding site, and of
    intraventricular blood from the dependent ventricles."""
    h = grid.h
    maps = {}
    domain = ic & ~vent_region & (brain_depth <= 8.0)
    cost = 1.0 + SPREAD_COST * (1.0 - np.clip(csf_sa / 0.8, 0, 1)) ** 2
    cost *= 1.0 + CONVEXITY_COST * np.clip((6.0 - depth_in) / 4.0, 0.0, 1.0)
    core = (csf_sa > 0.5) & domain
    for name, point in SAH_SITES.items():
        sources = voxels_near(core, grid.index(point), 6.0 / h)
        maps[f"geo_{name}"] = geodesic_distance(cost, domain, sources, h)
    domain = ndi.binary_dilation(vent_region, iterations=2) & ic
    cost = 1.0 + SPREAD_COST * (1.0 - np.clip(vent / 0.8, 0, 1)) ** 2
    sources = np.concatenate([voxels_near(vent_region, grid.index(p), 4.0 / h) for p in IVH_SITES])
    maps["geo_ivh"] = geodesic_distance(cost, domain, sources, h)
    return maps


def _lesion_points(grid: _Grid, gm, wm, depth_in, brain_depth) -> dict[str, np.ndarray]:
    """Where traumatic lesions start: the inner table, contusion-prone cortex (orbitofrontal,
    temporal poles) and deep brain for parenchymal haematomas."""
    h, x, y, z = grid.h, grid.x, grid.y, grid.z
    surface = (depth_in > 0) & (depth_in <= 1.5 * h) & (z > -20.0)
    brain = (gm + wm) > 0.8
    basal = ((y > 18.0) & (z < 12.0)) | ((np.abs(x) > 28.0) & (y > -25.0) & (z < -2.0))
    contusion = brain & (gm > 0.45) & (depth_in < 14.0) & basal
    deep = brain & (depth_in > 28.0) & (brain_depth > 6.0) & (z > -15.0)
    return {
        "surface": grid.world(surface)[:: max(1, int(4 / h))],
        "contusion": grid.world(contusion)[:: max(1, int(4 / h))],
        "deep": grid.world(deep)[:: max(1, int(6 / h))],
    }


def build_anatomy(voxel_mm: float) -> Anatomy:
    """Derive all channels from the templates (about 10 s at 1.5 mm, a minute at 1 mm)."""
    grid, t1, gm, wm = _templates_on_grid(float(voxel_mm))
    h = grid.h
    sd_ic = _intracranial(t1, h)
    del t1
    ic = sd_ic < 0
    f_ic = _inside_fraction(sd_ic, h)
    depth_in = np.maximum(-sd_ic, 0.0).astype(np.float32)

    scale = np.where(gm + wm > 1.0, 1.0 / np.maximum(gm + wm, 1e-6), 1.0)
    gm = np.minimum(gm * scale, f_ic)
    wm = np.minimum(wm * scale, f_ic - gm)
    csf = np.clip(f_ic - gm - wm, 0.0, 1.0)
    vent_region = _ventricles(grid, csf, ic, depth_in)
    vent = (csf * vent_region).astype(np.float32)
    csf_sa = csf - vent
    bone, bone_hu, scalp, f_head = _skull_and_scalp(grid, sd_ic, f_ic)

    # Falx: a dense midline sheet through the interhemispheric CSF above the corpus callosum.
    x, y, z = grid.x, grid.y, grid.z
    falx = np.clip(1.0 - np.abs(x) / 1.2, 0.0, 1.0) * (z > 8.0) * (y > -95.0) * (y < 55.0)
    falx = (falx * np.clip(csf_sa * 2.0, 0.0, 1.0)).astype(np.float32)

    # Atrophy support: how deep each brain voxel lies below CSF and which CSF is nearest.
    dist_csf, nearest = ndi.distance_transform_edt(
        ~((csf > 0.3) & ic), sampling=h, return_indices=True
    )
    brain_depth = dist_csf.astype(np.float32)
    near_vent = vent_region[tuple(nearest)].astype(np.float32)
    del nearest, dist_csf

    # Cisterns and fissures: subarachnoid CSF away from the convexity (clot thickness grading).
    cistern = ((csf_sa > 0.4) & (depth_in > 5.0) & ~vent_region).astype(np.float32)
    channels: dict[str, np.ndarray] = {
        "gm": gm, "wm": wm, "csf": csf, "vent": vent,
        "bone": bone, "scalp": scalp, "bone_hu": bone_hu, "falx": falx,
        "depth_in": depth_in, "brain_depth": brain_depth, "near_vent": near_vent,
        "cistern": cistern,
        "head": ndi.binary_dilation(f_head > 0).astype(np.float32),  # where to sample at all
    }  # fmt: skip
    channels |= _spread_maps(grid, csf_sa, vent, vent_region, ic, depth_in, brain_depth)
    points = _lesion_points(grid, gm, wm, depth_in, brain_depth)
    return Anatomy(
        origin=grid.origin.astype(np.float64), voxel_mm=h, channels=channels, points=points
    )


def anatomy_path(voxel_mm: float, root: Path | None = None) -> Path:
    key = content_key({"voxel_mm": float(voxel_mm), "version": ANATOMY_VERSION})
    return cache_dir(root) / "anatomy" / f"mni152-{voxel_mm:g}mm-{key}.npz"


def _save(anatomy: Anatomy, path: Path) -> None:
    tmp = atomic_file(path)
    arrays = {f"ch_{k}": _pack(v) for k, v in anatomy.channels.items()}
    arrays |= {f"pt_{k}": v for k, v in anatomy.points.items()}
    with open(tmp, "wb") as fh:
        # mypy matches the unpacked arrays against allow_pickle: bool as well
        np.savez_compressed(
            fh,
            origin=anatomy.origin,
            voxel_mm=np.float64(anatomy.voxel_mm),
            **arrays,  # type: ignore[arg-type]
        )
    commit_file(tmp, path)


def _pack(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16)


def _load(path: Path) -> Anatomy:
    with np.load(path) as data:
        channels = {
            k[3:]: np.ascontiguousarray(data[k], dtype=np.float32)
            for k in data.files
            if k.startswith("ch_")
        }
        points = {k[3:]: data[k] for k in data.files if k.startswith("pt_")}
        return Anatomy(
            origin=data["origin"],
            voxel_mm=float(data["voxel_mm"]),
            channels=channels,
            points=points,
        )


@lru_cache(maxsize=2)
def _load_cached(path_str: str) -> Anatomy:
    return _load(Path(path_str))


def load_anatomy(voxel_mm: float, root: Path | None = None) -> Anatomy:
    """The anatomy at ``voxel_mm``, built and cached on first use, memoised per process."""
    path = anatomy_path(voxel_mm, root)
    if not path.exists():
        # Once per cache folder, tens of seconds: say so rather than stay silent.
        print(
            f"{stamp()} building the MNI152 head anatomy at {voxel_mm:g} mm (once per cache)",
            file=sys.stderr,
            flush=True,
        )
        anatomy = build_anatomy(voxel_mm)
        _save(anatomy, path)
    try:
        return _load_cached(os.fspath(path))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(path, f"cached anatomy is unreadable ({exc})", "delete the file") from exc
