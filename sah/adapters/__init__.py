"""Parameter-efficient adapters for conv and linear layers (pure torch; see docs/ADAPTERS.md).

LoRA family (``lora_c``, ``conv_lora``, ``cp_lora``) and DoRA family (``dora_c``,
``conv_dora``, ``cp_dora``) on ``nn.Linear``, ``nn.Conv{1,2,3}d`` and
``nn.ConvTranspose{1,2,3}d``, plus the baselines ``full`` and ``none`` behind the same API::

    names = inject(model, AdapterConfig("cp_lora", rank=8, target="decoder"))
    ...train...
    save_adapter(model, "adapter.safetensors")
    plain = merge_and_unload(model)

Decisions worth knowing:

- Frozen norm layers keep (use, never update) their running statistics, as in eval mode;
  ``train_norm=True`` trains the targeted ones (affine and statistics).
- A grouped convolution gets one factorisation per group.
- ``lora_c`` groups each output channel with the first kernel axis:
  ``dW[o, i, a, b] = (B A)[(o, a), (i, b)]``.
- A training step picks, per layer, plain autograd through W' or a low-rank gradient path
  (same forward and gradients, cheaper backward); see ``pathcost`` and ``set_compute_path``.
- An adapted conv followed by a frozen BatchNorm in an ``nn.Sequential`` applies the norm
  itself while unmerged, and the norm passes its input through (``normfold``;
  ``fold_norm=False`` turns it off, e.g. for hooks on the conv's own output).

Imports nothing else of ``sah`` so that it can be taken into another project.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# The settings are plain Python; everything else needs torch and is imported on first use, so
# that a program that only reads or checks settings (sah-train registering AdapterConfig as the
# adapter group's schema) does not pay for importing torch.
from .config import METHODS, AdapterConfig, AdapterError, AdapterWarning

if TYPE_CHECKING:
    from .checkpoint import load_adapter, read_metadata, save_adapter
    from .inject import (
        adapter_layers,
        inject,
        merge,
        merge_and_unload,
        reattach_norms,
        set_compute_path,
        trainable_parameters,
        unmerge,
    )
    from .layers import AdapterLayer

_LAZY = {
    "load_adapter": "checkpoint",
    "read_metadata": "checkpoint",
    "save_adapter": "checkpoint",
    "adapter_layers": "inject",
    "inject": "inject",
    "merge": "inject",
    "merge_and_unload": "inject",
    "reattach_norms": "inject",
    "set_compute_path": "inject",
    "trainable_parameters": "inject",
    "unmerge": "inject",
    "AdapterLayer": "layers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """``sah.adapters.inject`` stays the function, as with eager imports: importing the
    submodule of the same name does not bind the module over it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "METHODS",
    "AdapterConfig",
    "AdapterError",
    "AdapterLayer",
    "AdapterWarning",
    "adapter_layers",
    "inject",
    "load_adapter",
    "merge",
    "merge_and_unload",
    "read_metadata",
    "reattach_norms",
    "save_adapter",
    "set_compute_path",
    "trainable_parameters",
    "unmerge",
]
