"""Traumatic haemorrhage: the pre-training domain of the LoRA study, deliberately unlike aSAH.

Each patient has an impact point on the skull and a mix of lesions around it:

- epidural haematoma (EDH): a biconvex lens against the inner table, limited in extent;
- subdural haematoma (SDH): a crescent along the convexity of one hemisphere, stopping at the
  falx;
- contusions: small heterogeneous haemorrhagic foci in frontal/temporal cortex (coup or
  contrecoup) with surrounding oedema; an intraparenchymal haematoma (IPH) is a larger one;
- traumatic SAH: thin blood in convexity sulci near the impact, not in the basal cisterns;
- rarely a little intraventricular blood.

Their locations and shapes follow from the anatomy's inner-table depth map and point lists.
"""

from __future__ import annotations

import numpy as np

from sah.data.synthetic.lesions import Edema, Lesion, blood_hu, fit_level, ramp
from sah.data.synthetic.space import PatientSpace
from sah.data.synthetic.tissues import Tissues

LESION_PROBABILITY = {"sdh": 0.5, "edh": 0.3, "contusion": 0.55, "tsah": 0.5, "iph": 0.15}
IVH_PROBABILITY = 0.08


def _pick(rng: np.random.Generator, points: np.ndarray, keep: np.ndarray) -> np.ndarray:
    pool = points[keep] if keep.any() else points
    return pool[int(rng.integers(len(pool)))].astype(np.float32)


def _distance(atlas: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return np.linalg.norm(atlas - centre[:, None], axis=0)


def _epidural(space: PatientSpace, atlas, depth, impact) -> np.ndarray:
    """Lens: thickness t(r) = t_max sqrt(1 - (r/R)^2) against the inner table."""
    rng = space.rng
    surface = space.anatomy.points["surface"]
    near = _distance(surface.T, impact) < 30.0
    centre = _pick(rng, surface, near & (surface[:, 2] > -15.0))
    radius, t_max = rng.uniform(20.0, 38.0), rng.uniform(8.0, 24.0)
    r = _distance(atlas, centre)
    thickness = t_max * np.sqrt(np.clip(1.0 - (r / radius) ** 2, 0.0, 1.0))
    return ramp(thickness - depth, 1.5) * (thickness > 0)


def _subdural(space: PatientSpace, atlas, depth, side: float) -> np.ndarray:
    """Crescent over one hemisphere: nearly constant thickness, tapering at its ends."""
    rng = space.rng
    surface = space.anatomy.points["surface"]
    keep = (np.sign(surface[:, 0]) == side) & (np.abs(surface[:, 0]) > 25.0)
    keep &= (surface[:, 2] > 0.0) & (surface[:, 2] < 60.0) & (np.abs(surface[:, 1] + 10) < 55)
    centre = _pick(rng, surface, keep)
    radius, t_max = rng.uniform(50.0, 85.0), rng.uniform(3.0, 13.0)
    r = _distance(atlas, centre)
    thickness = t_max * np.clip(1.0 - (r / radius) ** 2, 0.0, 1.0) ** 0.35
    hemisphere = ramp(side * atlas[0] - 1.5, 1.0)  # the falx stops it at the midline
    return ramp(thickness - depth, 1.5) * hemisphere * (thickness > 0)


def _blob(space: PatientSpace, atlas, centre, radii) -> np.ndarray:
    """Normalised radius of a randomly oriented, bumpy ellipsoid (1 on its surface)."""
    rng = space.rng
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    local = (q.T @ (atlas - centre[:, None])) / np.asarray(radii, np.float32)[:, None]
    return np.linalg.norm(local, axis=0) + 0.18 * space.noise(6.0)


def _contusions(space, atlas, side: float, tissues: Tissues):
    """1-4 haemorrhagic foci in frontal/temporal cortex with salt-and-pepper blood and oedema."""
    rng = space.rng
    pts = space.anatomy.points["contusion"]
    region = rng.choice(["frontal", "temporal"])
    keep = (pts[:, 1] > 18.0) if region == "frontal" else (pts[:, 1] < 18.0)
    if rng.random() < 0.7:  # coup or contrecoup: one side
        keep &= np.sign(pts[:, 0]) == side
    fraction = np.zeros(space.size, np.float32)
    drop = np.zeros(space.size, np.float32)
    speckle = ramp(space.noise(4.0) + 1.0, 0.8)
    first = _pick(rng, pts, keep)
    for _ in range(int(rng.integers(1, 5))):
        near = keep & (_distance(pts.T, first) < 25.0)
        centre = _pick(rng, pts, near)
        size = rng.uniform(6.0, 15.0)
        norm = _blob(space, atlas, centre, size * rng.uniform(0.6, 1.0, 3))
        core = ramp(1.0 - norm, 0.25)
        fraction = np.maximum(fraction, core * speckle)
        drop = np.maximum(drop, rng.uniform(5.0, 12.0) * ramp(1.8 - norm, 0.5))
    fraction *= tissues.brain
    return fraction, drop


def _parenchymal(space, atlas, tissues: Tissues):
    """A larger, homogeneous intraparenchymal haematoma with an oedema rim."""
    rng = space.rng
    deep = space.anatomy.points["deep"]
    centre = _pick(rng, deep, np.ones(len(deep), bool))
    size = rng.uniform(10.0, 20.0)
    norm = _blob(space, atlas, centre, size * rng.uniform(0.7, 1.0, 3))
    fraction = ramp(1.0 - norm, 0.12) * tissues.brain
    drop = rng.uniform(6.0, 12.0) * ramp(1.5 - norm, 0.4)
    return fraction, drop


def _traumatic_sah(space, atlas, depth, impact, tissues: Tissues) -> np.ndarray:
    """Blood in the convexity sulci around the impact (not the basal cisterns)."""
    rng = space.rng
    radius = rng.uniform(25.0, 60.0)
    r = _distance(atlas, impact)
    patchy = ramp(space.noise(10.0) + rng.uniform(0.0, 0.8), 0.8)
    near_surface = ramp(18.0 - depth, 4.0)
    sulci = np.clip(rng.uniform(1.2, 1.8) * (tissues.csf - tissues.vent), 0.0, 1.0)
    return sulci * ramp(radius - r, 8.0) * patchy * near_surface


def traumatic_bleeds(
    space: PatientSpace, tissues: Tissues
) -> tuple[list[Lesion], list[Edema], dict[str, object]]:
    """A random mix of traumatic lesions (at least one) around a random impact point."""
    rng = space.rng
    kinds = [k for k, p in LESION_PROBABILITY.items() if rng.random() < p]
    if not kinds:
        names = list(LESION_PROBABILITY)
        probs = np.array(list(LESION_PROBABILITY.values()))
        kinds = [names[int(rng.choice(len(names), p=probs / probs.sum()))]]
    surface = space.anatomy.points["surface"]
    impact = _pick(rng, surface, (surface[:, 2] > 0.0) & (np.abs(surface[:, 0]) > 20.0))
    side = float(np.sign(impact[0]) or 1.0)
    atlas = space.atlas_mm()
    depth = space.channel("depth_in")

    lesions: list[Lesion] = []
    edema: list[Edema] = []

    def add(kind: str, fraction: np.ndarray, centre: tuple[float, float]) -> None:
        lesions.append(
            Lesion(kind, fraction.astype(np.float32), blood_hu(rng, space.noise(15.0), centre))
        )

    if "edh" in kinds:
        add("edh", _epidural(space, atlas, depth, impact), (62.0, 82.0))
    if "sdh" in kinds:
        sdh_side = side if rng.random() < 0.6 else -side
        add("sdh", _subdural(space, atlas, depth, sdh_side), (55.0, 78.0))
    if "contusion" in kinds:
        contusion_side = side if rng.random() < 0.5 else -side
        fraction, drop = _contusions(space, atlas, contusion_side, tissues)
        add("iph", fraction, (55.0, 72.0))
        edema.append(Edema(drop))
    if "iph" in kinds:
        fraction, drop = _parenchymal(space, atlas, tissues)
        add("iph", fraction, (60.0, 80.0))
        edema.append(Edema(drop))
    if "tsah" in kinds:
        add("tsah", _traumatic_sah(space, atlas, depth, impact, tissues), (55.0, 75.0))
    if rng.random() < IVH_PROBABILITY:
        arrival = space.channel("geo_ivh") * np.exp(0.25 * space.noise(25.0))
        target = round(rng.uniform(0.5, 6.0) / space.geometry.voxel_ml)
        _, ivh = fit_level(arrival, tissues.vent, space.slab, target)
        add("ivh", ivh, (55.0, 70.0))
        kinds.append("ivh")
    hemisphere = "left" if side < 0 else "right"
    return lesions, edema, {"bleed_site": f"impact_{hemisphere}", "lesion_types": ";".join(kinds)}
