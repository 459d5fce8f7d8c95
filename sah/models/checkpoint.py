"""Load weights from a user's file into any sah model, with errors that say which layers differ.

Files are read without executing pickled code (``torch.load(weights_only=True)`` or
safetensors) and never downloaded. Accepted: a plain state dict (``.pt``, ``.pth``, ...), a
Lightning checkpoint (its ``state_dict``; the task modules keep the network as ``net``, whose
prefix is stripped and whose siblings, such as loss buffers, are dropped) and ``.safetensors``.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sah.errors import DataError

LIGHTNING_NET_PREFIX = "net."
_SHOWN = 5  # layer names quoted per kind of mismatch


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Tensors of a weights file and whether it was a Lightning checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path,
            "weights file not found",
            "check the path (relative paths start at the working directory)",
        )
    if path.suffix == ".safetensors":
        return _read_safetensors(path), False
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _unsafe_globals(path, error)
        if not refused:
            raise DataError(
                path, f"cannot be read as a torch file ({error})", "check that the file is complete"
            ) from error
        raise DataError(
            path,
            f"holds pickled Python objects ({', '.join(refused[:_SHOWN])}); only tensors and "
            "plain containers are unpickled, since unpickling can run code",
            "save model.state_dict(), or a Lightning checkpoint whose hyper_parameters are plain "
            "types (e.g. OmegaConf.to_container(cfg)), or export to .safetensors",
        ) from error
    except Exception as error:
        raise DataError(
            path, f"cannot be read as a torch file ({error})", "check that the file is complete"
        ) from error
    is_lightning = isinstance(content, Mapping) and (
        "pytorch-lightning_version" in content or path.suffix == ".ckpt"
    )
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        content = content["state_dict"]
    elif is_lightning:
        raise DataError(
            path, "is a checkpoint without a 'state_dict' entry", "save the model's weights"
        )
    return _tensors_only(path, content), is_lightning


def _unsafe_globals(path: Path, error: Exception) -> list[str]:
    """The classes that ``weights_only`` refused; empty when the file is simply unreadable."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return re.findall(r"Unsupported global: GLOBAL (\S+)", str(error))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise DataError(
            path, f"cannot be read as safetensors ({error})", "check that the file is complete"
        ) from error


def _tensors_only(path: Path, content: object) -> dict[str, torch.Tensor]:
    if not isinstance(content, Mapping):
        raise DataError(
            path, f"holds a {type(content).__name__}, not a state dict", "save model.state_dict()"
        )
    not_tensors = [str(k) for k, v in content.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise DataError(
            path,
            f"entries that are not tensors: {_first(not_tensors)}",
            "save model.state_dict(), not a dict of other objects",
        )
    return {str(k): v for k, v in content.items()}


def remap_keys(
    state: Mapping[str, torch.Tensor], prefix_map: Mapping[str, str], drop_unmapped: bool = False
) -> dict[str, torch.Tensor]:
    """Replace key prefixes (the longest matching one wins); keep or drop keys none matches."""
    prefixes = sorted(prefix_map, key=len, reverse=True)
    remapped = {}
    for key, value in state.items():
        old = next((p for p in prefixes if key.startswith(p)), None)
        if old is not None:
            remapped[prefix_map[old] + key[len(old) :]] = value
        elif not drop_unmapped:
            remapped[key] = value
    return remapped


def load_weights(
    model: nn.Module,
    path: str | Path,
    strict: bool = True,
    prefix_map: Mapping[str, str] | None = None,
) -> None:
    """Load a weights file into ``model`` in place.

    ``prefix_map`` renames key prefixes first (e.g. ``{"module.": ""}``). For a Lightning
    checkpoint it defaults to ``{"net.": ""}``, and keys outside the mapped prefixes (losses,
    metrics) are dropped. ``strict=False`` tolerates missing and unexpected layers (partial
    transfer); a layer whose shape differs is always an error, since loading around it
    silently would train a different model.
    """
    path = Path(path)
    state, is_lightning = read_state_dict(path)
    if prefix_map is None and is_lightning:
        found = _top_level_prefixes(state)
        state = remap_keys(state, {LIGHTNING_NET_PREFIX: ""}, drop_unmapped=True)
        if not state:
            raise DataError(
                path,
                f"Lightning checkpoint without '{LIGHTNING_NET_PREFIX}' weights (found {found})",
                "pass prefix_map={'<attribute>.': ''} naming the attribute that holds the network",
            )
    elif prefix_map:
        # In a Lightning checkpoint, keys outside the mapped prefixes belong to the rest of the
        # LightningModule (losses, metrics), not to the network.
        state = remap_keys(state, prefix_map, drop_unmapped=is_lightning)

    load_state(model, state, path, strict)


def load_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, strict: bool = True
) -> None:
    """Load ``state`` (keys already in the model's naming) read from ``path`` into ``model``.

    Missing, unexpected and reshaped layers are named in one ``DataError`` (see ``load_weights``
    for ``strict``), so every loader of weights reports a misfit the same way.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    nothing_matches = len(unexpected) == len(state)
    if mismatched or nothing_matches or (strict and (missing or unexpected)):
        raise DataError(
            Path(path),
            f"weights do not fit {type(model).__name__}: "
            + "; ".join(
                f"{len(names)} {kind}: {_first(names)}"
                for kind, names in (
                    ("missing from the file", missing),
                    ("unexpected in the file", unexpected),
                    ("with another shape", mismatched),
                )
                if names
            ),
            _fix_hint(state, expected),
        )
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def _first(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def _top_level_prefixes(state: Mapping[str, torch.Tensor]) -> list[str]:
    return sorted({key.split(".", 1)[0] + "." for key in state})


def _fix_hint(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
    """Suggest a prefix_map when stripping or adding one common prefix would make keys match."""
    for prefix in _top_level_prefixes(state):
        if (
            sum(k[len(prefix) :] in expected for k in state if k.startswith(prefix))
            > len(expected) // 2
        ):
            return f"the file's keys carry a prefix: pass prefix_map={{'{prefix}': ''}}"
    for prefix in _top_level_prefixes(expected):
        if sum(prefix + k in expected for k in state) > len(state) // 2:
            return f"the model's keys carry a prefix: pass prefix_map={{'': '{prefix}'}}"
    return (
        "build the model with the architecture the weights were trained with (channels, levels, "
        "in/out channels), or pass strict=False to load a subset"
    )
