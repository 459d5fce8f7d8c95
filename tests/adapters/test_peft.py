"""conv_lora and conv_dora equal HF PEFT's conv LoRA and DoRA given the same factor values.

PEFT (a dev-only dependency) is the reference on non-dilated Conv2d (and Conv3d) layers,
where its conv LoRA is correct (its lora_A ignores dilation). Outputs and gradients are
compared, on every compute path.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import PATHS
from torch import nn

from sah.adapters import AdapterConfig, inject, set_compute_path

peft = pytest.importorskip("peft")

CONVS = {
    "3x3": nn.Conv2d(5, 7, 3, padding=1),
    "strided_5x3": nn.Conv2d(5, 7, (5, 3), stride=(2, 1), padding=(2, 0)),
    "1x1_no_bias": nn.Conv2d(5, 7, 1, bias=False),
    "3d": nn.Conv3d(5, 7, 3, padding=1, stride=(1, 2, 1)),
}


def _pair(conv: nn.Module, method: str, rank: int, alpha: float, rslora: bool):
    torch.manual_seed(0)
    base = copy.deepcopy(conv).double()
    ours = nn.Sequential(copy.deepcopy(base))
    inject(ours, AdapterConfig(method, rank, alpha=alpha, rslora=rslora))
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=["0"],
        use_dora=method == "conv_dora",
        use_rslora=rslora,
    )
    theirs = peft.inject_adapter_in_model(config, nn.Sequential(copy.deepcopy(base)))
    layer = ours[0]
    peft_layer = theirs[0]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in layer.adapter_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5 + 0.1)
        a = peft_layer.lora_A["default"].weight
        b = peft_layer.lora_B["default"].weight
        a.copy_(layer.factors.A.reshape(a.shape))
        b.copy_(layer.factors.B.reshape(b.shape))
        if layer.is_dora:
            m = peft_layer.lora_magnitude_vector["default"].weight
            m.copy_(layer.magnitude.reshape(m.shape))
    return ours, theirs


def _grads(model: nn.Module, x: torch.Tensor, params: list[torch.Tensor]):
    x = x.clone().requires_grad_()
    y = model(x)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    return y.detach(), torch.autograd.grad((y * gy).sum(), [x, *params])


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("method", ["conv_lora", "conv_dora"])
@pytest.mark.parametrize("conv", list(CONVS))
def test_equals_peft(conv, method, rslora):
    ours, theirs = _pair(CONVS[conv], method, rank=3, alpha=5.0, rslora=rslora)
    layer, peft_layer = ours[0], theirs[0]
    spatial = (5, 6, 5) if conv == "3d" else (9, 8)
    x = torch.randn(2, 5, *spatial, dtype=torch.float64)
    peft_params = [peft_layer.lora_A["default"].weight, peft_layer.lora_B["default"].weight]
    if layer.is_dora:
        peft_params.append(peft_layer.lora_magnitude_vector["default"].weight)
    want_y, want = _grads(theirs, x, peft_params)
    for path in PATHS:
        set_compute_path(ours, path)
        got_y, got = _grads(ours, x, layer.adapter_parameters())
        torch.testing.assert_close(got_y, want_y, rtol=1e-10, atol=1e-12)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w.reshape(g.shape), rtol=1e-9, atol=1e-12)
