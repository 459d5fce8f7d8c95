"""Random 3D training patches centred on blood or on the head (Swin UNETR study)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sah.data.preprocess.geometry import pad_to_at_least
from sah.errors import ConfigError

BACKGROUND_TRIES = 64  # rejection-sampling attempts before listing background voxels


@dataclass(frozen=True, eq=False)
class Patch:
    """One training patch: ``start`` is its voxel 0 in the (padded) case, ``centre`` the drawn
    voxel's index inside the patch, ``positive`` whether a labelled voxel was drawn."""

    image: np.ndarray
    label: np.ndarray
    start: tuple[int, ...]
    centre: tuple[int, ...]
    positive: bool


class PosNegPatchSampler:
    """Patches of ``size`` centred on a labelled voxel with probability ``pos_fraction``, else on
    an unlabelled head voxel (image != ``background``), like MONAI ``RandCropByPosNegLabeld``.

    As in MONAI, a patch near the border is shifted inward to stay inside the volume, so the
    drawn voxel is inside the patch but not always at its centre (``Patch.centre`` says where).
    A case smaller than the patch is padded (image ``background``, label 0) once, here.
    Labelled voxels are listed once per case; background voxels, the bulk of a volume, are found
    by rejection sampling instead, to keep memory per case small.
    """

    def __init__(
        self,
        image: np.ndarray,
        label: np.ndarray,
        size: Sequence[int],
        pos_fraction: float = 0.5,
        background: float = 0.0,
    ) -> None:
        if image.shape != label.shape or len(size) != image.ndim:
            raise ValueError(
                f"image {image.shape}, label {label.shape} and patch size {tuple(size)} must "
                "have matching dimensions"
            )
        if not 0.0 <= pos_fraction <= 1.0:
            raise ConfigError("data.pos_fraction", f"must be in [0, 1], got {pos_fraction!r}")
        self.size = tuple(int(s) for s in size)
        self.image, _ = pad_to_at_least(image, self.size, background)
        self.label, _ = pad_to_at_least(label, self.size, 0)
        self.pos_fraction = float(pos_fraction)
        self.background = background
        self.foreground = np.flatnonzero(self.label > 0)
        self._background_index: np.ndarray | None = None

    def __call__(self, rng: np.random.Generator) -> Patch:
        want_positive = rng.random() < self.pos_fraction
        if (want_positive and self.foreground.size) or not self._has_background():
            flat = int(self.foreground[rng.integers(self.foreground.size)])
            positive = True
        else:
            flat = self._draw_background(rng)
            positive = False
        voxel = np.unravel_index(flat, self.label.shape)
        shape = np.asarray(self.label.shape)
        size = np.asarray(self.size)
        start = np.clip(np.asarray(voxel) - size // 2, 0, shape - size)
        box = tuple(slice(int(s), int(s) + n) for s, n in zip(start, size, strict=True))
        return Patch(
            image=np.ascontiguousarray(self.image[box]),
            label=np.ascontiguousarray(self.label[box]),
            start=tuple(int(s) for s in start),
            centre=tuple(int(v - s) for v, s in zip(voxel, start, strict=True)),
            positive=positive,
        )

    def _has_background(self) -> bool:
        return self.foreground.size < self.label.size

    def _draw_background(self, rng: np.random.Generator) -> int:
        flat_label = self.label.reshape(-1)
        flat_image = self.image.reshape(-1)
        for _ in range(BACKGROUND_TRIES):
            flat = int(rng.integers(flat_label.size))
            if flat_label[flat] == 0 and flat_image[flat] != self.background:
                return flat
        if self._background_index is None:  # head is a small part of the volume: list it
            head = (flat_label == 0) & (flat_image != self.background)
            if not head.any():
                head = flat_label == 0
            self._background_index = np.flatnonzero(head)
        return int(self._background_index[rng.integers(self._background_index.size)])
