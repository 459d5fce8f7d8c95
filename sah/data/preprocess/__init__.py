"""Per-study preprocessing: deterministic pipelines (cacheable) and random augmentation.

The split matters for caching: a pipeline (``LoraPreprocess``, ``SwinPreprocess``,
``MortalityPreprocess``) maps a loaded CT and its label to the same arrays every time, so its
output is stored by ``sah.data.preprocess.cache.PreprocessCache``; everything random (patches,
window jitter, elastic deformation, flips, slice pairing) runs afterwards, per draw.

Names are imported on first use so that importing the pipelines does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PreprocessedCase": "sah.data.preprocess.pipelines",
    "Preprocess": "sah.data.preprocess.pipelines",
    "LoraPreprocess": "sah.data.preprocess.pipelines",
    "SwinPreprocess": "sah.data.preprocess.pipelines",
    "MortalityPreprocess": "sah.data.preprocess.pipelines",
    "build_preprocess": "sah.data.preprocess.pipelines",
    "AUCMEDI_SHAPE_XYZ": "sah.data.preprocess.pipelines",
    "AUCMEDI_SPACING_XYZ": "sah.data.preprocess.pipelines",
    "elastic_2d": "sah.data.preprocess.augment_2d",
    "Patch": "sah.data.preprocess.sampling",
    "PosNegPatchSampler": "sah.data.preprocess.sampling",
    "PosNegPairSampler": "sah.data.preprocess.sampling",
}

__all__ = [
    "AUCMEDI_SHAPE_XYZ",
    "AUCMEDI_SPACING_XYZ",
    "LoraPreprocess",
    "MortalityPreprocess",
    "Patch",
    "PosNegPairSampler",
    "PosNegPatchSampler",
    "Preprocess",
    "PreprocessedCase",
    "SwinPreprocess",
    "build_preprocess",
    "elastic_2d",
]

if TYPE_CHECKING:
    from sah.data.preprocess.augment_2d import elastic_2d
    from sah.data.preprocess.pipelines import (
        AUCMEDI_SHAPE_XYZ,
        AUCMEDI_SPACING_XYZ,
        LoraPreprocess,
        MortalityPreprocess,
        Preprocess,
        PreprocessedCase,
        SwinPreprocess,
        build_preprocess,
    )
    from sah.data.preprocess.sampling import Patch, PosNegPairSampler, PosNegPatchSampler


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sah.data.preprocess' has no attribute {name!r}")
    return getattr(import_module(module), name)
