"""Adapter-only checkpoints: the trained tensors plus what is needed to refuse a wrong base.

A safetensors file holding the adapter factors and magnitudes (and, with ``train_norm`` or
``"full"``, the trained modules' parameters and buffers), with JSON metadata: the config,
the adapted layers, and a SHA-256 fingerprint of every base tensor the checkpoint does not
store (names, dtypes, shapes and bytes, with W0 rather than a merged weight). Loading onto a
model whose base tensors differ raises ``AdapterError`` before anything is changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import AdapterConfig, AdapterError
from .inject import STATE_ATTR, adapter_state, inject
from .layers import AdapterLayer

FORMAT = "sah.adapters/1"
META_KEY = "sah_adapter"


def _base_entries(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state (params and persistent buffers) under its original names."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, AdapterLayer)}
    entries: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        owner = next((n for n in layers if key.startswith(n + ".")), None)
        if owner is None:
            entries[key] = value
            continue
        local = key[len(owner) + 1 :]
        if not local.startswith("base_layer."):
            continue  # factors, magnitude: the adapter itself
        name = f"{owner}.{local[len('base_layer.') :]}"
        layer = layers[owner]
        if local == "base_layer.weight" and layer.merged:
            value = layer._merged_backup
        entries[name] = value
    return entries


def _trained_entries(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything the checkpoint stores, by checkpoint key."""
    state = adapter_state(model)
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            for local, p in module.named_parameters():
                if not local.startswith("base_layer."):
                    out[f"{name}.{local}"] = p
    base = _base_entries(model)
    for name in state.trainable_modules:
        prefix = f"{name}."
        for key, value in base.items():
            if key.startswith(prefix) and "." not in key[len(prefix) :]:
                out[key] = value
    return out


def fingerprint(model: nn.Module, exclude: set[str]) -> str:
    """SHA-256 over the base tensors not in ``exclude`` (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for key, value in sorted(_base_entries(model).items()):
        if key in exclude:
            continue
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_adapter(model: nn.Module, path: str | Path) -> None:
    """Write the adapter of ``model`` (see the module docstring) to ``path`` (safetensors)."""
    state = adapter_state(model)
    trained = _trained_entries(model)
    layers = {
        n: {"class": type(m.base_layer).__name__, "weight_shape": list(m.base_layer.weight.shape)}
        for n, m in model.named_modules()
        if isinstance(m, AdapterLayer)
    }
    metadata = {
        "format": FORMAT,
        "config": state.config.to_dict(),
        "adapted": state.adapted,
        "layers": layers,
        "trainable_modules": state.trainable_modules,
        "fingerprint": fingerprint(model, set(trained)),
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in trained.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(metadata)})


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of an adapter checkpoint."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as exc:  # safetensors raises its own error types
        raise AdapterError(f"{path}: not a readable safetensors file ({exc})") from exc
    if raw is None:
        raise AdapterError(f"{path}: not a sah adapter checkpoint (no '{META_KEY}' metadata)")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise AdapterError(f"{path}: unsupported adapter format {meta.get('format')!r}")
    return meta


def load_adapter(model: nn.Module, path: str | Path) -> list[str]:
    """Load an adapter onto the base model it was trained on; returns the adapted names.

    A plain model gets the checkpoint's adapters injected first; a model that already has
    adapters must have the same config. Refuses (``AdapterError``) any other base model.
    """
    meta = read_metadata(path)
    config = AdapterConfig.from_dict(meta["config"])
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    state = getattr(model, STATE_ATTR, None)
    if state is not None and state.config.to_dict() != config.to_dict():
        raise AdapterError(
            f"{path}: saved with adapter config {config.to_dict()}, but the model has "
            f"{state.config.to_dict()}; load it onto the plain base model instead"
        )
    try:
        actual = fingerprint(model, keys)
    except Exception as exc:
        raise AdapterError(f"{path}: cannot fingerprint the model's base weights ({exc})") from exc
    if actual != meta["fingerprint"]:
        raise AdapterError(
            f"{path}: the adapter was trained on a different base model (fingerprint of the "
            f"base weights {meta['fingerprint'][:12]}..., this model {actual[:12]}...); load it "
            f"onto the base it was trained on"
        )
    adapted = inject(model, config) if state is None else list(state.adapted)
    targets = _trained_entries(model)
    missing, unexpected = sorted(set(targets) - keys), sorted(keys - set(targets))
    if missing or unexpected:
        raise AdapterError(
            f"{path}: tensors do not match the model's adapters "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    merged = [m for m in model.modules() if isinstance(m, AdapterLayer) and m.merged]
    for layer in merged:
        layer.unmerge()
    with safe_open(str(path), framework="pt") as f, torch.no_grad():
        for key, dst in targets.items():
            src = f.get_tensor(key)
            if src.shape != dst.shape:
                raise AdapterError(
                    f"{path}: '{key}' has shape {tuple(src.shape)}, the model {tuple(dst.shape)}"
                )
            dst.copy_(src.to(dtype=dst.dtype, device=dst.device))
    for layer in merged:
        layer.merge()
    return adapted
