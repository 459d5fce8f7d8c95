"""One synthetic patient, deterministic from (seed, kind, patient index).

Pipeline: draw the scanner geometry and head pose; look up the atlas at every sub-voxel inside
the head; thin the brain (atrophy); add the haemorrhage(s); mix everything by partial volume;
average sub-slices into slices; label voxels that are at least half blood; add CT noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
from scipy import ndimage as ndi

from sah.data.synthetic import bleeds_sah, bleeds_tbi, findings
from sah.data.synthetic.anatomy import CALCIFICATIONS, Anatomy, load_anatomy
from sah.data.synthetic.config import KINDS, SynthConfig
from sah.data.synthetic.deform import Geometry, atlas_coordinates, sample_geometry
from sah.data.synthetic.lesions import LABEL_THRESHOLD, Edema, Lesion, ramp
from sah.data.synthetic.space import PatientSpace
from sah.data.synthetic.tissues import AIR_HU, TissueHU, Tissues, atrophied_tissues

HU_LIMITS = (-1024, 3071)  # int16 CT storage range
NOISE_CORRELATION_PX = 0.6  # reconstruction kernels correlate noise over about a pixel


@dataclass
class Phantom:
    """A rendered patient. ``image_clean`` is HU before noise; ``image`` what is written."""

    image: np.ndarray  # int16 HU, (x, y, z) RAS
    image_clean: np.ndarray  # float32 HU, same grid, no noise
    label: np.ndarray  # uint8, 1 = blood
    affine: np.ndarray
    geometry: Geometry
    tissue_hu: TissueHU
    fractions: dict[str, np.ndarray]  # slab-averaged tissue and lesion fractions
    kind_map: np.ndarray  # uint8: 0 none, else 1 + index in findings.LESION_KINDS
    blood_hu_range: tuple[float, float]  # min/max clot attenuation used (before mixing)
    findings: dict[str, object] = field(default_factory=dict)


def patient_rng(config: SynthConfig, index: int, stream: int = 0) -> np.random.Generator:
    """Independent, reproducible random stream for (seed, kind, index, stream)."""
    entropy = [int(config.seed), KINDS.index(config.kind), int(index), int(stream)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def site_of(config: SynthConfig, index: int) -> int:
    return int(index) % config.n_sites


def site_name(config: SynthConfig, index: int) -> str:
    return f"{config.kind}-site-{chr(ord('A') + site_of(config, index))}"


def target_volume_ml(config: SynthConfig, index: int) -> float:
    """Scheduled total blood volume of an aneurysmal-SAH patient (ml)."""
    return bleeds_sah.target_volume_ml(index, patient_rng(config, index, stream=1))


def volume_schedule(config: SynthConfig) -> list[float]:
    """Target volumes of all patients of a SAH cohort, without generating any image."""
    return [target_volume_ml(config, i) for i in range(config.patients)]


def _calcifications(space: PatientSpace) -> list[tuple[np.ndarray, float]]:
    """Pineal and choroid-plexus calcifications: bright spots that are not blood."""
    rng = space.rng
    atlas = space.atlas_mm()
    spots = []
    for name, centre in CALCIFICATIONS.items():
        if rng.random() > (0.6 if name == "pineal" else 0.45):
            continue
        radius = rng.uniform(1.2, 2.8)
        dist = np.linalg.norm(atlas - np.asarray(centre, np.float32)[:, None], axis=0)
        spots.append((ramp(radius - dist, 1.0), float(rng.uniform(150.0, 400.0))))
    return spots


def _mix(
    tissues: Tissues, hu: TissueHU, lesions: list[Lesion], edema: list[Edema]
) -> tuple[np.ndarray, np.ndarray]:
    """Partial-volume HU with blood replacing CSF first, then brain; returns (HU, blood)."""
    image = tissues.render(hu)
    brain_hu = tissues.brain_hu(hu)
    for e in edema:
        image -= e.drop * tissues.brain
        brain_hu = brain_hu - e.drop
    if not lesions:
        return image, np.zeros_like(image)
    total = np.sum([lesion.fraction for lesion in lesions], axis=0)
    room = tissues.intracranial
    squeeze = np.where(total > room, room / np.maximum(total, 1e-6), 1.0)
    for lesion in lesions:
        lesion.fraction *= squeeze
    blood = total * squeeze
    clot_hu = np.sum([lesion.fraction * lesion.hu for lesion in lesions], axis=0)
    clot_hu = clot_hu / np.maximum(blood, 1e-6)
    in_csf = np.minimum(blood, tissues.csf)
    in_brain = blood - in_csf
    image += in_csf * (clot_hu - hu.csf) + in_brain * (clot_hu - brain_hu)
    return image.astype(np.float32), blood.astype(np.float32)


def _ct_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> np.ndarray:
    white = rng.standard_normal(shape).astype(np.float32)
    smooth = ndi.gaussian_filter(white, sigma=(NOISE_CORRELATION_PX, NOISE_CORRELATION_PX, 0))
    return smooth * (sd / max(float(smooth.std()), 1e-6))


def simulate(config: SynthConfig, index: int, anatomy: Anatomy | None = None) -> Phantom:
    """Render patient ``index`` of the cohort described by ``config``."""
    if anatomy is None:
        anatomy = load_anatomy(config.anatomy_mm)
    rng = patient_rng(config, index)
    geometry = sample_geometry(config, rng)
    coords = atlas_coordinates(geometry, rng, config.elastic_mm)
    space = PatientSpace.build(anatomy, geometry, rng, coords)
    del coords

    lo, hi = config.atrophy_mm
    atrophy = float(lo + (hi - lo) * rng.random() ** 1.5)  # mild atrophy is the common case
    ventricle_factor = float(rng.uniform(1.0, 1.8))
    tissues = atrophied_tissues(space, atrophy, ventricle_factor)
    hu = TissueHU.sample(rng)

    edema: list[Edema] = []
    if config.kind == "sah":
        lesions, details = bleeds_sah.aneurysmal_sah(
            space, tissues, target_volume_ml(config, index)
        )
    else:
        lesions, edema, details = bleeds_tbi.traumatic_bleeds(space, tissues)
    image_active, blood_active = _mix(tissues, hu, lesions, edema)
    calcified = np.zeros(space.size, np.float32)
    for fraction, spot_hu in _calcifications(space):
        image_active += fraction * (spot_hu - image_active)
        calcified = np.maximum(calcified, fraction)

    slab = space.slab
    n_inside = slab.mean(np.ones(space.size, np.float32))  # fraction of sub-slices in the head
    image_flat = slab.mean(image_active) + (1.0 - n_inside) * AIR_HU
    blood = slab.mean(blood_active)
    label_flat = blood >= LABEL_THRESHOLD

    kinds = findings.LESION_KINDS
    per_kind = np.zeros((len(kinds) + 1, slab.n_out), np.float32)
    for lesion in lesions:
        per_kind[kinds.index(lesion.kind) + 1] += slab.mean(lesion.fraction)
    kind_map = np.argmax(per_kind, axis=0).astype(np.uint8)
    kind_map[~label_flat] = 0

    fractions = {
        "gm": slab.mean(tissues.gm),
        "wm": slab.mean(tissues.wm),
        "csf": slab.mean(tissues.csf - tissues.falx),
        "bone": slab.mean(tissues.bone),
        "scalp": slab.mean(tissues.scalp),
        "blood": blood,
        "cistern": slab.mean(space.channel("cistern")),
        "calcification": slab.mean(calcified),
    }
    fractions = {k: space.to_volume(v) for k, v in fractions.items()}
    tissue = sum(fractions[k] for k in ("gm", "wm", "csf", "bone", "scalp"))
    fractions["air"] = 1.0 - cast(np.ndarray, tissue)  # a sum of arrays, never the empty 0
    fractions["falx"] = space.to_volume(slab.mean(tissues.falx))

    image_clean = space.to_volume(image_flat)
    label = space.to_volume(label_flat).astype(np.uint8)
    kind_map = space.to_volume(kind_map)
    site = site_of(config, index)
    lo, hi = config.noise_hu
    step = (hi - lo) / config.n_sites
    noise_sd = float(rng.uniform(lo + site * step, lo + (site + 1) * step))
    noisy = image_clean + _ct_noise(rng, image_clean.shape, noise_sd)
    image = np.clip(np.rint(noisy), *HU_LIMITS).astype(np.int16)

    clot = [x.hu[x.fraction > 0] for x in lesions if (x.fraction > 0).any()]
    result = {
        **findings.summarise(label, kind_map, fractions["cistern"] >= 0.5, geometry.spacing),
        **details,
        "slice_mm": geometry.spacing[2],
        "noise_hu": round(noise_sd, 2),
        "atrophy_mm": round(atrophy, 2),
    }
    return Phantom(
        image=image,
        image_clean=image_clean,
        label=label,
        affine=geometry.affine.copy(),
        geometry=geometry,
        tissue_hu=hu,
        fractions=fractions,
        kind_map=kind_map,
        blood_hu_range=(
            min((float(c.min()) for c in clot), default=0.0),
            max((float(c.max()) for c in clot), default=0.0),
        ),
        findings=result,
    )


def generate_patient(
    config: SynthConfig, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, object]]:
    """(image HU int16, label uint8, 4x4 RAS affine, findings) of patient ``index``."""
    phantom = simulate(config, index)
    return phantom.image, phantom.label, phantom.affine, dict(phantom.findings)
