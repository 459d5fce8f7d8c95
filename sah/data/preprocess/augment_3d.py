"""Random 3D augmentation of whole preprocessed volumes (mortality study: mirror, rotation,
scaling, elastic deformation, gamma), as MONAI array transforms on (channel, x, y, z) tensors.

It runs after the cached, deterministic preprocessing, once per draw, on training cases only.
Resampling pads with the border value (air after the 0-100 HU clip), so rotated or shrunken
heads are not framed by an artificial edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from sah.errors import ConfigError


@dataclass(frozen=True)
class VolumeAugmentation:
    """Probabilities and ranges of each random transform; a probability of 0 turns it off.

    ``mirror_axes`` are array axes (0 = x, left-right: heads are roughly symmetric about the
    midline, while mirroring head-foot would make implausible anatomy). ``rotate_deg`` is the
    largest angle about each of x, y and z; ``scale`` the zoom range; ``elastic_sigma`` (voxels)
    sets how smooth the random displacement is and ``elastic_magnitude`` how strong;
    ``gamma`` the range of the intensity exponent.
    """

    mirror_prob: float = 0.5
    mirror_axes: tuple[int, ...] = (0,)
    rotate_prob: float = 0.5
    rotate_deg: tuple[float, float, float] = (5.0, 5.0, 15.0)
    scale_prob: float = 0.5
    scale: tuple[float, float] = (0.9, 1.1)
    elastic_prob: float = 0.2
    elastic_sigma: tuple[float, float] = (5.0, 8.0)
    elastic_magnitude: tuple[float, float] = (100.0, 200.0)
    gamma_prob: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)

    @classmethod
    def from_config(cls, values: dict[str, Any] | None) -> VolumeAugmentation | None:
        """From the ``data.augment`` mapping (lists allowed); None or ``{}``: no augmentation."""
        if not values:
            return None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"data.augment.{unknown[0]}", f"is not an augmentation setting; use {sorted(known)}"
            )
        plain: dict[str, Any] = {
            k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
            for k, v in values.items()
        }
        return cls(**plain)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.endswith("_prob"):
                value = getattr(self, f.name)
                if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                    raise ConfigError(f"data.augment.{f.name}", f"must be in [0, 1], got {value!r}")
        for name in ("scale", "elastic_sigma", "elastic_magnitude", "gamma"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(
                    f"data.augment.{name}", f"needs 0 < low <= high, got {getattr(self, name)!r}"
                )
        if len(self.rotate_deg) != 3:
            raise ConfigError("data.augment.rotate_deg", "needs one angle per axis (x, y, z)")
        if any(a not in (0, 1, 2) for a in self.mirror_axes):
            raise ConfigError(
                "data.augment.mirror_axes", f"axes are 0, 1, 2; got {self.mirror_axes}"
            )

    def build(self, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The transform chain, seeded so that a run's sequence of draws is reproducible."""
        from monai.transforms import (
            Compose,
            Rand3DElastic,
            RandAdjustContrast,
            RandFlip,
            RandRotate,
            RandZoom,
        )

        x, y, z = (math.radians(a) for a in self.rotate_deg)
        steps = [
            *(RandFlip(prob=self.mirror_prob, spatial_axis=axis) for axis in self.mirror_axes),
            RandRotate(x, y, z, prob=self.rotate_prob, padding_mode="border"),
            RandZoom(prob=self.scale_prob, min_zoom=self.scale[0], max_zoom=self.scale[1]),
            Rand3DElastic(
                self.elastic_sigma,
                self.elastic_magnitude,
                prob=self.elastic_prob,
                padding_mode="border",
            ),
            RandAdjustContrast(prob=self.gamma_prob, gamma=self.gamma),
        ]
        chain = Compose([s for s in steps if s.prob > 0]).set_random_state(seed=seed)

        def augment(image: torch.Tensor) -> torch.Tensor:
            out = chain(image)
            return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)

        return augment
