"""Which compute path a training step of an adapted layer takes (a cost model).

Every path computes the same forward (one op with W') and the input gradient that any
frozen-base step needs. They differ in how the factor gradients are obtained:

- ``weight``: plain autograd through W' computes the full weight gradient ``dL/dW'`` (about
  one convolution's work), then cheap products into the factors;
- ``lowrank``: the in-stage ``z`` recomputed on the input, its factor gradient through the
  projected output gradient, and two channel mixes with the output gradient (``lowrank.py``);
  for a dense in-stage the thin convolutions either go to the CPU conv kernels or, with
  ``lowrank_taps``, to one matrix product per kernel tap (``taps.py``); CP-LoRA's in-stage is
  separable (a channel projection and a depthwise conv), cheap at any rank it is used with.

Costs are in multiply-adds per output position, with corrections measured on the
benchmark's CPU (2-core AMD EPYC, PyTorch 2.13, 32- and 96-channel 3x3 convs at 256x256):
a pass that streams a map through memory costs about ``PASS`` per channel whatever it
computes, and the per-tap products are ``TAPS_EFFICIENCY`` times dearer than a conv's.
``benchmarks/bench_adapters.py --paths weight lowrank lowrank_taps`` times each path to
check the choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .layers import AdapterLayer

PASS = 10.0  # a memory-bound pass over one channel, in multiply-add equivalents (1 thread)
FUSED_WEIGHT_GRAD = 0.85  # marginal cost of the weight gradient next to the input gradient
TAPS_EFFICIENCY = 1.3  # multiply-adds of the per-tap products are ~1.3x dearer than a conv's
# Convolutions scale with threads, memory-bound passes and thin products much less: their
# relative cost grows ~threads**0.8 (measured with 1 and 2 threads).
THREAD_EXPONENT = 0.8
CP_THIN_PASSES = 16
DORA_PASSES = 4  # scale the output (2), dL/dm (2): extra passes over c_out maps
# The low-rank backward issues ~20 small ops more than plain autograd: ~0.5 ms on this CPU,
# in the model's units (multiply-adds at 2 threads: ~19 ps each).
LOWRANK_OVERHEAD = 2.7e7
MARGIN = 0.9  # take a low-rank path only when clearly cheaper: the weight path is plain autograd


def taps_apply(layer: AdapterLayer) -> bool:
    """The per-tap evaluation handles dense in-stages of (non-transposed) convolutions."""
    geo = layer.geometry
    return geo.kind == "conv" and layer.factors.dense_stage and not geo.is_pointwise


def input_ratio(layer: AdapterLayer) -> float:
    """Input positions per output position."""
    n = 1
    for s in layer.geometry.stride:
        n *= s
    return 1.0 / n if layer.geometry.transposed else float(n)


def weight_cost(layer: AdapterLayer) -> float:
    geo = layer.geometry
    return FUSED_WEIGHT_GRAD * geo.c_out * geo.in_per_group * geo.kernel_numel


def lowrank_costs(layer: AdapterLayer) -> dict[str, float]:
    """Cost of each low-rank variant that applies to the layer."""
    geo = layer.geometry
    factors = layer.factors
    rank = factors.stage_rank * geo.groups  # channels between the two stages
    taps = geo.kernel_numel
    slowdown = torch.get_num_threads() ** THREAD_EXPONENT
    per_channel = PASS * slowdown
    read_x = per_channel * geo.c_in * input_ratio(layer)
    mixes = 2 * per_channel * (geo.c_out + rank)  # B^T gy and gy z^T
    dora = DORA_PASSES * per_channel * geo.c_out if layer.is_dora else 0.0
    extra = mixes + dora
    if geo.kind == "linear" or geo.is_pointwise:
        return {"lowrank": 2 * read_x + 2 * rank * geo.in_per_group + extra}
    if not factors.dense_stage:  # CP: projection + depthwise conv on `rank` thin maps
        # The thin maps are written and read ~16 times (projection, layout copies, depthwise
        # conv and its two gradients, the mixes), measured at ranks 1-16.
        thin_maps = CP_THIN_PASSES * per_channel * rank * taps / 9
        return {"lowrank": 2 * read_x + 2 * rank * geo.in_per_group + thin_maps + extra}
    # A dense in-stage through the CPU conv kernels ("lowrank") measured no faster than the
    # weight path at any rank (thin convs are slow, more so with many input channels), so
    # only the per-tap evaluation competes.
    if not taps_apply(layer):
        return {}
    per_pass = taps * geo.in_per_group
    products = TAPS_EFFICIENCY * slowdown * per_pass * rank
    return {"lowrank_taps": 2 * (2 * read_x + products) + extra}


def choose_path(layer: AdapterLayer, positions: int = 1 << 17) -> str:
    """The cheapest path by the model: ``weight``, ``lowrank`` or ``lowrank_taps``.

    ``positions``: output positions of the call (batch times spatial size, or tokens). The
    constants are CPU measurements; on other devices (not measured) the plain autograd
    ``weight`` path is used.
    """
    if layer.base_layer.weight.device.type != "cpu":
        return "weight"
    weight = weight_cost(layer) * positions
    best, best_cost = "weight", weight
    for path, cost in lowrank_costs(layer).items():
        total = cost * positions + LOWRANK_OVERHEAD
        if total < MARGIN * weight and total < best_cost:
            best, best_cost = path, total
    return best
