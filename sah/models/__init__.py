"""sah.models: the networks and their named module groups (adapter targets).

Every model defines ``module_groups() -> dict[str, list[str]]`` (see docs/CONVENTIONS.md);
configs build them through ``_target_`` on the builders below. No Lightning, Hydra or MLflow
here. The MONAI-based builders are imported on first use: ``import monai`` takes seconds and
pulls in MONAI's optional integrations (MLflow among them, when installed), which users of
``MVUnet``, the checkpoint loader or the groups helper should not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sah.models.checkpoint import load_weights, read_state_dict
from sah.models.groups import group_parameter_names
from sah.models.mv_unet import MVUnet, published_key_map

if TYPE_CHECKING:
    from sah.models.densenet import DenseNet121Classifier, build_densenet121
    from sah.models.swin_unetr import GroupedSwinUNETR, build_swin_unetr
    from sah.models.unet import GroupedUNet, build_unet

_MONAI_BASED = {
    "DenseNet121Classifier": "sah.models.densenet",
    "build_densenet121": "sah.models.densenet",
    "GroupedSwinUNETR": "sah.models.swin_unetr",
    "build_swin_unetr": "sah.models.swin_unetr",
    "GroupedUNet": "sah.models.unet",
    "build_unet": "sah.models.unet",
}

__all__ = [
    "DenseNet121Classifier",
    "GroupedSwinUNETR",
    "GroupedUNet",
    "MVUnet",
    "build_densenet121",
    "build_swin_unetr",
    "build_unet",
    "group_parameter_names",
    "load_weights",
    "published_key_map",
    "read_state_dict",
]


def __getattr__(name: str) -> Any:
    if name in _MONAI_BASED:
        return getattr(importlib.import_module(_MONAI_BASED[name]), name)
    raise AttributeError(f"module 'sah.models' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
