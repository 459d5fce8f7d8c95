"""Whole-volume 3D inference: MONAI sliding windows with Gaussian blending, optional flip TTA.

A 3D net trains on patches, so a whole volume is predicted window by window (the Swin UNETR
study: ROI 128x128x64, 4 windows per batch). Gaussian blending weighs each window's centre more
than its border, where the net saw the least context. Flip test-time augmentation averages the
probabilities of the volume and of its mirror images (each subset of ``flip_axes``), which costs
one pass per subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from sah.errors import ConfigError
from sah.tasks.segmentation.losses import foreground_probability


@dataclass(frozen=True)
class SlidingWindow:
    """How a volume is tiled: ``roi_size`` (x, y, z) voxels, ``overlap`` fraction between
    neighbouring windows, ``sw_batch_size`` windows per forward pass, ``flip_axes`` spatial axes
    (0 = x, 1 = y, 2 = z) mirrored for test-time augmentation (empty: none)."""

    roi_size: tuple[int, int, int]
    sw_batch_size: int = 4
    overlap: float = 0.25
    flip_axes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        roi = tuple(int(v) for v in self.roi_size)
        if len(roi) != 3 or min(roi) < 1:
            raise ConfigError(
                "task.module.roi_size", f"must be 3 positive integers, got {self.roi_size!r}"
            )
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError("task.module.sw_overlap", f"must be in [0, 1), got {self.overlap!r}")
        if int(self.sw_batch_size) < 1:
            raise ConfigError(
                "task.module.sw_batch_size", f"must be >= 1, got {self.sw_batch_size!r}"
            )
        axes = tuple(sorted({int(a) for a in self.flip_axes}))
        if any(a not in (0, 1, 2) for a in axes):
            raise ConfigError(
                "task.module.tta_flip_axes", f"axes must be 0, 1 or 2, got {self.flip_axes!r}"
            )
        object.__setattr__(self, "roi_size", roi)
        object.__setattr__(self, "flip_axes", axes)
        object.__setattr__(self, "overlap", float(self.overlap))
        object.__setattr__(self, "sw_batch_size", int(self.sw_batch_size))

    def flips(self) -> list[tuple[int, ...]]:
        """Every subset of ``flip_axes``, the identity first."""
        return [c for k in range(len(self.flip_axes) + 1) for c in combinations(self.flip_axes, k)]

    @torch.no_grad()
    def probability(self, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """Blood probability (x, y, z) for one volume ``image`` of shape (1, 1, x, y, z).

        The caller sets ``net.eval()``; windows run on the image's device.
        """
        if image.ndim != 5 or image.shape[:2] != (1, 1):
            raise ValueError(f"expected one 1-channel volume (1, 1, x, y, z), got {image.shape}")
        total = torch.zeros(image.shape[2:], device=image.device)
        flips = self.flips()
        for axes in flips:
            dims = [a + 2 for a in axes]
            source = image.flip(dims) if dims else image
            logits = sliding_window_inference(
                source,
                roi_size=self.roi_size,
                sw_batch_size=self.sw_batch_size,
                predictor=net,
                overlap=self.overlap,
                mode="gaussian",
            )
            prob = foreground_probability(torch.as_tensor(logits))
            total += (prob.flip(dims) if dims else prob)[0, 0]
        return total / len(flips)


def sliding_window_from(
    roi_size: Sequence[int] | None,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    flip_axes: Sequence[int] = (),
) -> SlidingWindow | None:
    """A ``SlidingWindow`` from task settings, or None for a 2D (slice) task."""
    if roi_size is None:
        return None
    return SlidingWindow(tuple(roi_size), sw_batch_size, overlap, tuple(flip_axes))  # type: ignore[arg-type]
