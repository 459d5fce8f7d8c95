"""Intensity steps: the 2D nets' HU window, and the pipelines' normalisation over the head, HU
clipping and standardising."""

from __future__ import annotations

from typing import Literal

import numpy as np

StandardizeMode = Literal["minmax", "zscore"]
STANDARDIZE_MODES: tuple[str, ...] = ("minmax", "zscore")


def apply_window(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] HU linearly to [0, 1] and clip: the LoRA study's 0-140 HU window."""
    return np.clip((hu - low) / (high - low), 0.0, 1.0).astype(np.float32)


def normalize_nonzero(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit variance over ``mask`` (default: the non-zero voxels); 0 elsewhere.

    Same result as MONAI ``NormalizeIntensity(nonzero=True, channel_wise=True)`` on a single
    channel, which the Swin UNETR study used: background stays exactly 0, so the statistics
    describe the head rather than the amount of air in the field of view. A constant foreground
    is only centred (divided by 1), as MONAI does.
    """
    if mask is None:
        mask = image != 0
    out = np.zeros(image.shape, dtype=np.float32)
    values = image[mask].astype(np.float64)
    if values.size == 0:
        return out
    mean = values.mean()
    std = values.std()
    out[mask] = ((values - mean) / (std if std > 0 else 1.0)).astype(np.float32)
    return out


def standardize_affine(values: np.ndarray, mode: StandardizeMode) -> tuple[float, float]:
    """``(shift, scale)`` such that ``(x - shift) / scale`` standardises ``values``.

    ``minmax`` maps the volume's range to [0, 1] (AUCMEDI ``Standardize(mode="grayscale")``,
    which the mortality study used, maps it to [0, 255]; the factor 255 is left out).
    ``zscore`` gives zero mean and unit variance. A constant volume gets scale 1.
    """
    if mode == "minmax":
        low, high = float(values.min()), float(values.max())
        return low, (high - low) if high > low else 1.0
    if mode == "zscore":
        mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
        return mean, std if std > 0 else 1.0
    raise ValueError(f"unknown standardize mode {mode!r}; use one of {STANDARDIZE_MODES}")
