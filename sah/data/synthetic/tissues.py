"""Normal head tissue of one patient: fractions after atrophy, and their Hounsfield units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sah.data.synthetic.space import PatientSpace

# Non-contrast head CT attenuation (HU) each patient's values are drawn from.
TISSUE_HU_RANGES: dict[str, tuple[float, float]] = {
    "gm": (35.0, 40.0),
    "wm": (25.0, 30.0),
    "csf": (2.0, 12.0),
    "scalp": (30.0, 50.0),
    "falx": (45.0, 65.0),
}
BONE_SCALE = (0.95, 1.05)  # applied to the atlas bone profile (780-1400 HU) -> 741-1470 HU
AIR_HU = -1000.0


@dataclass(frozen=True)
class TissueHU:
    """One patient's tissue attenuation (scanner calibration and age differ between heads)."""

    gm: float
    wm: float
    csf: float
    scalp: float
    falx: float
    bone_scale: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> TissueHU:
        values = {k: float(rng.uniform(*r)) for k, r in TISSUE_HU_RANGES.items()}
        return cls(**values, bone_scale=float(rng.uniform(*BONE_SCALE)))


@dataclass
class Tissues:
    """Fractions of each tissue in every active sub-voxel (the rest is air)."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray  # includes ``vent`` and ``falx``
    vent: np.ndarray
    falx: np.ndarray
    bone: np.ndarray
    bone_hu: np.ndarray
    scalp: np.ndarray

    @property
    def brain(self) -> np.ndarray:
        return self.gm + self.wm

    @property
    def intracranial(self) -> np.ndarray:
        return self.gm + self.wm + self.csf

    @property
    def air(self) -> np.ndarray:
        return np.clip(1.0 - self.intracranial - self.bone - self.scalp, 0.0, 1.0)

    def brain_hu(self, hu: TissueHU) -> np.ndarray:
        """Attenuation of the brain part of each sub-voxel (GM/WM mix)."""
        brain = self.brain
        mixed = (self.gm * hu.gm + self.wm * hu.wm) / np.maximum(brain, 1e-6)
        return np.where(brain > 1e-6, mixed, 0.5 * (hu.gm + hu.wm)).astype(np.float32)

    def render(self, hu: TissueHU) -> np.ndarray:
        """Partial-volume HU of normal tissue."""
        return (
            self.gm * hu.gm
            + self.wm * hu.wm
            + (self.csf - self.falx) * hu.csf
            + self.falx * hu.falx
            + self.bone * self.bone_hu * hu.bone_scale
            + self.scalp * hu.scalp
            + self.air * AIR_HU
        ).astype(np.float32)


def atrophied_tissues(space: PatientSpace, atrophy_mm: float, ventricle_factor: float) -> Tissues:
    """Tissue fractions with brain removed at every CSF interface (age-related atrophy).

    Brain within ``atrophy_mm`` (varying smoothly over the head) of CSF becomes CSF, so sulci,
    fissures and cisterns widen; ventricles widen by ``ventricle_factor`` times as much
    (ex-vacuo enlargement or hydrocephalus, common after SAH).
    """
    gm, wm = space.channel("gm"), space.channel("wm")
    csf, vent = space.channel("csf"), space.channel("vent")
    brain = gm + wm
    near_vent = space.channel("near_vent")
    local = atrophy_mm * np.clip(1.0 + 0.25 * space.noise(50.0), 0.5, 1.5)
    local = local * (1.0 + (ventricle_factor - 1.0) * near_vent)
    width = space.anatomy.voxel_mm
    lost = brain * np.clip(0.5 + (local - space.channel("brain_depth")) / width, 0.0, 1.0)
    keep = np.where(brain > 1e-6, 1.0 - lost / np.maximum(brain, 1e-6), 1.0)
    return Tissues(
        gm=(gm * keep).astype(np.float32),
        wm=(wm * keep).astype(np.float32),
        csf=(csf + lost).astype(np.float32),
        vent=(vent + lost * near_vent).astype(np.float32),
        falx=space.channel("falx"),
        bone=space.channel("bone"),
        bone_hu=space.channel("bone_hu"),
        scalp=space.channel("scalp"),
    )
