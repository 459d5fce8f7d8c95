"""Parameter counts equal the docs/ADAPTERS.md formulas; only adapters train; every factor moves."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import LAYERS, METHODS, PATHS, adapted, fresh_layer
from nets import TinySegNet
from oracles import layer_dims

from sah.adapters import AdapterConfig, inject, set_compute_path, trainable_parameters


def formula(method: str, layer, rank: int) -> int:
    """docs/ADAPTERS.md's trainable-parameter formulas, per group summed (groups share nothing)."""
    c_in, c_out, g, k = layer_dims(layer)
    lora = method.replace("dora_c", "lora_c").replace("_dora", "_lora")
    if not k:  # nn.Linear: classic LoRA whatever the method
        count = rank * (c_in + c_out)
    elif lora == "conv_lora":
        count = rank * (c_in * math.prod(k) + c_out)
    elif lora == "lora_c":
        # B: (c_out k1) x (r k1), A: (r k1) x (c_in k2 ... kd); r k^2 (c_in + c_out) in 2D
        count = rank * k[0] * (c_out * k[0] + c_in * math.prod(k[1:]))
    else:  # r (c_out + c_in + k1 + ... + kd), the spatial factors once per group
        count = rank * (c_out + c_in + g * sum(k))
    return count + (c_out if "dora" in method else 0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_counts_equal_formula(method, layer_name):
    base, _ = fresh_layer(layer_name)
    model = adapted(base, method, rank=3)
    counts = trainable_parameters(model)
    assert counts == {"0": formula(method, base, 3), "total": formula(method, base, 3)}
    assert model[0].num_adapter_parameters() == counts["0"]


def test_two_dimensional_formulas_as_written():
    conv = torch.nn.Conv2d(16, 32, 3)
    r, k, c_in, c_out = 4, 3, 16, 32
    assert formula("conv_lora", conv, r) == r * (c_in * k**2 + c_out)
    assert formula("lora_c", conv, r) == r * k**2 * (c_in + c_out)
    assert formula("cp_lora", conv, r) == r * (c_out + c_in + k + k)
    for method in METHODS:
        assert trainable_parameters(adapted(conv, method, rank=r))["0"] == formula(method, conv, r)


def _zero_factor_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.endswith((".B", ".U"))}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", METHODS)
def test_only_adapters_train_and_every_factor_moves(method, path):
    torch.manual_seed(0)
    model = TinySegNet()
    inject(model, AdapterConfig(method, 2))
    set_compute_path(model, path)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".factors." in n or n.endswith(".magnitude") for n in trainable), (
        sorted(trainable)
    )
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    zero = _zero_factor_names(model)
    assert zero and all(torch.count_nonzero(trainable[n]) == 0 for n in zero)

    optimiser = torch.optim.Adam(trainable.values(), lr=1e-2)
    x, target = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    history = [{n: p.detach().clone() for n, p in trainable.items()}]
    model.train()
    for _ in range(2):
        loss = F.binary_cross_entropy_with_logits(model(x), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append({n: p.detach().clone() for n, p in trainable.items()})
    for name in trainable:
        moved_first = not torch.equal(history[0][name], history[1][name])
        moved_second = not torch.equal(history[1][name], history[2][name])
        if name in zero or name.endswith(".magnitude"):
            assert moved_first, f"{name} did not move on the first step"
        else:  # their gradient is zero while the zero factor is zero
            assert not moved_first, f"{name} moved before the zero factor did"
        assert moved_second, f"{name} did not move on the second step"
    for name, value in frozen.items():
        assert torch.equal(dict(model.named_parameters())[name], value), name


def test_first_layer_input_gets_no_gradient():
    model = TinySegNet()
    inject(model, AdapterConfig("cp_lora", 2))
    x = torch.randn(2, 1, 16, 16)
    model(x).sum().backward()
    assert x.grad is None


def test_dropout_only_on_the_update_branch_while_training():
    base, x = fresh_layer("conv2d_dilated")
    model = adapted(base, "conv_dora", rank=2, dropout=0.5)
    no_dropout = adapted(base, "conv_dora", rank=2)
    no_dropout.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in (model[0].factors.B, no_dropout[0].factors.B):
            p.fill_(0.1)
    model.eval()
    no_dropout.eval()
    torch.testing.assert_close(model(x), no_dropout(x))
    model.train()
    assert not torch.allclose(model(x), no_dropout(x))
    torch.manual_seed(3)
    y = model(x)
    y.sum().backward()
    assert all(p.grad is not None for p in model[0].adapter_parameters())
