"""A PNG to eyeball a cohort: axial, coronal and sagittal slices with the blood outlined.

It reads the files back through the manifest (not the generator's arrays), so what it shows is
what training will load. Brain window 0-80 HU; radiological convention (patient's right on
the left of each image).
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from sah.figures import pyplot, save_figure

WINDOW_HU = (0.0, 80.0)


def _pick_rows(rows: list[dict[str, str]], n: int) -> list[dict[str, str]]:
    """``n`` patients spread over the blood-volume range (smallest to largest)."""
    ordered = sorted(rows, key=lambda r: float(r.get("blood_volume_ml") or 0.0))
    if len(ordered) <= n:
        return ordered
    picks = np.linspace(0, len(ordered) - 1, n).round().astype(int)
    return [ordered[i] for i in picks]


def _centre(label: np.ndarray) -> tuple[int, int, int]:
    """Axial slice with most blood; in-plane centroid of the blood (or the volume's centre)."""
    if not label.any():
        return tuple(s // 2 for s in label.shape)  # type: ignore[return-value]
    k = int(np.argmax(label.sum(axis=(0, 1))))
    i, j = np.argwhere(label[:, :, k]).mean(axis=0).round().astype(int)
    return int(i), int(j), k


def write_preview(manifest: str | Path, out: str | Path, n_patients: int = 4) -> Path:
    """Render up to ``n_patients`` (rows) x 3 views of the cohort behind ``manifest``."""
    plt = pyplot()

    manifest = Path(manifest)
    with open(manifest, newline="") as fh:
        rows = _pick_rows(list(csv.DictReader(fh)), n_patients)
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 4.2 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows, strict=True):
        image_nii = nib.as_closest_canonical(nib.load(manifest.parent / row["image"]))
        label_nii = nib.as_closest_canonical(nib.load(manifest.parent / row["label"]))
        image = np.asarray(image_nii.dataobj, dtype=np.float32)
        label = np.asarray(label_nii.dataobj) > 0
        sx, sy, sz = (float(v) for v in image_nii.header.get_zooms()[:3])
        i, j, k = _centre(label)
        views = [
            ("axial", image[::-1, :, k].T, label[::-1, :, k].T, sy / sx),
            ("coronal", image[::-1, j, :].T, label[::-1, j, :].T, sz / sx),
            ("sagittal", image[:, ::-1, :][i].T, label[:, ::-1, :][i].T, sz / sy),
        ]
        for ax, (name, img, lab, aspect) in zip(ax_row, views, strict=True):
            ax.imshow(
                img,
                cmap="gray",
                vmin=WINDOW_HU[0],
                vmax=WINDOW_HU[1],
                origin="lower",
                aspect=aspect,
                interpolation="nearest",
            )
            if lab.any():
                ax.contour(lab.astype(float), levels=[0.5], colors="red", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=9)
            if name != "sagittal":
                ax.text(0.02, 0.97, "R", color="yellow", transform=ax.transAxes, va="top")
        ax_row[0].set_ylabel(
            f"{row['patient_id']}  {float(row['blood_volume_ml']):.1f} ml\n"
            f"{row.get('lesion_types', '')}  mFisher {row.get('modified_fisher', '')}\n"
            f"{row.get('bleed_site', '')}  {sz:g} mm slices",
            fontsize=9,
        )
    fig.suptitle(f"{manifest.parent.name}  (window {WINDOW_HU[0]:g}-{WINDOW_HU[1]:g} HU)")
    return save_figure(fig, out, dpi=90)
