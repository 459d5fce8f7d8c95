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

if TYPE_CHECKING:
    from .layers import AdapterLayer

PASS = 10.0  # a memory-bound pass over one channel, in multiply-add equivalents
FUSED_WEIGHT_GRAD = 0.85  # marginal cost of the weight gradient next to the input gradient
TAPS_EFFICIENCY = 1.3  # multiply-adds of the per-tap products are ~1.3x dearer than a conv's


def taps_apply(layer: AdapterLayer) -> bool:
    """The per-tap evaluation handles dense in-stages of (non-transposed) convolutions."""
    geo = layer.geometry
    return geo.kind == "conv" and layer.factors.dense_stage and not geo.is_pointwise


def _input_ratio(layer: AdapterLayer) -> float:
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
    read_x = PASS * geo.c_in * _input_ratio(layer)
    mixes = 2 * PASS * (geo.c_out + rank)  # B^T gy and gy z^T
    dora = 4 * PASS * geo.c_out if layer.is_dora else 0.0  # output scaling, dL/dm
    extra = mixes + dora
    if geo.kind == "linear" or geo.is_pointwise:
        return {"lowrank": 2 * read_x + 2 * rank * geo.in_per_group + extra}
    if not factors.dense_stage:  # CP: projection + depthwise conv on `rank` thin maps
        depthwise = 3 * PASS * max(rank, 4) * taps / 9
        return {"lowrank": 2 * read_x + 2 * rank * geo.in_per_group + depthwise + extra}
    # A dense in-stage through the CPU conv kernels ("lowrank") measured no faster than the
    # weight path at any rank (thin convs are slow, more so with many input channels), so
    # only the per-tap evaluation competes.
    if not taps_apply(layer):
        return {}
    per_pass = taps * geo.in_per_group
    return {"lowrank_taps": 2 * (2 * read_x + TAPS_EFFICIENCY * per_pass * rank) + extra}


def choose_path(layer: AdapterLayer) -> str:
    """The cheapest path by the model: ``weight``, ``lowrank`` or ``lowrank_taps``.

    The constants are CPU measurements; on other devices (not measured) the plain
    autograd ``weight`` path is used.
    """
    if layer.base_layer.weight.device.type != "cpu":
        return "weight"
    costs = {"weight": weight_cost(layer), **lowrank_costs(layer)}
    return min(costs, key=costs.__getitem__)
