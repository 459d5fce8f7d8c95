"""MVUnet: the published multi-view net's size, shapes, dilations and fine-tuning groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sah.errors import ConfigError
from sah.models import MVUnet, load_weights, published_key_map

PUBLISHED_PARAMETERS = 232_737


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_net_has_the_published_parameter_count():
    assert n_parameters(MVUnet()) == PUBLISHED_PARAMETERS


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_output_is_one_logit_map_of_the_input_size(levels):
    model = MVUnet(levels=levels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 1, 64, 64)


def test_channels_are_configurable():
    model = MVUnet(in_channels=3, out_channels=2, features=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_dilated_skip_branches_use_dilations_1_2_4():
    model = MVUnet()
    for branch in (model.down[0].skip, model.down[1].skip, model.bridge):
        convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
        assert [c.dilation for c in convs] == [(1, 1), (2, 2), (4, 4)]
        assert [c.padding for c in convs] == [(1, 1), (2, 2), (4, 4)]


def test_size_not_divisible_by_the_pooling_is_refused():
    with pytest.raises(ValueError, match="divisible by 4"):
        MVUnet()(torch.randn(1, 1, 62, 64))


def test_invalid_levels_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.levels"):
        MVUnet(levels=0)


def test_groups_follow_the_published_fine_tuning_sets():
    groups = MVUnet().module_groups()
    assert groups["top"] == ["stem", "head"]
    assert groups["left"] == ["stem", "down.0.conv", "down.1.conv"]
    assert groups["bottom"] == ["down.1.conv", "up.0.conv"]
    assert groups["right"] == ["up.0.conv", "up.1.conv", "head"]
    assert groups["encoder"] == groups["left"]
    assert groups["bottleneck"] == groups["bottom"]
    assert groups["decoder"] == groups["right"]
    assert groups["head"] == ["head"]


def test_groups_scale_with_levels():
    groups = MVUnet(levels=3).module_groups()
    assert groups["left"] == ["stem", "down.0.conv", "down.1.conv", "down.2.conv"]
    assert groups["bottom"] == ["down.2.conv", "up.0.conv"]


def _as_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our keys to the published net's, inverting the key map."""
    inverse = {new: old for old, new in published_key_map().items()}
    renamed = {}
    for key, value in state.items():
        prefix = max((p for p in inverse if key.startswith(p)), key=len)
        renamed[inverse[prefix] + key[len(prefix) :]] = value
    return renamed


def test_published_state_dict_loads_through_the_key_map(tmp_path):
    source = MVUnet()
    published = _as_published(source.state_dict())
    assert "down_list.1.M2.TripleDia.6.weight" in published
    assert "M3.TripleOut.6.bias" in published
    path = tmp_path / "mv.pt"
    torch.save(published, path)

    target = MVUnet()
    load_weights(target, path, prefix_map=published_key_map())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
