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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse import csgraph

from sah.data.cache import atomic_file, cache_dir, commit_file, content_key
from sah.errors import DataError

ANATOMY_VERSION = 1
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
UNREACHABLE = 6.0e4  # geodesic distance (mm) of voxels blood cannot reach


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
    image = nib.load(path)
    return np.asarray(image.dataobj, dtype=np.float32) / 255.0, image.affine


def _resample(volume: np.ndarray, affine: np.ndarray, coords: list[np.ndarray], h: float):
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


def _geodesic(cost: np.ndarray, domain: np.ndarray, sources: np.ndarray, h: float) -> np.ndarray:
    """Cost-weighted geodesic distance (mm) from ``sources`` through ``domain`` (26-neighbours).

    Dijkstra on the voxel graph: blood spreading from a bleeding site reaches a voxel after the
    cheapest path, cheap through open CSF and expensive through brain.
    """
    index = np.full(domain.shape, -1, dtype=np.int64)
    nodes = np.flatnonzero(domain)
    index.ravel()[nodes] = np.arange(nodes.size)
    rows, cols, weights = [], [], []
    offsets = [
        (dx, dy, dz)
        for dx in (0, 1)
        for dy in (-1, 0, 1)
        for dz in (-1, 0, 1)
        if (dx, dy, dz) > (0, 0, 0)
    ]
    nx, ny, nz = domain.shape
    for dx, dy, dz in offsets:
        a = (
            slice(0, nx - dx),
            slice(max(0, -dy), ny - max(0, dy)),
            slice(max(0, -dz), nz - max(0, dz)),
        )
        b = (slice(dx, nx), slice(max(0, dy), ny + min(0, dy)), slice(max(0, dz), nz + min(0, dz)))
        ia, ib = index[a].ravel(), index[b].ravel()
        keep = (ia >= 0) & (ib >= 0)
        length = h * float(np.sqrt(dx * dx + dy * dy + dz * dz))
        w = 0.5 * (cost[a].ravel()[keep] + cost[b].ravel()[keep]) * length
        rows.append(ia[keep])
        cols.append(ib[keep])
        weights.append(w)
    graph = sparse.coo_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(nodes.size, nodes.size),
    ).tocsr()
    src = index.ravel()[np.ravel_multi_index(tuple(sources.T), domain.shape)]
    src = src[src >= 0]
    dist = csgraph.dijkstra(graph, directed=False, indices=src, min_only=True)
    out = np.full(domain.shape, UNREACHABLE, dtype=np.float32)
    out.ravel()[nodes] = np.minimum(dist, UNREACHABLE)
    return out


def _sources_near(mask: np.ndarray, centre_idx: np.ndarray, radius_vox: float) -> np.ndarray:
    """Voxels of ``mask`` within a ball around a point, or the nearest one if none."""
    cand = np.argwhere(mask)
    d2 = ((cand - centre_idx) ** 2).sum(1)
    near = cand[d2 <= radius_vox**2]
    return near if len(near) else cand[[int(np.argmin(d2))]]


def build_anatomy(voxel_mm: float) -> Anatomy:
    """Derive all channels from the templates (about 10-60 s depending on resolution)."""
    h = float(voxel_mm)
    t1, affine = _load_template("t1")
    gm_t, _ = _load_template("gm")
    wm_t, _ = _load_template("wm")

    # Atlas grid: the template's brain box plus room for skull and scalp.
    nz_idx = np.argwhere(t1 > 0)
    lo = nz_idx.min(0) * np.diag(affine)[:3] + affine[:3, 3] - MARGIN_MM
    hi = nz_idx.max(0) * np.diag(affine)[:3] + affine[:3, 3] + MARGIN_MM
    lo[2] = affine[2, 3]  # nothing below the template's lowest slice (the brainstem cut)
    shape = tuple(int(np.ceil((hi[i] - lo[i]) / h)) + 1 for i in range(3))
    coords = [lo[i] + h * np.arange(shape[i]) for i in range(3)]
    t1 = _resample(t1, affine, coords, h)
    gm = _resample(gm_t, affine, coords, h)
    wm = _resample(wm_t, affine, coords, h)
    del gm_t, wm_t
    xw, yw, zw = np.meshgrid(*[c.astype(np.float32) for c in coords], indexing="ij", sparse=True)

    # Intracranial space: the template's brain mask, smoothed, plus a thin convexity CSF layer.
    brain_mask = _largest_component(t1 > 0.05)
    brain_mask = ndi.binary_fill_holes(_closing_mm(brain_mask, 4.0, h))
    sd_ic = _signed_distance(brain_mask, h) - SAS_MM
    sd_ic = ndi.gaussian_filter(sd_ic, 1.0 / h * 1.0)
    ic = sd_ic < 0
    f_ic = _inside_fraction(sd_ic, h)
    depth_in = np.maximum(-sd_ic, 0.0).astype(np.float32)

    total = gm + wm
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0)
    gm = np.minimum(gm * scale, f_ic)
    wm = np.minimum(wm * scale, f_ic - gm)
    csf = np.clip(f_ic - gm - wm, 0.0, 1.0)

    # Ventricles: deep CSF connected to known ventricular points.
    csf_core = (csf > 0.5) & ic
    deep = depth_in > 12.0
    seeds = np.zeros_like(csf_core)
    for point in [*VENTRICLE_POINTS, FOURTH_VENTRICLE]:
        idx = _points_to_index(point, lo, h, shape)
        seeds[_nearest_in(csf_core & deep, idx)] = True
    vent_region = ndi.binary_propagation(seeds, mask=csf_core & deep)
    vent_region = ndi.binary_dilation(vent_region, iterations=1) & ic
    vent = csf * vent_region
    csf_sa = csf - vent

    # Skull: a shell of varying thickness, concavities of the skull base filled with bone.
    yn = (yw - (-20.0)) / 95.0
    temporal = np.exp(-(((np.abs(xw) - 62.0) / 14.0) ** 2)) * np.exp(-(((zw + 5.0) / 22.0) ** 2))
    thickness = np.clip(5.5 + 3.0 * yn**2 - 2.5 * temporal, 3.0, 9.5)
    skull_solid = _closing_mm(sd_ic < thickness, 18.0, h)
    sd_out = ndi.gaussian_filter(_signed_distance(skull_solid, h), 0.8 / h)
    f_skull_in = np.maximum(_inside_fraction(sd_out, h), f_ic)
    f_head = np.maximum(_inside_fraction(sd_out - SCALP_MM, h), f_skull_in)
    bone = f_skull_in - f_ic
    scalp = f_head - f_skull_in
    # Air cells (paranasal sinuses, mastoids) hollow out the thick bone of the skull base.
    # Only where the base was filled in, beyond the vault's usual thickness.
    core = np.minimum(sd_ic - thickness - 1.0, -sd_out - 2.5)
    honeycomb = ndi.gaussian_filter(np.random.default_rng(0).standard_normal(core.shape), 1.5 / h)
    honeycomb /= honeycomb.std()
    air_cells = np.clip(0.5 + core / h, 0, 1) * np.clip(0.5 + honeycomb + 0.6, 0, 1)
    air_cells *= (zw < 25.0) & ((yw > -5.0) | ((np.abs(xw) > 25.0) & (zw < -15.0)))
    bone = bone * (1.0 - air_cells)
    cortical = np.maximum(
        np.exp(-np.maximum(sd_ic, 0) / 1.8), np.exp(-np.maximum(-sd_out, 0) / 1.8)
    )
    bone_hu = (780.0 + 620.0 * cortical).astype(np.float32)

    # Falx: a dense midline sheet through the interhemispheric CSF above the corpus callosum.
    falx = np.clip(1.0 - np.abs(xw) / 1.2, 0.0, 1.0) * (zw > 8.0) * (yw > -95.0) * (yw < 55.0)
    falx = (falx * np.clip(csf_sa * 2.0, 0.0, 1.0)).astype(np.float32)

    # Atrophy support: how deep each brain voxel lies below CSF and which CSF is nearest.
    dist_csf, nearest = ndi.distance_transform_edt(
        ~((csf > 0.3) & ic), sampling=h, return_indices=True
    )
    brain_depth = dist_csf.astype(np.float32)
    near_vent = vent_region[tuple(nearest)].astype(np.float32)
    del nearest

    # Cisterns and deep fissures: wide subarachnoid CSF away from the convexity.
    cistern = ((csf_sa > 0.4) & (depth_in > 5.0) & ~vent_region).astype(np.float32)

    channels: dict[str, np.ndarray] = {
        "gm": gm, "wm": wm, "csf": csf, "vent": vent.astype(np.float32),
        "bone": bone, "scalp": scalp, "bone_hu": bone_hu, "falx": falx,
        "depth_in": depth_in, "brain_depth": brain_depth, "near_vent": near_vent,
        "cistern": cistern, "head": (f_head > 0).astype(np.float32),
    }  # fmt: skip

    # Geodesic spread of subarachnoid blood from each bleeding site.
    sah_domain = ic & ~vent_region & (brain_depth <= 8.0)
    sah_cost = 1.0 + SPREAD_COST * (1.0 - np.clip(csf_sa / 0.8, 0, 1)) ** 2
    sah_cost *= 1.0 + CONVEXITY_COST * np.clip((6.0 - depth_in) / 4.0, 0.0, 1.0)
    sah_core = (csf_sa > 0.5) & sah_domain
    for name, point in SAH_SITES.items():
        src = _sources_near(sah_core, _points_to_index(point, lo, h, shape), 6.0 / h)
        channels[f"geo_{name}"] = _geodesic(sah_cost, sah_domain, src, h)
    ivh_domain = ndi.binary_dilation(vent_region, iterations=2) & ic
    ivh_cost = 1.0 + SPREAD_COST * (1.0 - np.clip(vent / 0.8, 0, 1)) ** 2
    src = np.concatenate(
        [_sources_near(vent_region, _points_to_index(p, lo, h, shape), 4.0 / h) for p in IVH_SITES]
    )
    channels["geo_ivh"] = _geodesic(ivh_cost, ivh_domain, src, h)

    # Starting points of traumatic lesions.
    world = lambda mask: (np.argwhere(mask) * h + lo).astype(np.float32)  # noqa: E731
    surface = (depth_in > 0) & (depth_in <= 1.5 * h) & (zw > -20.0)
    brain = (gm + wm) > 0.8
    contusion = (
        brain
        & (gm > 0.45)
        & (depth_in < 14.0)
        & (((yw > 18.0) & (zw < 12.0)) | ((np.abs(xw) > 28.0) & (yw > -25.0) & (zw < -2.0)))
    )
    deep_brain = brain & (depth_in > 28.0) & (brain_depth > 6.0) & (zw > -15.0)
    points = {
        "surface": world(surface)[:: max(1, int(4 / h))],
        "contusion": world(contusion)[:: max(1, int(4 / h))],
        "deep": world(deep_brain)[:: max(1, int(6 / h))],
    }
    return Anatomy(origin=lo.astype(np.float64), voxel_mm=h, channels=channels, points=points)


def anatomy_path(voxel_mm: float, root: Path | None = None) -> Path:
    key = content_key({"voxel_mm": float(voxel_mm), "version": ANATOMY_VERSION})
    return cache_dir(root) / "anatomy" / f"mni152-{voxel_mm:g}mm-{key}.npz"


def _save(anatomy: Anatomy, path: Path) -> None:
    tmp = atomic_file(path)
    arrays = {f"ch_{k}": _pack(v) for k, v in anatomy.channels.items()}
    arrays |= {f"pt_{k}": v for k, v in anatomy.points.items()}
    with open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, origin=anatomy.origin, voxel_mm=np.float64(anatomy.voxel_mm), **arrays
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
        anatomy = build_anatomy(voxel_mm)
        _save(anatomy, path)
    try:
        return _load_cached(os.fspath(path))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(path, f"cached anatomy is unreadable ({exc})", "delete the file") from exc
