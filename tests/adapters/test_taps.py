"""The per-tap thin convolution equals torch's convolution and its weight gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sah.adapters.geometry import geometry_of
from sah.adapters.taps import taps_conv, taps_weight_grad

CONVS = [
    nn.Conv1d(4, 6, 5, stride=3, padding=4, dilation=2),
    nn.Conv2d(4, 6, 3, padding=1),
    nn.Conv2d(4, 6, 4),
    nn.Conv2d(4, 6, 3, padding=3, dilation=3, stride=2),
    nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(2, 1), groups=2),
    nn.Conv3d(4, 6, 3, padding=1, stride=(1, 2, 1)),
]


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: repr(c))
def test_taps_equal_convolution(conv):
    geo = geometry_of(conv, "conv")
    x = torch.randn(2, 4, *([9] * geo.dims), dtype=torch.float64)
    rank = 3
    w = torch.randn(rank * geo.groups, 4 // geo.groups, *geo.kernel, dtype=torch.float64)
    w.requires_grad_()
    ref = geo.apply(x, w, None, groups=geo.groups)
    torch.testing.assert_close(taps_conv(x, w.detach(), geo), ref)
    grad_z = torch.randn_like(ref)
    (want,) = torch.autograd.grad(ref, w, grad_z)
    torch.testing.assert_close(taps_weight_grad(x, grad_z, geo), want)
