"""Which compute path a training step of an adapted layer should take (a cost model).

Both paths compute the same forward. They differ in what the backward adds to the input
gradient that any frozen-base step needs:

- ``weight``: the full weight gradient ``dL/dW'`` (one convolution's worth of work, reading
  the input and the output gradient), then cheap products into the factors;
- ``lowrank``: the in-stage recomputed on the input plus its factor gradient, and two
  channel mixes with the output gradient.

Costs are in multiply-adds per output position. Thin convolutions (few output channels) run
far below peak on CPU, so a thin pass is charged as if it had at least ``THIN_FLOOR``
channels; the constants come from measurements on the 2-core CPU of the lab's benchmark
(``benchmarks/bench_adapters.py`` reports both paths next to ``auto`` to check them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .layers import AdapterLayer

THIN_FLOOR = 12  # a 3x3 conv with <= 16 outputs costs about as much as one with 12
FUSED_WEIGHT_GRAD = 0.75  # input + weight gradient in one call cost ~1.75x one of them
MIX_COST = 2.0  # a per-pixel channel mix is memory-bound: charge 2 per channel touched


def lowrank_cost(layer: AdapterLayer) -> float:
    geo = layer.geometry
    factors = layer.factors
    rank = factors.stage_rank * geo.groups  # channels between the two stages
    k = geo.kernel_numel
    mixes = MIX_COST * (geo.c_out + rank) * 2
    if geo.kind == "linear" or geo.is_pointwise:
        return 2.0 * rank * (geo.c_in + geo.c_out) / geo.groups + mixes
    if type(factors).__name__ == "CPFactors":
        projection = 2.0 * geo.c_in * max(factors.rank, 4)
        depthwise = 3.0 * max(rank, THIN_FLOOR) * k
        return projection + depthwise + mixes
    thin = max(rank, THIN_FLOOR) * geo.in_per_group * k
    return 2.0 * thin + mixes


def weight_cost(layer: AdapterLayer) -> float:
    geo = layer.geometry
    return FUSED_WEIGHT_GRAD * geo.c_out * geo.in_per_group * geo.kernel_numel


def prefer_lowrank(layer: AdapterLayer, x: torch.Tensor) -> bool:
    """True when the low-rank gradient path is expected to be cheaper for this layer."""
    return lowrank_cost(layer) < weight_cost(layer)
