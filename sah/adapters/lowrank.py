"""The low-rank gradient path: one convolution forward, no full weight gradient backward.

With a frozen base weight, a training step of an adapted layer needs the input gradient and
the gradients of the small factors, never the full weight gradient ``dL/dW'`` that plain
autograd on ``conv(x, W0 + s dW)`` computes (as costly as the forward). ``LowRankConv``
computes the forward with the effective weight (one convolution, exactly what the merged
layer computes) and, in the backward, gets the factors' gradients from thin activations:
``dL/dB = s gy z^T`` with ``z = in_stage(x)`` and ``dL/d(in-stage factors)`` by autograd
through ``in_stage`` with the projected gradient ``s B^T gy``. For DoRA the per-channel
scale ``c = m / ||V||`` is an input too, so its gradient (and, through autograd outside,
the exact norm gradient when it is not detached) is correct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .taps import taps_conv, taps_weight_grad


def _mix(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[n, (g, a)] = sum_b weight[g, a, b] x[n, (g, b)]`` over flattened positions."""
    g, a, b = weight.shape
    if x.dim() == 2:  # (tokens, channels) of a linear layer: one group
        return x.matmul(weight[0].t())
    n = x.shape[0]
    spatial = x.shape[2:]
    flat = x.reshape(n * g, b, -1)
    w = weight.unsqueeze(0).expand(n, g, a, b).reshape(n * g, a, b)
    return torch.bmm(w, flat).reshape(n, g * a, *spatial)


def _mix_weight_grad(grad: torch.Tensor, x: torch.Tensor, g: int) -> torch.Tensor:
    """``sum_{n, p} grad[n, (g, a), p] x[n, (g, b), p]`` -> ``(g, a, b)``."""
    if x.dim() == 2:
        return grad.t().matmul(x).unsqueeze(0)
    n = x.shape[0]
    a = grad.shape[1] // g
    b = x.shape[1] // g
    prod = torch.bmm(grad.reshape(n * g, a, -1), x.reshape(n * g, b, -1).transpose(1, 2))
    return prod.reshape(n, g, a, b).sum(0)


class _GroupMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, x)
        return _mix(weight, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        weight, x = ctx.saved_tensors
        grad = grad.contiguous()
        gw = _mix_weight_grad(grad, x, weight.shape[0]) if ctx.needs_input_grad[0] else None
        gx = _mix(weight.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return gw, gx


def group_mix(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-group channel mix (a grouped 1x1 conv / linear map) as batched matrix products.

    ``weight``: ``(g, c_out/g, c_in/g)``; ``x``: ``(n, c_in, ...)`` -> ``(n, c_out, ...)``.
    Faster on CPU than a 1x1 convolution with few channels, and its backward avoids the
    copies autograd makes for a broadcast ``matmul``.
    """
    return _GroupMix.apply(weight, x.contiguous())


@dataclass
class LowRankPlan:
    """What the backward needs besides tensors: the layer and the call's output padding."""

    geometry: Any
    factors: Any
    scale: float
    output_padding: tuple[int, ...] | None
    taps: bool = False  # dense in-stage evaluated per kernel tap (see taps.py)
    out_scale: torch.Tensor | None = None  # a folded norm's per-channel scale (normfold.py)


def _input_grad(plan: LowRankPlan, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor):
    geo = plan.geometry
    if geo.kind == "linear":
        return grad.matmul(weight)
    if geo.is_pointwise:
        g = geo.groups
        if geo.transposed:  # weight (c_in, c_out/g): x -> y mixes with weight^T per group
            w = weight.reshape(g, geo.in_per_group, geo.out_per_group)
        else:
            w = weight.reshape(g, geo.out_per_group, geo.in_per_group).transpose(1, 2)
        return _mix(w, grad)
    output_padding = plan.output_padding or geo.output_padding
    return torch.ops.aten.convolution_backward(
        grad,
        x,
        weight,
        None,
        list(geo.stride),
        list(geo.padding),
        list(geo.dilation),
        geo.transposed,
        list(output_padding),
        geo.groups,
        [True, False, False],
    )[0]


def _forward_op(plan: LowRankPlan, x: torch.Tensor, weight: torch.Tensor, bias):
    geo = plan.geometry
    if geo.is_pointwise:
        g = geo.groups
        if geo.transposed:
            w = weight.reshape(g, geo.in_per_group, geo.out_per_group).transpose(1, 2)
        else:
            w = weight.reshape(g, geo.out_per_group, geo.in_per_group)
        out = _mix(w, x)
        if bias is not None:
            out = out + bias.reshape((-1,) + (1,) * (out.dim() - 2))
        return out
    return geo.apply(x, weight, bias, plan.output_padding)


class LowRankConv(torch.autograd.Function):
    """``y = c * op(x, V) + bias`` (DoRA) or ``y = op(x, W') + bias`` (LoRA, ``c`` is None).

    Inputs: the padded input, the effective weight (detached), the frozen bias, the DoRA
    channel scale, the out-stage factor and the in-stage parameters (both carrying grad).
    """

    @staticmethod
    def forward(ctx: Any, x, weight, bias, channel_scale, out_factor, plan, *stage_params):
        ctx.plan = plan
        if channel_scale is None:
            out = _forward_op(plan, x, weight, bias)
            ctx.save_for_backward(x, weight, out_factor, *stage_params)
            ctx.dora = False
            return out
        direction_out = _forward_op(plan, x, weight, None)
        shape = (1, -1) + (1,) * (direction_out.dim() - 2)
        if bias is None:
            out = direction_out * channel_scale.reshape(shape)
        else:
            out = torch.addcmul(bias.reshape(shape), direction_out, channel_scale.reshape(shape))
        ctx.save_for_backward(x, weight, out_factor, channel_scale, direction_out, *stage_params)
        ctx.dora = True
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        plan: LowRankPlan = ctx.plan
        geo = plan.geometry
        grad = grad.contiguous()
        if ctx.dora:
            x, weight, out_factor, channel_scale, direction_out, *stage_params = ctx.saved_tensors
            effective = geo.scale_channels(weight, channel_scale)
        else:
            x, weight, out_factor, *stage_params = ctx.saved_tensors
            channel_scale = direction_out = None
            effective = weight
        needs = ctx.needs_input_grad
        grad_x = _input_grad(plan, grad, x, effective) if needs[0] else None
        grad_bias = None
        if needs[2]:
            grad_bias = grad.sum(dim=[d for d in range(grad.dim()) if d != 1])
        grad_scale = None
        if ctx.dora and needs[3]:
            n, c = grad.shape[:2]
            grad_scale = torch.linalg.vecdot(
                grad.reshape(n, c, -1), direction_out.reshape(n, c, -1)
            ).sum(0)

        g = geo.groups
        # Constant per-output-channel factors between the update and the output: DoRA's
        # m / ||V|| and a folded norm's scale.
        row_scale = None
        for factor in (channel_scale, plan.out_scale):
            if factor is not None:
                factor = factor.detach().reshape(g, -1, 1)
                row_scale = factor if row_scale is None else row_scale * factor
        mix = out_factor if row_scale is None else out_factor * row_scale  # (g, c_out/g, R)
        mix = mix.detach()
        stage_grads: list[torch.Tensor | None] = [None] * len(stage_params)
        grad_out_factor = None
        want_stage = [needs[6 + k] for k in range(len(stage_params))]
        if needs[4] or any(want_stage):
            x = x.detach()
            with torch.enable_grad():
                leaves = [
                    p.detach().requires_grad_(w)
                    for p, w in zip(stage_params, want_stage, strict=True)
                ]
                if plan.taps:
                    stage_weight = plan.factors.stage_weight(leaves)
                    z = taps_conv(x, stage_weight.detach(), geo)
                else:
                    z = plan.factors.in_stage(x, leaves, plan.output_padding)
            if needs[4]:
                grad_out_factor = _mix_weight_grad(grad, z.detach(), g) * plan.scale
                if row_scale is not None:
                    grad_out_factor = grad_out_factor * row_scale
            if any(want_stage):
                grad_z = _mix(mix.transpose(1, 2) * plan.scale, grad)
                wanted = [p for p, w in zip(leaves, want_stage, strict=True) if w]
                if plan.taps:
                    grad_weight = taps_weight_grad(x, grad_z, geo)
                    computed = iter(torch.autograd.grad(stage_weight, wanted, grad_weight))
                else:
                    computed = iter(torch.autograd.grad(z, wanted, grad_z))
                stage_grads = [next(computed) if w else None for w in want_stage]
        return grad_x, None, grad_bias, grad_scale, grad_out_factor, None, *stage_grads
