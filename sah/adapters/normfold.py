"""A frozen BatchNorm after an adapted convolution, applied by the convolution itself.

With frozen running statistics a BatchNorm is a per-channel affine map ``y -> a y + b``.
While its adapter layer is unmerged, the layer applies that map through its weight and bias
(where it costs nothing) and the norm passes its input through: a training step skips the
norm's forward and backward passes over the activations (adapter steps of the multi-view Unet
4-9 % faster on CPU, ``benchmarks/results/adapters.md``). Outputs and gradients are those of
conv then norm. A merged layer leaves the norm to run as usual. "After" means next in a plain
``nn.Sequential``, or first in the plain Sequential that comes next (MONAI's ``ADN``).

The norm keeps its parameters, buffers and state-dict keys; only its class becomes a
pass-through subclass (still an ``nn.BatchNormNd``) until ``merge_and_unload`` restores it.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _PassThroughWhileFolded:
    """Mixin: ``forward`` returns its input while ``folded`` is set by the adapter layer."""

    folded = False

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return input
        return super().forward(input)  # type: ignore[misc]


class FoldedBatchNorm1d(_PassThroughWhileFolded, nn.BatchNorm1d):
    pass


class FoldedBatchNorm2d(_PassThroughWhileFolded, nn.BatchNorm2d):
    pass


class FoldedBatchNorm3d(_PassThroughWhileFolded, nn.BatchNorm3d):
    pass


FOLDED_CLASS: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: FoldedBatchNorm1d,
    nn.BatchNorm2d: FoldedBatchNorm2d,
    nn.BatchNorm3d: FoldedBatchNorm3d,
}
ORIGINAL_CLASS = {folded: original for original, folded in FOLDED_CLASS.items()}
NORM_DIMS: dict[type[nn.Module], int] = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}


def can_fold(norm: nn.Module, conv_dims: int, channels: int) -> bool:
    """A plain BatchNorm of the conv's dimensionality and width, frozen, with running stats."""
    bn = cast(_BatchNorm, norm)  # read below only once type(norm) is a plain BatchNorm
    return (
        type(norm) in FOLDED_CLASS
        and NORM_DIMS[type(norm)] == conv_dims
        and bn.num_features == channels
        and bn.track_running_stats
        and bn.running_mean is not None
        and not any(p.requires_grad for p in norm.parameters())
    )


def fold(norm: nn.Module) -> None:
    norm.__class__ = FOLDED_CLASS[type(norm)]


def unfold(norm: nn.Module) -> None:
    """Back to the original class (for ``merge_and_unload``)."""
    if type(norm) in ORIGINAL_CLASS:
        norm.__dict__.pop("folded", None)
        norm.__class__ = ORIGINAL_CLASS[type(norm)]


@torch.no_grad()
def norm_affine(norm: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` with ``norm(y) = a y + b`` per channel, from the running statistics."""
    # A folded norm tracks running statistics (can_fold), so neither buffer is None.
    running_mean = cast(torch.Tensor, norm.running_mean)
    running_var = cast(torch.Tensor, norm.running_var)
    scale = torch.rsqrt(running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift
