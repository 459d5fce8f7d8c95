"""The deterministic, cacheable part of each study's preprocessing, one small config per study.

A pipeline maps ``(CTVolume, label or None)`` to a ``PreprocessedCase``: the same input always
gives the same arrays, so ``fingerprint()`` (a hash of the class, its version and its fields) is
enough to key a cache entry. Random augmentation lives in ``augment`` and ``sampling``.

Bump a class's ``version`` whenever its output changes for the same fields, so that stale cache
entries are not reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from sah.data.preprocess.geometry import (
    center_crop_or_pad,
    ensure_ras,
    foreground_box,
    pad_to_at_least,
    resample_to_spacing,
    shift_affine,
)
from sah.data.preprocess.intensity import (
    STANDARDIZE_MODES,
    StandardizeMode,
    normalize_nonzero,
    standardize_affine,
)
from sah.data.readers.ct import CTVolume, voxel_spacing
from sah.errors import ConfigError, DataError

# The mortality study's AUCMEDI sitk_loader and arrays are (z, y, x): input_shape (160, 128, 128)
# and resampling (1.10, 1.58, 1.18) mm. In this project's (x, y, z) axes that is:
AUCMEDI_SHAPE_XYZ = (128, 128, 160)
AUCMEDI_SPACING_XYZ = (1.18, 1.58, 1.10)


@dataclass(frozen=True, eq=False)
class PreprocessedCase:
    """A pipeline's output: ``image`` float32 (x, y, z), ``label`` uint8 or None, ``affine`` of
    the output grid (voxel -> RAS mm), so that physical positions and volumes stay computable."""

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


class Preprocess:
    """Base of the study pipelines: field validation helpers and the cache fingerprint."""

    name: ClassVar[str] = "preprocess"
    version: ClassVar[int] = 1

    def __call__(self, ct: CTVolume, label: np.ndarray | None = None) -> PreprocessedCase:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """Stable across runs and machines: a hash of the class, ``version`` and field values."""
        text = json.dumps(
            {"pipeline": self.name, "version": self.version, "params": self.params()},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _set(self, field: str, value: Any) -> None:
        object.__setattr__(self, field, value)  # normalise a frozen field in __post_init__

    def _floats(self, field: str, n: int, *, positive: bool, optional: bool = False) -> None:
        value = getattr(self, field)
        if value is None and optional:
            return
        try:
            numbers = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            numbers = ()
        if len(numbers) != n or not all(np.isfinite(numbers)) or (positive and min(numbers) <= 0):
            kind = "positive numbers" if positive else "numbers"
            raise ConfigError(f"preprocess.{field}", f"must be {n} {kind}, got {value!r}")
        self._set(field, numbers)

    def _ints(self, field: str, n: int, *, optional: bool = False) -> None:
        value = getattr(self, field)
        if value is None and optional:
            return
        try:
            numbers = tuple(int(v) for v in value)
            exact = all(float(v) == int(v) for v in value)
        except (TypeError, ValueError):
            numbers, exact = (), False
        if len(numbers) != n or not exact or min(numbers) < 1:
            raise ConfigError(
                f"preprocess.{field}", f"must be {n} positive integers, got {value!r}"
            )
        self._set(field, numbers)

    def _window(self, field: str, optional: bool) -> None:
        self._floats(field, 2, positive=False, optional=optional)
        value = getattr(self, field)
        if value is not None and value[0] >= value[1]:
            raise ConfigError(f"preprocess.{field}", f"needs low < high, got {value!r}")


def _checked_label(ct: CTVolume, label: np.ndarray | None) -> np.ndarray | None:
    if label is None:
        return None
    label = np.asarray(label)
    if label.shape != ct.array.shape:
        raise DataError(
            ct.source,
            f"label shape {label.shape} differs from image shape {ct.array.shape}",
            "load the label with sah.data.load_label(path, like=ct)",
        )
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise DataError(ct.source, "label values outside 0..255", "store class indices")
        label = label.astype(np.uint8)
    return label


@dataclass(frozen=True, eq=False)
class SwinPreprocess(Preprocess):
    """Swin UNETR study: RAS, resampling to ``spacing`` mm (image linear, label nearest),
    normalisation over the head, crop to the head's bounding box, padding to ``min_shape``.

    The study's inputs were skull-stripped (background exactly 0), which is what MONAI's
    ``nonzero=True`` normalisation and ``CropForeground`` rely on. For raw CT, voxels below
    ``background_below_hu`` (air) are set to 0 first, so that both see the head and not the
    air; on skull-stripped inputs this changes nothing. ``None`` reproduces the study exactly.
    ``clip_hu`` (optional; the study's HU window is unknown) clips before normalisation.
    Labelled voxels are always kept by the crop. Padding (value 0, background) to ``min_shape``
    (the 128x128x64 patch) lets patch sampling work on small heads.
    """

    name: ClassVar[str] = "swin"
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.0)
    background_below_hu: float | None = -500.0
    clip_hu: tuple[float, float] | None = None
    crop_margin: int = 0
    min_shape: tuple[int, int, int] | None = (128, 128, 64)

    def __post_init__(self) -> None:
        self._floats("spacing", 3, positive=True)
        self._window("clip_hu", optional=True)
        self._ints("min_shape", 3, optional=True)
        if self.background_below_hu is not None:
            self._set("background_below_hu", float(self.background_below_hu))
        margin = self.crop_margin
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ConfigError("preprocess.crop_margin", f"must be an integer >= 0, got {margin!r}")

    def __call__(self, ct: CTVolume, label: np.ndarray | None = None) -> PreprocessedCase:
        label = _checked_label(ct, label)
        image, affine, label = ensure_ras(ct.array, ct.affine, label)
        image, new_affine = resample_to_spacing(image, affine, self.spacing, order=1)
        if label is not None:
            label, _ = resample_to_spacing(label, affine, self.spacing, order=0)
        affine = new_affine
        if self.background_below_hu is not None:
            head = image >= self.background_below_hu
        else:
            head = image != 0
        if self.clip_hu is not None:
            image = np.clip(image, *self.clip_hu)
        image = normalize_nonzero(image, head)
        keep = head if label is None else head | (label > 0)
        box = foreground_box(keep, self.crop_margin)
        if box is not None:
            image = np.ascontiguousarray(image[box])
            label = None if label is None else np.ascontiguousarray(label[box])
            affine = shift_affine(affine, [s.start for s in box])
        if self.min_shape is not None:
            image, offset = pad_to_at_least(image, self.min_shape, 0.0)
            if label is not None:
                label, _ = pad_to_at_least(label, self.min_shape, 0)
            affine = shift_affine(affine, offset)
        return PreprocessedCase(image.astype(np.float32, copy=False), label, affine)


@dataclass(frozen=True, eq=False)
class MortalityPreprocess(Preprocess):
    """Mortality study (AUCMEDI): resampling, clip to ``clip_hu``, standardise, centre pad/crop.

    Axis order: AUCMEDI's arrays are (z, y, x), so its input 160x128x128 and spacing
    1.10x1.58x1.18 mm are ``shape=(128, 128, 160)`` and ``spacing=(1.18, 1.58, 1.10)`` here
    (x, y, z). ``spacing=None`` skips resampling. ``standardize="minmax"`` is the study's
    per-volume [0, 255] grey scaling divided by 255; ``"zscore"`` is per-volume z-scoring.
    Padding uses the standardised value of ``clip_hu[0]`` (what air becomes; 0 with minmax, as
    AUCMEDI's constant padding). The study's skull stripping, template registration and grey
    to 3 channels are not part of this pipeline.
    """

    name: ClassVar[str] = "mortality"
    shape: tuple[int, int, int] = AUCMEDI_SHAPE_XYZ
    spacing: tuple[float, float, float] | None = AUCMEDI_SPACING_XYZ
    clip_hu: tuple[float, float] = (0.0, 100.0)
    standardize: StandardizeMode = "minmax"

    def __post_init__(self) -> None:
        self._ints("shape", 3)
        self._floats("spacing", 3, positive=True, optional=True)
        self._window("clip_hu", optional=False)
        if self.standardize not in STANDARDIZE_MODES:
            raise ConfigError(
                "preprocess.standardize",
                f"must be one of {STANDARDIZE_MODES}, got {self.standardize!r}",
            )

    def __call__(self, ct: CTVolume, label: np.ndarray | None = None) -> PreprocessedCase:
        label = _checked_label(ct, label)
        image, affine, label = ensure_ras(ct.array, ct.affine, label)
        if self.spacing is not None:
            image, new_affine = resample_to_spacing(image, affine, self.spacing, order=1)
            if label is not None:
                label, _ = resample_to_spacing(label, affine, self.spacing, order=0)
            affine = new_affine
        image = np.clip(image, *self.clip_hu)
        shift, scale = standardize_affine(image, self.standardize)
        image = ((image - shift) / scale).astype(np.float32)
        fill = (self.clip_hu[0] - shift) / scale
        image, offset = center_crop_or_pad(image, self.shape, fill)
        if label is not None:
            label, _ = center_crop_or_pad(label, self.shape, 0)
        return PreprocessedCase(image, label, shift_affine(affine, offset))


PIPELINES: dict[str, type[Preprocess]] = {
    cls.name: cls for cls in (SwinPreprocess, MortalityPreprocess)
}


def build_preprocess(name: str, **params: Any) -> Preprocess:
    """A pipeline from config values (lists become tuples), e.g. ``build_preprocess("swin")``."""
    cls = PIPELINES.get(name)
    if cls is None:
        raise ConfigError(
            "preprocess.name", f"unknown pipeline {name!r}; use one of {sorted(PIPELINES)}"
        )
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"preprocess.{unknown[0]}", f"is not a field of {name!r}; fields: {sorted(known)}"
        )
    values = {
        k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        for k, v in params.items()
    }
    return cls(**values)
