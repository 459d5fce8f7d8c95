"""Swin UNETR wrapper: a small forward pass and the transformer's LoRA target groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sah.errors import ConfigError
from sah.models import build_swin_unetr, group_parameter_names

pytest.importorskip("einops")


@pytest.fixture(scope="module")
def small_swin():
    return build_swin_unetr(feature_size=12)


def test_forward_keeps_the_size_and_gives_two_channels(small_swin):
    small_swin.eval()
    with torch.no_grad():
        out = small_swin(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, 2, 32, 32, 32)


def test_attention_and_mlp_groups_are_the_transformer_linears(small_swin):
    groups = small_swin.module_groups()
    modules = dict(small_swin.named_modules())
    vit = small_swin.swinViT
    blocks = sum(
        len(stage[0].blocks) for stage in (vit.layers1, vit.layers2, vit.layers3, vit.layers4)
    )
    assert blocks == 8  # MONAI's default depths (2, 2, 2, 2)
    assert len(groups["attention"]) == 2 * blocks
    assert len(groups["mlp"]) == 2 * blocks
    for name in groups["attention"] + groups["mlp"]:
        assert isinstance(modules[name], nn.Linear)
    assert {n.rsplit(".", 1)[1] for n in groups["attention"]} == {"qkv", "proj"}
    assert {n.rsplit(".", 1)[1] for n in groups["mlp"]} == {"linear1", "linear2"}
    assert group_parameter_names(small_swin, "attention") <= group_parameter_names(
        small_swin, "encoder"
    )


def test_encoder_bottleneck_decoder_partition_the_net(small_swin):
    encoder, bottleneck, decoder, head = (
        group_parameter_names(small_swin, g) for g in ("encoder", "bottleneck", "decoder", "head")
    )
    assert not encoder & decoder and not encoder & bottleneck and not bottleneck & decoder
    assert encoder | bottleneck | decoder == group_parameter_names(small_swin, "all")
    assert head <= decoder


def test_feature_size_must_be_a_multiple_of_12():
    with pytest.raises(ConfigError, match="feature_size"):
        build_swin_unetr(feature_size=16)
