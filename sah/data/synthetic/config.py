"""What a synthetic cohort is made of; its hash keys the cache entry."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from sah.errors import ConfigError

# Bump whenever generated content changes for the same config, so stale caches are not reused.
GENERATOR_VERSION = 2

KINDS = ("sah", "tbi")
DEFAULT_N = {"sah": 30, "tbi": 124}  # the LoRA study's cohorts (fine-tuning / pre-training)


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic head-CT cohort.

    The CPU default is a 128x128 in-plane matrix at 1.8 mm (230 mm field of view, the same as
    512x512 at 0.45 mm, the clinical size) so that demos and tests run in seconds; pass
    ``matrix=512, spacing_mm=0.45`` for clinical-size images. Slice thickness is drawn per
    patient, uniformly from ``slice_mm`` and rounded to 0.5 mm.
    """

    kind: Literal["sah", "tbi"] = "sah"
    n_patients: int | None = None  # None: 30 for sah, 124 for tbi
    seed: int = 0
    matrix: int = 128
    spacing_mm: float = 1.8
    slice_mm: tuple[float, float] = (2.5, 5.0)
    coverage_mm: float = 165.0  # cranio-caudal extent, foramen magnum to vertex
    noise_hu: tuple[float, float] = (3.0, 8.0)  # image-noise standard deviation range
    n_sites: int = 3
    atrophy_mm: tuple[float, float] = (0.0, 2.5)  # brain lost at each CSF interface
    max_rotation_deg: tuple[float, float, float] = (4.0, 12.0, 6.0)  # roll, pitch, yaw
    max_shift_mm: float = 8.0
    scale: tuple[float, float] = (0.92, 1.08)
    elastic_mm: float = 3.0  # amplitude of the smooth deformation
    atlas_mm: float | None = None  # anatomy resolution; None: 1.0 below 0.9 mm spacing, else 1.5

    def __post_init__(self) -> None:
        # Hydra and JSON hand over lists; keep tuples so equal configs hash equally.
        for name in ("slice_mm", "noise_hu", "atrophy_mm", "max_rotation_deg", "scale"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.kind not in KINDS:
            raise ConfigError("kind", f"must be one of {KINDS}, got {self.kind!r}")
        if self.n_patients is not None and (
            not isinstance(self.n_patients, int) or self.n_patients < 1
        ):
            raise ConfigError("n_patients", f"must be a positive integer, got {self.n_patients!r}")
        if not 16 <= int(self.matrix) <= 1024:
            raise ConfigError("matrix", f"must be between 16 and 1024, got {self.matrix}")
        if not 0.2 <= float(self.spacing_mm) <= 5.0:
            raise ConfigError("spacing_mm", f"must be 0.2-5 mm, got {self.spacing_mm}")
        lo, hi = (float(v) for v in self.slice_mm)
        if not 0.5 <= lo <= hi <= 10.0:
            raise ConfigError("slice_mm", f"needs 0.5 <= low <= high <= 10 mm, got {self.slice_mm}")
        nlo, nhi = (float(v) for v in self.noise_hu)
        if not 0.0 <= nlo <= nhi:
            raise ConfigError("noise_hu", f"needs 0 <= low <= high, got {self.noise_hu}")
        if self.n_sites < 1:
            raise ConfigError("n_sites", f"must be at least 1, got {self.n_sites}")
        if self.atlas_mm is not None and not 0.5 <= float(self.atlas_mm) <= 3.0:
            raise ConfigError("atlas_mm", f"must be 0.5-3 mm, got {self.atlas_mm}")
        fov = self.matrix * self.spacing_mm
        if fov < 160.0:
            raise ConfigError(
                "matrix/spacing_mm",
                f"field of view {fov:.0f} mm is smaller than a head",
                "use matrix x spacing >= 160 mm, e.g. 128 x 1.8",
            )

    @property
    def patients(self) -> int:
        return self.n_patients if self.n_patients is not None else DEFAULT_N[self.kind]

    @property
    def anatomy_mm(self) -> float:
        if self.atlas_mm is not None:
            return float(self.atlas_mm)
        return 1.0 if self.spacing_mm < 0.9 else 1.5

    def hash_params(self) -> dict:
        """Everything that determines the generated files (with the generator version)."""
        params = asdict(self)
        params["n_patients"] = self.patients
        params["atlas_mm"] = self.anatomy_mm
        params["generator_version"] = GENERATOR_VERSION
        return params

    def slices_for(self, slice_mm: float) -> int:
        return max(2, math.ceil(self.coverage_mm / slice_mm))
