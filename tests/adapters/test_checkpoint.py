"""Adapter checkpoints round-trip and refuse a different base model."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import METHODS, randomise_adapter
from nets import TinySegNet
from safetensors.torch import save_file

from sah.adapters import (
    AdapterConfig,
    AdapterError,
    inject,
    load_adapter,
    merge,
    read_metadata,
    save_adapter,
)


def _trained(method: str, **kw):
    torch.manual_seed(0)
    base = TinySegNet().eval()
    model = copy.deepcopy(base)
    inject(model, AdapterConfig(method, 2, **kw))
    randomise_adapter(model)
    if kw.get("train_norm") or method == "full":
        model.train()
        model(torch.randn(2, 1, 16, 16))  # move the running statistics
        model.eval()
    return base, model


@pytest.mark.parametrize("method", [*METHODS, "full"])
def test_round_trip(tmp_path, method):
    base, model = _trained(method, target=["encoder", "decoder", "bottleneck"], train_norm=True)
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, path)
    meta = read_metadata(path)
    assert meta["config"]["method"] == method
    assert meta["config"]["target"] == ["encoder", "decoder", "bottleneck"]
    assert len(meta["fingerprint"]) == 64

    restored = copy.deepcopy(base)
    names = load_adapter(restored, path)
    assert names == meta["adapted"]
    restored.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
    assert set(restored.state_dict()) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key


def test_a_checkpoint_that_says_targets_still_loads(tmp_path):
    """Checkpoints written before the field was renamed store ``targets``, not ``target``."""
    import json

    from safetensors import safe_open

    from sah.adapters.checkpoint import META_KEY

    base, model = _trained("conv_lora", target=["encoder", "head"])
    path = tmp_path / "new.safetensors"
    save_adapter(model, path)
    meta = read_metadata(path)
    meta["config"]["targets"] = meta["config"].pop("target")
    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())  # a safetensors file, not a dict
        tensors = {k: f.get_tensor(k) for k in names}
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={META_KEY: json.dumps(meta)})

    assert AdapterConfig.from_dict(read_metadata(old)["config"]).target == ("encoder", "head")
    restored = copy.deepcopy(base)
    assert load_adapter(restored, old) == meta["adapted"]
    restored.eval()
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))


def test_load_into_injected_model_and_merged_model(tmp_path):
    base, model = _trained("cp_dora")
    path = tmp_path / "a.safetensors"
    merge(model)  # the fingerprint uses W0, not the merged weight
    save_adapter(model, path)
    target = copy.deepcopy(base)
    inject(target, AdapterConfig("cp_dora", 2))
    merge(target)
    load_adapter(target, path)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(target(x), model(x))


def test_different_base_is_refused(tmp_path):
    _, model = _trained("conv_lora")
    path = tmp_path / "a.safetensors"
    save_adapter(model, path)
    torch.manual_seed(1)
    other = TinySegNet()
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(AdapterError, match="different base model"):
        load_adapter(other, path)
    assert set(other.state_dict()) == set(before)  # nothing injected

    nudged = copy.deepcopy(model)
    with torch.no_grad():
        nudged.head.base_layer.weight[0, 0] += 1e-6
    with pytest.raises(AdapterError, match="different base model"):
        load_adapter(nudged, path)


def test_config_mismatch_and_bad_files(tmp_path):
    base, model = _trained("conv_lora")
    path = tmp_path / "a.safetensors"
    save_adapter(model, path)
    target = copy.deepcopy(base)
    inject(target, AdapterConfig("conv_lora", 4))
    with pytest.raises(AdapterError, match="saved with adapter config"):
        load_adapter(target, path)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(AdapterError, match="not a sah adapter checkpoint"):
        load_adapter(copy.deepcopy(base), plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(AdapterError, match="not a readable"):
        load_adapter(copy.deepcopy(base), junk)


def test_save_needs_adapters(tmp_path):
    with pytest.raises(AdapterError, match="no adapters"):
        save_adapter(TinySegNet(), tmp_path / "a.safetensors")
