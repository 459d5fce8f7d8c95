"""PNG figures of axial slices with the predicted and true blood outlined."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sah.figures import pyplot, save_figure


def intensity_window(
    image: np.ndarray, percentiles: tuple[float, float] = (1, 99)
) -> tuple[float, float]:
    """A display window for images that are not in HU (e.g. normalised for a 3D net): the
    given percentiles of the non-zero (head) voxels."""
    values = image[image != 0]
    if values.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(values, percentiles)
    return float(low), float(max(high, low + 1e-6))


def legend(cases: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]]) -> str:
    """The figure's legend: the reference's colour only when some case has one."""
    if any(truth is not None for _, _, truth, _ in cases):
        return "green: reference   red: prediction"
    return "red: prediction"


def save_overlays(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]],
    path: str | Path,
    window: tuple[float, float] = (0.0, 80.0),
) -> Path:
    """One panel per case ``(name, image_hu, truth or None, pred)``, on its largest-bleed slice.

    Truth is outlined in green and the prediction in red, over a 0-80 HU brain window.
    """
    plt = pyplot()

    n = max(len(cases), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (name, image, truth, pred) in zip(axes[0], cases, strict=False):
        ref = truth if truth is not None and truth.any() else pred
        z = (
            int(np.argmax(ref.reshape(-1, ref.shape[2]).sum(0)))
            if ref.any()
            else image.shape[2] // 2
        )
        # Transpose so that x runs left-right and y up-down on screen (radiological view flips x).
        ax.imshow(image[:, :, z].T, cmap="gray", vmin=window[0], vmax=window[1], origin="lower")
        if truth is not None and truth[:, :, z].any():
            ax.contour(truth[:, :, z].T, levels=[0.5], colors="lime", linewidths=0.8)
        if pred[:, :, z].any():
            ax.contour(pred[:, :, z].T, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{name} z={z}", fontsize=8)
        ax.axis("off")
    fig.suptitle(legend(cases), fontsize=8)
    return save_figure(fig, path)
