"""Every method on every layer geometry computes the layer with the W' of docs/ADAPTERS.md."""

from __future__ import annotations

import pytest
import torch
from conftest import LAYERS, METHODS, PATHS, adapted, fresh_layer, randomise_adapter
from oracles import (
    delta_conv_lora,
    delta_cp,
    delta_lora_c,
    dora_weight,
    plain_layer_with,
)

from sah.adapters import merge, set_compute_path, unmerge

PAIRS = [(layer, method) for layer in LAYERS for method in METHODS]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


FACTORISATION = {
    "lora_c": "lora_c",
    "dora_c": "lora_c",
    "conv_lora": "conv_lora",
    "conv_dora": "conv_lora",
    "cp_lora": "cp_lora",
    "cp_dora": "cp_lora",
}


def oracle_weight(model, base_layer, scale: float) -> torch.Tensor:
    """W' from the adapter's raw factor values, computed by oracles.py (not the library)."""
    layer = model[0]
    f = layer.factors
    kind = FACTORISATION[layer.method]
    if isinstance(base_layer, torch.nn.Linear) or kind == "conv_lora":
        delta = delta_conv_lora(base_layer, f.A, f.B)  # classic LoRA on nn.Linear
    elif kind == "lora_c":
        delta = delta_lora_c(base_layer, f.A, f.B)
    else:
        delta = delta_cp(base_layer, f.U, f.V, list(f.K))
    direction = base_layer.weight + scale * delta
    if layer.magnitude is None:
        return direction
    return dora_weight(base_layer, direction, layer.magnitude)


@pytest.mark.parametrize(("layer_name", "method"), PAIRS)
def test_untrained_adapter_is_the_base_layer(layer_name, method):
    base, x = fresh_layer(layer_name)
    model = adapted(base, method, rank=3, alpha=5.0)
    model.eval()
    assert torch.equal(model(x), base(x))
    model.train()
    for path in PATHS:
        set_compute_path(model, path)
        torch.testing.assert_close(model(x), base(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("layer_name", "method"), PAIRS)
def test_forward_matches_independent_weight(layer_name, method):
    base, x = fresh_layer(layer_name)
    model = adapted(base, method, rank=2, alpha=3.0)
    randomise_adapter(model)
    with torch.no_grad():
        expected = plain_layer_with(base, oracle_weight(model, base, 3.0 / 2))(x)
    model.eval()
    assert rel_err(model(x).detach(), expected) < 1e-5
    model.train()
    for path in PATHS:
        set_compute_path(model, path)
        assert rel_err(model(x).detach(), expected) < 1e-5, path


@pytest.mark.parametrize(("layer_name", "method"), PAIRS)
def test_merge_unmerge(layer_name, method):
    base, x = fresh_layer(layer_name)
    model = adapted(base, method, rank=2)
    randomise_adapter(model)
    model.eval()
    unmerged_out = model(x).detach()
    w0 = model[0].base_layer.weight.detach().clone()
    merge(model)
    assert model[0].merged
    assert rel_err(model(x).detach(), unmerged_out) < 1e-10
    assert rel_err(model[0].base_layer.weight.detach(), oracle_weight(model, base, 1.0)) < 1e-10
    unmerge(model)
    assert torch.equal(model[0].base_layer.weight, w0)
    assert torch.equal(model[0].base_layer.weight, base.weight)


@pytest.mark.parametrize(("layer_name", "method"), PAIRS)
def test_lowrank_gradients_equal_autograd_on_effective_weight(layer_name, method):
    """The low-rank backward gives autograd's gradients for the input and every factor."""
    base, x = fresh_layer(layer_name)
    for detach_norm in (True, False) if "dora" in method else (True,):
        model = adapted(base, method, rank=2, alpha=3.0, detach_norm=detach_norm)
        randomise_adapter(model)
        xg = x.clone().requires_grad_()
        params = [p for p in model.parameters() if p.requires_grad]
        grads = {}
        for path in PATHS:
            set_compute_path(model, path)
            y = model(xg)
            gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
            grads[path] = torch.autograd.grad((y * gy).sum(), [xg, *params])
        for path in PATHS[1:]:
            for got, want in zip(grads[path], grads["weight"], strict=True):
                assert rel_err(got, want) < 1e-10, path


def test_transposed_conv_output_size_argument():
    base, x = fresh_layer("convT2d_grouped_dilated")
    model = adapted(base, "conv_lora")
    randomise_adapter(model)
    size = [x.shape[2] * 2 + 2, x.shape[3] * 2 + 2]
    ref = plain_layer_with(base, oracle_weight(model, base, 1.0))
    for path in PATHS:
        set_compute_path(model, path)
        out = model[0](x, output_size=size)
        assert out.shape[-2:] == tuple(size)
        assert rel_err(out.detach(), ref(x, output_size=size).detach()) < 1e-10


def test_unbatched_conv_input():
    base, x = fresh_layer("conv2d_dilated")
    model = adapted(base, "cp_dora")
    randomise_adapter(model)
    for path in PATHS:
        set_compute_path(model, path)
        assert rel_err(model(x[0]).detach(), model(x).detach()[0]) < 1e-12
