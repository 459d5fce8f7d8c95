"""Transfer learning into a classifier: load a checkpoint's backbone, "where shapes allow".

"Where shapes allow" means, precisely: after stripping ``prefix`` from the file's keys (and a
Lightning checkpoint's ``net.``), **every** tensor of the model's ``backbone`` module group is in
the file under the same name with the same shape. A partial match is refused: loading the few
layers that happen to fit and leaving the rest random would train a different model than the
one asked for, silently. One relaxation: a first convolution trained on 3-channel input (the
study fed grey volumes as 3 channels) loads into a 1-channel model by summing over the input
channels, which gives the same response to a grey volume repeated over the 3 channels.

What transfers into the 3D DenseNet-121 therefore:

* a checkpoint of this task (``init_from=mlflow:<run_id>`` or its ``best.ckpt``), e.g. trained
  on another cohort or outcome;
* your own DenseNet-121 weights with MONAI's layer names (``features.denseblock1...``),
  possibly under a prefix (``task.transfer.prefix=encoder.``), e.g. the encoder of a 3D
  segmentation network built on MONAI's DenseNet-121 features.

sah's TBI-pretrained segmentation networks (MV-Unet and UNet are 2D; Swin UNETR is a
transformer) share no layer with DenseNet-121, so their encoders cannot transfer here; the
error says so, and the fix is to start from scratch (``init_from=null``) or give DenseNet-121
weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from sah.errors import ConfigError, DataError
from sah.models.checkpoint import LIGHTNING_NET_PREFIX, read_state_dict, remap_keys
from sah.models.groups import group_parameter_names

log = logging.getLogger(__name__)

PARTS = ("backbone", "all")
_SHOWN = 4


def load_pretrained(
    net: nn.Module, path: str | Path, part: str = "backbone", prefix: str | None = ""
) -> list[str]:
    """Load ``part`` (``backbone``, or ``all`` = backbone and head) of ``net`` from ``path``.

    Returns the names of the loaded tensors. Raises ``DataError`` naming what is missing or of
    another shape unless everything of ``part`` fits (module docstring).
    """
    if part not in PARTS:
        raise ConfigError("task.transfer.load", f"must be one of {PARTS}, got {part!r}")
    path = Path(path)
    state, is_lightning = read_state_dict(path)
    if is_lightning:
        state = remap_keys(state, {LIGHTNING_NET_PREFIX: ""}, drop_unmapped=True) or state
    if prefix:
        state = remap_keys(state, {prefix: ""}, drop_unmapped=True)

    expected = net.state_dict()
    wanted = _wanted_keys(net, expected, part)
    selected: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    for key in wanted:
        if key not in state:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
            continue
        tensor = _fit(state[key], expected[key])
        if tensor is None:
            mismatched.append(
                f"{key} (file {tuple(state[key].shape)}, model {tuple(expected[key].shape)})"
            )
        else:
            selected[key] = tensor
    if not selected:
        raise DataError(path, _foreign_network(state, wanted, prefix), _FOREIGN_FIX)
    if missing or mismatched:
        problems = [
            f"{len(names)} {kind}: {_first(names)}"
            for kind, names in (("missing", missing), ("with another shape", mismatched))
            if names
        ]
        raise DataError(
            path,
            f"does not hold the whole {part} of {type(net).__name__} ({'; '.join(problems)})",
            "transfer needs every backbone tensor with the model's shape: build the model as the "
            "weights were trained (model.in_channels, model.spatial_dims), fix "
            "task.transfer.prefix, or train from scratch (init_from=null)",
        )
    net.load_state_dict(selected, strict=False)
    log.info("loaded %d tensors (%s) from %s", len(selected), part, path)
    return sorted(selected)


def _wanted_keys(net: nn.Module, expected: dict[str, torch.Tensor], part: str) -> list[str]:
    """State-dict keys (parameters and buffers) under the modules of ``part``."""
    if part == "all":
        return list(expected)
    params = group_parameter_names(net, "backbone")
    modules = {name.rsplit(".", 1)[0] for name in params}
    return [k for k in expected if k in params or k.rsplit(".", 1)[0] in modules]


def _fit(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``source`` as ``target``'s shape when allowed: equal, or a 3-channel first convolution
    summed to 1 channel."""
    if source.shape == target.shape:
        return source
    rgb_to_grey = (
        source.ndim == target.ndim >= 3
        and source.shape[1] == 3
        and target.shape[1] == 1
        and source.shape[0] == target.shape[0]
        and source.shape[2:] == target.shape[2:]
    )
    return source.sum(dim=1, keepdim=True) if rgb_to_grey else None


_FOREIGN_FIX = (
    "give DenseNet-121 weights (a task=mortality checkpoint, or MONAI DenseNet-121 layers, "
    "with task.transfer.prefix for the part of the file's names before 'features.'), or train "
    "from scratch with init_from=null and task.freeze_epochs=0"
)


def _foreign_network(state: dict[str, torch.Tensor], wanted: list[str], prefix: str | None) -> str:
    convs = [t for k, t in state.items() if k.endswith("weight") and t.ndim >= 4]
    kind = ""
    if convs:
        dims = {t.ndim - 2 for t in convs}
        kind = f" a {'/'.join(f'{d}D' for d in sorted(dims))} network whose"
    example = ", ".join(list(state)[:_SHOWN]) or "none"
    prefix_note = f" after removing prefix {prefix!r}" if prefix else ""
    return (
        f"holds{kind or ''} layers (e.g. {example}) that are not a DenseNet-121 backbone: none "
        f"of its {len(state)} tensors{prefix_note} matches the model's names and shapes "
        f"(e.g. {', '.join(wanted[:2])}); a segmentation encoder transfers only if it is a "
        "DenseNet-121 feature extractor"
    )


def _first(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")
