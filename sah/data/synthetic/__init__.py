"""Synthetic head-CT cohorts: aneurysmal SAH and traumatic haemorrhage phantoms.

No patient data ships with sah, so demos and tests run the real pipeline on these: NIfTI images
(HU, RAS) and labels plus a manifest, exactly as a real cohort would be laid out. Anatomy comes
from the MNI152 2009 templates shipped with nilearn; each patient gets its own pose, shape,
atrophy, slice thickness, noise and haemorrhage, deterministically from (seed, index).

    from sah.data.synthetic import SynthConfig, ensure_cohort
    manifest = ensure_cohort(SynthConfig(kind="sah", n_patients=30, seed=0))
"""

from __future__ import annotations

from sah.data.synthetic.bleeds_sah import volume_bin_index
from sah.data.synthetic.cohort import cohort_dir, ensure_cohort
from sah.data.synthetic.config import GENERATOR_VERSION, SynthConfig
from sah.data.synthetic.phantom import (
    Phantom,
    generate_patient,
    simulate,
    target_volume_ml,
    volume_schedule,
)
from sah.data.synthetic.preview import write_preview

__all__ = [
    "GENERATOR_VERSION",
    "Phantom",
    "SynthConfig",
    "cohort_dir",
    "ensure_cohort",
    "generate_patient",
    "simulate",
    "target_volume_ml",
    "volume_bin_index",
    "volume_schedule",
    "write_preview",
]
