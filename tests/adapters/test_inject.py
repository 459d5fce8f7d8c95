"""Targets, freezing, baselines, norm layers, merge_and_unload and export."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from conftest import METHODS, randomise_adapter
from nets import TinyNoGroups, TinySegNet
from torch import nn

from sah.adapters import (
    AdapterConfig,
    AdapterError,
    AdapterLayer,
    inject,
    merge,
    merge_and_unload,
    trainable_parameters,
)


def _x():
    return torch.randn(2, 1, 16, 16)


def test_group_target_adapts_only_that_group():
    model = TinySegNet()
    names = inject(model, AdapterConfig("conv_lora", 2, target="decoder"))
    assert names == ["decoder.0"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"decoder.0.factors.A", "decoder.0.factors.B"}


def test_group_with_a_linear_layer_and_list_of_targets():
    model = TinySegNet()
    names = inject(model, AdapterConfig("cp_dora", 2, target=["bottleneck", "head"]))
    assert names == ["bottleneck.0", "gate", "head"]


def test_regex_target_and_all_without_groups():
    model = TinyNoGroups()
    assert inject(model, AdapterConfig("lora_c", 2, target=r"conv_\w$")) == ["conv_a", "conv_b"]
    assert inject(TinyNoGroups(), AdapterConfig("lora_c", 2)) == ["conv_a", "conv_b", "fc"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        # A mistyped group names the key the user types, the model's groups and the nearest.
        (
            "decodr",
            r"^adapter\.target: 'decodr' is neither a module group of TinySegNet \(all, "
            r"encoder, bottleneck, decoder, head; did you mean 'decoder'\?\)",
        ),
        (
            "nothing_like_this",
            r"module group of TinySegNet \(all, encoder, bottleneck, decoder, head\)",
        ),
        ("encoder\\.1", r"^adapter\.target: 'encoder\\\\.1' matches no adaptable layer"),
    ],
)
def test_target_matching_no_layer_raises(target, message):
    model = TinySegNet()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(AdapterError, match=message):
        inject(model, AdapterConfig("conv_lora", 2, target=target))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_invalid_regex_raises():
    with pytest.raises(AdapterError, match="neither a module group"):
        inject(TinySegNet(), AdapterConfig("conv_lora", 2, target="enc(oder"))


def test_layer_the_method_cannot_adapt_is_named_and_nothing_changes():
    class WithAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.attn = nn.MultiheadAttention(4, 2)

    model = WithAttention()
    with pytest.raises(AdapterError, match=r"'attn\.out_proj'.*NonDynamicallyQuantizableLinear"):
        inject(model, AdapterConfig("conv_lora", 2))
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    assert inject(model, AdapterConfig("conv_lora", 2, target="^proj$")) == ["proj"]


def test_bad_module_groups_are_reported():
    class Broken(TinySegNet):
        def module_groups(self):
            return {"decoder": ["decoder", "no_such_module"]}

    with pytest.raises(AdapterError, match="no_such_module"):
        inject(Broken(), AdapterConfig("conv_lora", 2, target="decoder"))


def test_second_inject_refused():
    model = TinySegNet()
    inject(model, AdapterConfig("conv_lora", 2))
    with pytest.raises(AdapterError, match="already has adapters"):
        inject(model, AdapterConfig("conv_lora", 2))


def test_full_trains_every_parameter_of_the_targets():
    model = TinySegNet()
    names = inject(model, AdapterConfig("full", None, target="encoder"))
    assert names == ["encoder.0", "encoder.1", "encoder.3", "encoder.4"]
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith("encoder.")
    counts = trainable_parameters(model)
    enc = model.encoder
    assert counts["encoder.0"] == enc[0].weight.numel() + enc[0].bias.numel()
    assert counts["encoder.1"] == 2 * enc[1].num_features
    assert counts["total"] == sum(p.numel() for p in enc.parameters())
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())


def test_none_freezes_everything():
    model = TinySegNet()
    assert inject(model, AdapterConfig("none", None)) == []
    assert trainable_parameters(model) == {"total": 0}
    model.train()
    stats = model.encoder[1].running_mean.clone()
    model(_x())
    assert torch.equal(model.encoder[1].running_mean, stats)


def test_frozen_norms_keep_statistics_train_norm_updates_them():
    frozen = TinySegNet()
    inject(frozen, AdapterConfig("conv_lora", 2, target="encoder"))
    frozen.train()
    before = frozen.encoder[1].running_var.clone()
    frozen(_x())
    assert torch.equal(frozen.encoder[1].running_var, before)
    assert not frozen.encoder[1].weight.requires_grad

    trained = TinySegNet()
    inject(trained, AdapterConfig("conv_lora", 2, target="encoder", train_norm=True))
    trained.train()
    trained(_x())
    assert not torch.equal(trained.encoder[1].running_var, before)
    assert trained.encoder[1].weight.requires_grad
    assert not trained.decoder[1].weight.requires_grad  # outside the target
    counts = trainable_parameters(trained)
    assert counts["encoder.1"] == 2 * 8
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_targeted_modules_that_are_not_adaptable_warn():
    class WithEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 4)
            self.fc = nn.Linear(4, 4)

    with pytest.warns(UserWarning, match="emb"):
        inject(WithEmbedding(), AdapterConfig("conv_lora", 2))


@pytest.mark.parametrize("method", METHODS)
def test_merge_and_unload_gives_plain_layers(method):
    torch.manual_seed(0)
    model = TinySegNet().eval()
    reference = copy.deepcopy(model)
    inject(model, AdapterConfig(method, 2))
    randomise_adapter(model)
    x = _x()
    with torch.no_grad():
        expected = model(x)
    plain = merge_and_unload(model)
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    assert [type(m) for m in plain.modules()] == [type(m) for m in reference.modules()]
    assert set(plain.state_dict()) == set(reference.state_dict())
    assert all(p.requires_grad for p in plain.parameters())
    assert not any(m._forward_pre_hooks for m in plain.modules())
    with torch.no_grad():  # float32; unmerged, the BatchNorms are folded into the convs
        torch.testing.assert_close(plain(x), expected, rtol=1e-4, atol=1e-5)


def test_unloaded_model_saves_scripts_and_exports():
    model = TinySegNet().eval()
    inject(model, AdapterConfig("cp_dora", 3))
    randomise_adapter(model)
    merge(model)
    x = _x()
    with torch.no_grad():
        expected = model(x)
    plain = merge_and_unload(model)
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    scripted = torch.jit.script(plain)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)
        torch.testing.assert_close(scripted(x), expected)
    onnx = pytest.importorskip("onnx")
    path = io.BytesIO()
    torch.onnx.export(plain, (x,), path, dynamo=False)
    assert onnx.load_from_string(path.getvalue()).graph.node


def test_injected_model_survives_deepcopy_and_pickle():
    model = TinySegNet().eval()
    inject(model, AdapterConfig("conv_dora", 2))
    randomise_adapter(model)
    x = _x()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), model(x))
        torch.testing.assert_close(copy.deepcopy(model)(x), model(x))


def test_compute_paths_are_validated_and_chosen_per_layer():
    from sah.adapters import adapter_layers, set_compute_path
    from sah.adapters.pathcost import choose_path

    model = TinySegNet()
    inject(model, AdapterConfig("cp_lora", 2))
    with pytest.raises(AdapterError, match="compute path"):
        set_compute_path(model, "fastest")
    chosen = {name: choose_path(layer) for name, layer in adapter_layers(model).items()}
    assert set(chosen.values()) <= {"weight", "lowrank", "lowrank_taps"}
    assert chosen["gate"] in {"weight", "lowrank"}  # a linear layer has no taps
