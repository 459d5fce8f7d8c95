"""Parameter-efficient adapters for conv and linear layers (pure torch; see ADAPTERS.md).

LoRA family (``lora_c``, ``conv_lora``, ``cp_lora``) and DoRA family (``dora_c``,
``conv_dora``, ``cp_dora``) on ``nn.Linear``, ``nn.Conv{1,2,3}d`` and
``nn.ConvTranspose{1,2,3}d``, plus the baselines ``full`` and ``none`` behind the same API::

    names = inject(model, AdapterConfig("cp_lora", rank=8, targets="decoder"))
    ...train...
    save_adapter(model, "adapter.safetensors")
    plain = merge_and_unload(model)

Imports nothing else of ``sah`` so that it can be taken into another project.
"""

from .checkpoint import load_adapter, read_metadata, save_adapter
from .config import METHODS, AdapterConfig, AdapterError
from .inject import (
    adapter_layers,
    inject,
    merge,
    merge_and_unload,
    set_compute_path,
    trainable_parameters,
    unmerge,
)
from .layers import AdapterLayer

__all__ = [
    "METHODS",
    "AdapterConfig",
    "AdapterError",
    "AdapterLayer",
    "adapter_layers",
    "inject",
    "load_adapter",
    "merge",
    "merge_and_unload",
    "read_metadata",
    "save_adapter",
    "set_compute_path",
    "trainable_parameters",
    "unmerge",
]
