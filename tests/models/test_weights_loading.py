"""load_weights: the file formats it accepts and the errors that name what differs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sah.errors import DataError
from sah.models import MVUnet, load_weights


def small_net() -> MVUnet:
    return MVUnet(features=8, levels=1)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key


def lightning_shaped(net: torch.nn.Module, hyper_parameters: object) -> dict:
    """What Lightning's Trainer.save_checkpoint writes, for a module holding the net as `net`."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["criterion.pos_weight"] = torch.ones(1)  # a loss buffer beside the net
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val/dice'}": {"best_model_score": torch.tensor(0.5)}
        },
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_plain_state_dict_round_trip(tmp_path, suffix):
    source, target = small_net(), small_net()
    path = tmp_path / f"weights{suffix}"
    torch.save(source.state_dict(), path)
    load_weights(target, path)
    assert_same_weights(source, target)


def test_safetensors_round_trip(tmp_path):
    source, target = small_net(), small_net()
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    load_weights(target, path)
    assert_same_weights(source, target)


def test_lightning_checkpoint_loads_the_net_and_drops_its_siblings(tmp_path):
    source, target = small_net(), small_net()
    path = tmp_path / "epoch=3.ckpt"
    hparams = {"lr": 1e-3, "model": {"features": 8, "levels": 1}, "targets": ["decoder"]}
    torch.save(lightning_shaped(source, hparams), path)
    load_weights(target, path)
    assert_same_weights(source, target)


def test_lightning_checkpoint_with_pickled_objects_is_refused_by_name(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save(lightning_shaped(small_net(), {"out_dir": Path("/tmp/run")}), path)
    with pytest.raises(DataError, match=r"pathlib\.\w*Path.*hyper_parameters are plain types"):
        load_weights(small_net(), path)


def test_lightning_checkpoint_without_net_suggests_a_prefix_map(tmp_path):
    source = small_net()
    checkpoint = lightning_shaped(source, {})
    checkpoint["state_dict"] = {f"model.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "other.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(DataError, match=r"found \['model\.'\].*prefix_map"):
        load_weights(small_net(), path)
    target = small_net()
    load_weights(target, path, prefix_map={"model.": ""})
    assert_same_weights(source, target)


def test_mismatch_names_missing_unexpected_and_reshaped_layers(tmp_path):
    state = small_net().state_dict()
    state["head.6.weight"] = torch.zeros(3, 8, 1, 1)  # another number of classes
    del state["stem.0.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(DataError) as caught:
        load_weights(small_net(), path)
    message = str(caught.value)
    assert str(path) in message
    assert "1 missing from the file: stem.0.bias" in message
    assert "1 unexpected in the file: extra.weight" in message
    assert "1 with another shape: head.6.weight (file (3, 8, 1, 1), model (1, 8, 1, 1))" in message


def test_long_lists_are_cut_with_a_count(tmp_path):
    path = tmp_path / "deeper.pt"
    torch.save(MVUnet(features=8, levels=3).state_dict(), path)
    with pytest.raises(DataError, match=r"\d+ unexpected in the file: .*\.\.\. \(\d+ more\)"):
        load_weights(small_net(), path)


def test_not_strict_tolerates_missing_layers_but_not_shapes(tmp_path):
    source = small_net()
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    path = tmp_path / "partial.pt"
    torch.save(partial, path)
    target = small_net()
    load_weights(target, path, strict=False)
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)

    partial["stem.0.weight"] = torch.zeros(8, 2, 3, 3)
    torch.save(partial, path)
    with pytest.raises(DataError, match=r"with another shape: stem\.0\.weight"):
        load_weights(small_net(), path, strict=False)


def test_a_wrapped_state_dict_gets_a_prefix_hint(tmp_path):
    path = tmp_path / "dataparallel.pt"
    torch.save({f"module.{k}": v for k, v in small_net().state_dict().items()}, path)
    with pytest.raises(DataError, match=r"prefix_map=\{'module\.': ''\}"):
        load_weights(small_net(), path)


def test_missing_file_and_foreign_content_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_weights(small_net(), tmp_path / "nowhere.pt")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="cannot be read"):
        load_weights(small_net(), bad)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(DataError, match="not a state dict"):
        load_weights(small_net(), listed)
    mixed = tmp_path / "mixed.pt"
    torch.save({"stem.0.weight": torch.zeros(1), "note": "hello"}, mixed)
    with pytest.raises(DataError, match="not tensors: note"):
        load_weights(small_net(), mixed)
