"""How an adaptable layer applies its weight, so every update honours the base layer exactly.

A ``Geometry`` records one ``nn.Linear``, ``nn.ConvNd`` or ``nn.ConvTransposeNd``: channels,
groups, kernel, stride, padding (mode), dilation, output padding. It converts weights between
the layer's layout and the canonical layout ``(groups, c_out/g, c_in/g, k1, ..., kd)`` in
which the factorisations are defined (a transposed conv stores ``(c_in, c_out/g, k...)``), and
it applies the layer's operation with another weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from .config import AdapterError

CONV_TYPES: dict[type[nn.Module], tuple[int, bool]] = {
    nn.Conv1d: (1, False),
    nn.Conv2d: (2, False),
    nn.Conv3d: (3, False),
    nn.ConvTranspose1d: (1, True),
    nn.ConvTranspose2d: (2, True),
    nn.ConvTranspose3d: (3, True),
}
SUPPORTED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, *CONV_TYPES)

_PAD_MODES = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


@dataclass(frozen=True)
class Geometry:
    """The shape and the operation of one adaptable layer."""

    kind: str  # "linear", "conv" or "conv_transpose"
    c_in: int
    c_out: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]  # symmetric zero padding done by the convolution itself
    dilation: tuple[int, ...]
    output_padding: tuple[int, ...]
    prepad: tuple[int, ...] | None  # F.pad amounts applied first (padding modes, odd 'same')
    prepad_mode: str

    @property
    def dims(self) -> int:
        return len(self.kernel)

    @property
    def transposed(self) -> bool:
        return self.kind == "conv_transpose"

    @property
    def out_per_group(self) -> int:
        return self.c_out // self.groups

    @property
    def in_per_group(self) -> int:
        return self.c_in // self.groups

    @property
    def kernel_numel(self) -> int:
        n = 1
        for k in self.kernel:
            n *= k
        return n

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        return (self.groups, self.out_per_group, self.in_per_group, *self.kernel)

    @property
    def is_pointwise(self) -> bool:
        """A 1x1 (x1) convolution that only mixes channels, pixel by pixel."""
        return (
            self.kind != "linear"
            and all(k == 1 for k in self.kernel)
            and all(s == 1 for s in self.stride)
            and not any(self.padding)
            and not any(self.output_padding)
            and self.prepad is None
        )

    # -- layouts ---------------------------------------------------------------------------
    def to_canonical(self, weight: torch.Tensor) -> torch.Tensor:
        """Layer layout -> ``(g, c_out/g, c_in/g, k...)`` (a view where possible)."""
        g, o, i = self.groups, self.out_per_group, self.in_per_group
        if self.transposed:
            return weight.reshape(g, i, o, *self.kernel).transpose(1, 2)
        return weight.reshape(g, o, i, *self.kernel)

    def from_canonical(self, canonical: torch.Tensor) -> torch.Tensor:
        """``(g, c_out/g, c_in/g, k...)`` -> the layer's own weight layout."""
        if self.transposed:
            return canonical.transpose(1, 2).reshape(self.c_in, self.out_per_group, *self.kernel)
        if self.kind == "linear":
            return canonical.reshape(self.c_out, self.c_in)
        return canonical.reshape(self.c_out, self.in_per_group, *self.kernel)

    def channel_norm(self, weight: torch.Tensor) -> torch.Tensor:
        """L2 norm of each output channel's slice (over input channels and kernel), ``(c_out,)``."""
        canonical = self.to_canonical(weight)
        return canonical.reshape(self.groups, self.out_per_group, -1).norm(dim=2).reshape(-1)

    def scale_channels(self, weight: torch.Tensor, per_channel: torch.Tensor) -> torch.Tensor:
        """Multiply each output channel's slice of ``weight`` by ``per_channel[c]``."""
        if self.transposed:
            scaled = weight.reshape(self.groups, self.in_per_group, self.out_per_group, -1)
            factor = per_channel.reshape(self.groups, 1, self.out_per_group, 1)
            return (scaled * factor).reshape(weight.shape)
        return weight * per_channel.reshape((-1,) + (1,) * (weight.dim() - 1))

    # -- the operation ---------------------------------------------------------------------
    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.prepad is None:
            return x
        if self.prepad_mode == "constant":
            return F.pad(x, self.prepad)
        return F.pad(x, self.prepad, mode=self.prepad_mode)

    def apply(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        output_padding: tuple[int, ...] | None = None,
        groups: int | None = None,
    ) -> torch.Tensor:
        """The layer's operation on an already padded input (see ``pad_input``)."""
        if self.kind == "linear":
            return F.linear(x, weight, bias)
        return torch.ops.aten.convolution(
            x,
            weight,
            bias,
            list(self.stride),
            list(self.padding),
            list(self.dilation),
            self.transposed,
            list(self.output_padding if output_padding is None else output_padding),
            self.groups if groups is None else groups,
        )


def _normalise_padding(layer: _ConvNd, dims: int) -> tuple[tuple[int, ...], tuple | None, str]:
    """(symmetric conv padding, F.pad amounts or None, F.pad mode) equivalent to the layer's."""
    mode = getattr(layer, "padding_mode", "zeros")
    padding = layer.padding
    if mode != "zeros":
        # nn.ConvNd pads with F.pad(..., _reversed_padding_repeated_twice, mode) then convolves.
        return (0,) * dims, tuple(layer._reversed_padding_repeated_twice), _PAD_MODES[mode]
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * dims, None, "constant"
        totals = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size, strict=True)]
        if all(t % 2 == 0 for t in totals):
            return tuple(t // 2 for t in totals), None, "constant"
        return (0,) * dims, tuple(layer._reversed_padding_repeated_twice), "constant"
    return tuple(padding), None, "constant"


def geometry_of(layer: nn.Module, name: str) -> Geometry:
    """Describe ``layer`` or raise ``AdapterError`` naming it when it cannot be adapted."""
    cls = type(layer)
    if cls not in SUPPORTED_TYPES:
        supported = ", ".join(t.__name__ for t in SUPPORTED_TYPES)
        raise AdapterError(
            f"layer '{name}' ({cls.__name__}) cannot be adapted: only exact {supported} layers "
            f"are (a subclass may compute something else than the plain layer)"
        )
    weight = getattr(layer, "weight", None)
    uninitialised = isinstance(weight, nn.parameter.UninitializedParameter)
    if not isinstance(weight, torch.Tensor) or uninitialised:
        raise AdapterError(f"layer '{name}' has no initialised weight; run one forward first")
    if cls is nn.Linear:
        lin = cast(nn.Linear, layer)
        return Geometry(
            "linear", lin.in_features, lin.out_features, 1, (), (), (), (), (), None, "constant"
        )
    dims, transposed = CONV_TYPES[cls]
    conv = cast(_ConvNd, layer)
    padding, prepad, prepad_mode = _normalise_padding(conv, dims)
    return Geometry(
        kind="conv_transpose" if transposed else "conv",
        c_in=conv.in_channels,
        c_out=conv.out_channels,
        groups=conv.groups,
        kernel=tuple(conv.kernel_size),
        stride=tuple(conv.stride),
        padding=padding,
        dilation=tuple(conv.dilation),
        output_padding=tuple(conv.output_padding) if transposed else (0,) * dims,
        prepad=prepad,
        prepad_mode=prepad_mode,
    )
