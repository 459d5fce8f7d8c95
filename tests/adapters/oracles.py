"""Independent computations of W' from factor values, written from docs/ADAPTERS.md with loops.

Nothing here calls into ``sah.adapters``: each function takes the raw factor tensors and the
base layer, and builds the effective weight by index arithmetic (``cp_lora`` through
``tensorly.cp_to_tensor``), so the tests compare the library with the spec, not with itself.
"""

from __future__ import annotations

import copy
import math

import tensorly as tl
import torch
from torch import nn

TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

tl.set_backend("pytorch")


def layer_dims(layer: nn.Module) -> tuple[int, int, int, tuple[int, ...]]:
    """(c_in, c_out, groups, kernel) of a linear or conv layer."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features, 1, ()
    return layer.in_channels, layer.out_channels, layer.groups, tuple(layer.kernel_size)


def assemble(layer: nn.Module, per_group: list[torch.Tensor]) -> torch.Tensor:
    """Place each group's update ``(c_out/g, c_in/g, k...)`` into the layer's weight layout."""
    c_in, c_out, g, _ = layer_dims(layer)
    o, i = c_out // g, c_in // g
    out = torch.zeros_like(layer.weight)
    for gi, block in enumerate(per_group):
        for oo in range(o):
            for ii in range(i):
                if isinstance(layer, TRANSPOSED):  # (c_in, c_out/g, k...)
                    out[gi * i + ii, oo] = block[oo, ii]
                else:  # (c_out, c_in/g, k...) or (out, in)
                    out[gi * o + oo, ii] = block[oo, ii]
    return out


def delta_conv_lora(layer: nn.Module, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """dW = B A per group, A: (r, c_in/g * prod(k)), B: (c_out/g, r)."""
    c_in, c_out, g, k = layer_dims(layer)
    blocks = []
    for gi in range(g):
        flat = B[gi] @ A[gi]  # (o, i * prod k)
        blocks.append(flat.reshape(c_out // g, c_in // g, *k))
    return assemble(layer, blocks)


def delta_lora_c(layer: nn.Module, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """dW[o, i, a, rest] = (B A)[o * k1 + a, i * prod(rest) + flat(rest)] per group."""
    c_in, c_out, g, k = layer_dims(layer)
    o, i = c_out // g, c_in // g
    k1, rest = k[0], k[1:]
    n_rest = math.prod(rest)
    blocks = []
    for gi in range(g):
        m = B[gi] @ A[gi]  # (o k1, i n_rest)
        block = torch.zeros(o, i, *k, dtype=m.dtype)
        for oo in range(o):
            for ii in range(i):
                for a in range(k1):
                    row = m[oo * k1 + a, ii * n_rest : (ii + 1) * n_rest]
                    block[oo, ii, a] = row.reshape(rest) if rest else row[0]
        blocks.append(block)
    return assemble(layer, blocks)


def delta_cp(layer: nn.Module, U, V, Ks) -> torch.Tensor:
    """Per group, ``tensorly.cp_to_tensor`` of (U, V, K1, ..., Kd) with unit weights."""
    _, _, g, _ = layer_dims(layer)
    blocks = []
    for gi in range(g):
        factors = [U[gi], V[gi], *[kf[gi] for kf in Ks]]
        weights = torch.ones(U.shape[-1], dtype=U.dtype)
        blocks.append(tl.cp_to_tensor((weights, factors)))
    return assemble(layer, blocks)


def dora_weight(layer: nn.Module, direction: torch.Tensor, magnitude: torch.Tensor):
    """W'[c] = m[c] V[c] / ||V[c]|| over each output channel's slice of the layer's layout."""
    c_in, c_out, g, _ = layer_dims(layer)
    o, i = c_out // g, c_in // g
    out = torch.empty_like(direction)
    for c in range(c_out):
        if isinstance(layer, TRANSPOSED):
            gi, oo = divmod(c, o)
            index = (slice(gi * i, (gi + 1) * i), oo)
        else:
            index = (c,)
        out[index] = magnitude[c] * direction[index] / direction[index].norm()
    return out


def plain_layer_with(layer: nn.Module, weight: torch.Tensor) -> nn.Module:
    """A copy of the plain base layer with ``weight`` substituted."""
    ref = copy.deepcopy(layer)
    with torch.no_grad():
        ref.weight.copy_(weight)
    return ref
