"""Start a from-scratch segmentation net at the blood prior instead of at 50 % everywhere.

Blood is about 1 % of a head CT. A freshly initialised net outputs logits near 0 (p = 0.5), and
Adam moves each weight by about the learning rate per step, so it spends hundreds of steps only
learning that most voxels are background. Setting the output layer's bias to logit(prior), as
RetinaNet does for rare classes, removes that phase; the weights are untouched.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

_CONVS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def output_layer(net: nn.Module) -> _ConvNd:
    """The last convolution with a bias in registration order: the output layer of our nets."""
    convs = [m for m in net.modules() if isinstance(m, _CONVS) and m.bias is not None]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no convolution with a bias to initialise")
    return convs[-1]


def set_output_prior(net: nn.Module, prior: float) -> None:
    """Set a 1-logit net's output bias to ``log(prior / (1 - prior))``; 2-channel nets are left
    as they are (softmax over two equal logits is the symmetric start they expect)."""
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    layer = output_layer(net)
    channels = layer.out_channels
    if channels != 1:
        return
    bias = cast(torch.Tensor, layer.bias)  # output_layer picks a convolution with a bias
    bias.data.fill_(math.log(prior / (1.0 - prior)))
