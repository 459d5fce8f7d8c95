"""MONAI UNet wrapper: shapes and module groups computed from MONAI's nesting at any depth."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from sah.models import build_unet, group_parameter_names


def test_default_2d_unet_returns_logits_of_the_input_size():
    model = build_unet().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_state_dict_keys_are_monai_unet_keys():
    ours = build_unet().state_dict()
    monai = UNet(2, 1, 1, (16, 32, 64, 128), (2, 2, 2), num_res_units=2, norm="batch")
    assert list(ours) == list(monai.state_dict())


@pytest.mark.parametrize(
    ("channels", "strides", "num_res_units", "spatial_dims"),
    [
        ((8, 16), (2,), 2, 2),
        ((8, 16, 32, 64), (2, 2, 2), 2, 2),
        ((8, 16, 32, 64), (2, 2, 2), 0, 2),
        ((4, 8, 16, 32, 64), (2, 2, 2, 2), 1, 3),
    ],
)
def test_groups_split_the_net_at_any_depth(channels, strides, num_res_units, spatial_dims):
    model = build_unet(
        spatial_dims=spatial_dims,
        channels=channels,
        strides=strides,
        num_res_units=num_res_units,
    )
    groups = model.module_groups()
    levels = len(channels) - 1
    assert len(groups["encoder"]) == len(groups["decoder"]) == levels
    encoder, bottleneck, decoder, head = (
        group_parameter_names(model, g) for g in ("encoder", "bottleneck", "decoder", "head")
    )
    assert encoder and bottleneck and decoder and head
    assert not encoder & decoder and not encoder & bottleneck and not bottleneck & decoder
    assert encoder | bottleneck | decoder == group_parameter_names(model, "all")
    assert head <= decoder
    # The head produces the logits: its last conv has out_channels outputs.
    modules = dict(model.named_modules())
    head_convs = [m for m in modules[groups["head"][0]].modules() if hasattr(m, "weight")]
    last = head_convs[-1]
    assert 1 in (last.weight.shape[0], last.weight.shape[1])  # ConvTranspose: (in, out, ...)


def test_bottleneck_is_the_deepest_layer():
    model = build_unet(channels=(8, 16, 32), strides=(2, 2))
    [bottleneck] = model.module_groups()["bottleneck"]
    assert bottleneck == "model.1.submodule.1.submodule"
    convs = [m for m in dict(model.named_modules())[bottleneck].modules() if hasattr(m, "weight")]
    assert convs[0].weight.shape[:2] == (32, 16)
