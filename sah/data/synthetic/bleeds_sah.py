"""Aneurysmal subarachnoid haemorrhage: blood spreading from a ruptured aneurysm through CSF.

The clot starts at the aneurysm's cistern or fissure and advances along the anatomy's geodesic
arrival maps (cheap through open CSF, expensive through brain), perturbed by a smooth random
field so that no two clots are alike. Its extent is fitted to a target volume drawn from a
schedule that populates every volume bin of the LoRA study. Some patients also bleed into the
ventricles, where blood collects in the dependent occipital horns and the 3rd/4th ventricles.
"""

from __future__ import annotations

import numpy as np

from sah.data.synthetic.lesions import Lesion, blood_hu, fit_level
from sah.data.synthetic.space import PatientSpace
from sah.data.synthetic.tissues import Tissues
from sah.metrics.aggregate import volume_bin, volume_bin_labels

# Target volumes are drawn inside each bin, away from its edges, so that the measured volume
# (which differs from the target by a few voxels) stays in the bin.
TARGET_RANGES_ML = ((1.0, 22.0), (28.0, 47.0), (55.0, 94.0), (108.0, 200.0))

# Aneurysm location: probability and the bleeding sites its blood starts from (relative delay:
# the first site fills first, the others after a lag).
ANEURYSMS: dict[str, tuple[float, dict[str, float]]] = {
    "acom": (0.34, {"interhemispheric": 1.0, "suprasellar": 1.4}),
    "pcom_left": (0.11, {"suprasellar": 1.0, "sylvian_left": 1.6}),
    "pcom_right": (0.11, {"suprasellar": 1.0, "sylvian_right": 1.6}),
    "mca_left": (0.14, {"sylvian_left": 1.0, "suprasellar": 1.8}),
    "mca_right": (0.14, {"sylvian_right": 1.0, "suprasellar": 1.8}),
    "basilar": (0.16, {"prepontine": 1.0, "suprasellar": 1.5}),
}


def target_volume_ml(index: int, rng: np.random.Generator) -> float:
    """The schedule: patient ``index`` falls in bin ``index % 4``, so any 4 consecutive
    patients cover all bins; within a bin the volume is random (log-uniform in the first)."""
    lo, hi = TARGET_RANGES_ML[index % len(TARGET_RANGES_ML)]
    if index % len(TARGET_RANGES_ML) == 0:
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(rng.uniform(lo, hi))


def volume_bin_index(volume_ml: float) -> int:
    """Index (0-3) of the LoRA volume bin holding ``volume_ml``, the schedule's ``index % 4``;
    the last bin is open-ended, as in the folds' strata."""
    return volume_bin_labels().index(volume_bin(volume_ml, open_top=False))


def aneurysmal_sah(
    space: PatientSpace, tissues: Tissues, target_ml: float
) -> tuple[list[Lesion], dict[str, object]]:
    """Subarachnoid (and sometimes intraventricular) blood totalling about ``target_ml``."""
    rng = space.rng
    names = list(ANEURYSMS)
    probs = np.array([ANEURYSMS[n][0] for n in names])
    aneurysm = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    sites = ANEURYSMS[aneurysm][1]

    arrival = None
    for site, delay in sites.items():
        lag = delay * rng.uniform(0.85, 1.2) if delay > 1.0 else 1.0
        geo = space.channel(f"geo_{site}") * lag
        arrival = geo if arrival is None else np.minimum(arrival, geo)
    arrival = arrival * np.exp(0.3 * space.noise(30.0))

    voxel_ml = space.geometry.voxel_ml
    total_voxels = round(target_ml / voxel_ml)
    ivh_share = 0.0
    if rng.random() < 0.2 + 0.5 * min(target_ml / 150.0, 1.0):
        ivh_share = float(rng.uniform(0.05, 0.3))
    lesions: list[Lesion] = []
    base = None
    if ivh_share > 0:
        ivh_arrival = space.channel("geo_ivh") * np.exp(0.25 * space.noise(25.0))
        _, ivh = fit_level(ivh_arrival, tissues.vent, space.slab, round(total_voxels * ivh_share))
        lesions.append(Lesion("ivh", ivh, blood_hu(rng, space.noise(20.0), (55.0, 75.0))))
        base = space.slab.mean(ivh)

    # The clot displaces some brain as it fills narrow sulci, so it may take more than the CSF.
    swell = rng.uniform(1.2, 1.8)
    subarachnoid = tissues.csf - tissues.vent
    capacity = np.minimum(swell * subarachnoid + 0.15 * tissues.brain, tissues.intracranial)
    _, sah = fit_level(arrival, capacity, space.slab, total_voxels, base=base)
    lesions.insert(0, Lesion("sah", sah, blood_hu(rng, space.noise(20.0), (58.0, 80.0))))
    details: dict[str, object] = {
        "bleed_site": aneurysm,
        "lesion_types": "sah;ivh" if ivh_share > 0 else "sah",
        "target_volume_ml": round(target_ml, 2),
    }
    return lesions, details
