"""Per-study preprocessing: deterministic pipelines (cacheable) and random augmentation.

The split matters for caching: a pipeline (``SwinPreprocess``, ``MortalityPreprocess``) maps a
loaded CT and its label to the same arrays every time, so its output is stored by
``sah.data.preprocess.cache.PreprocessCache``; everything random (3D patches, flips,
``augment_3d``; the 2D nets' window jitter) runs afterwards, per draw.

Names are imported on first use so that importing the pipelines does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PreprocessedCase": "sah.data.preprocess.pipelines",
    "Preprocess": "sah.data.preprocess.pipelines",
    "SwinPreprocess": "sah.data.preprocess.pipelines",
    "MortalityPreprocess": "sah.data.preprocess.pipelines",
    "build_preprocess": "sah.data.preprocess.pipelines",
    "AUCMEDI_SHAPE_XYZ": "sah.data.preprocess.pipelines",
    "AUCMEDI_SPACING_XYZ": "sah.data.preprocess.pipelines",
    "Patch": "sah.data.preprocess.sampling",
    "PosNegPatchSampler": "sah.data.preprocess.sampling",
}

__all__ = [
    "AUCMEDI_SHAPE_XYZ",
    "AUCMEDI_SPACING_XYZ",
    "MortalityPreprocess",
    "Patch",
    "PosNegPatchSampler",
    "Preprocess",
    "PreprocessedCase",
    "SwinPreprocess",
    "build_preprocess",
]

if TYPE_CHECKING:
    from sah.data.preprocess.pipelines import (
        AUCMEDI_SHAPE_XYZ,
        AUCMEDI_SPACING_XYZ,
        MortalityPreprocess,
        Preprocess,
        PreprocessedCase,
        SwinPreprocess,
        build_preprocess,
    )
    from sah.data.preprocess.sampling import Patch, PosNegPatchSampler


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sah.data.preprocess' has no attribute {name!r}")
    return getattr(import_module(module), name)
