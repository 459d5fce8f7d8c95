"""A tiny whole-volume cohort for task=mortality tests: small NIfTI heads with an outcome."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


def write_heads(folder: Path, n: int, prefix: str) -> Path:
    """``n`` heads (air, brain at 30 HU); odd ones have ``death=1`` and a 70 HU clot. Returns
    the manifest (patient_id, image, death)."""
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, k) for k in (20, 20, 14)), indexing="ij"))
    head = (grid**2).sum(0) < 0.8
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        death = i % 2
        image = np.where(head, 30.0, -1000.0) + rng.normal(0, 5, head.shape)
        if death:
            image[8:12, 8:12, 5:9] = 70.0
        path = folder / f"{prefix}{i}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.int16), np.diag([9.0, 9.0, 10.0, 1.0])), path)
        rows.append({"patient_id": f"{prefix}{i}", "image": path.name, "death": death})
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
