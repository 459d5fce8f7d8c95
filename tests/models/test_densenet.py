"""DenseNet-121 with the mortality study's head: shapes, head layout, groups, local weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sah.errors import DataError
from sah.models import build_densenet121, group_parameter_names


@pytest.fixture(scope="module")
def densenet():
    return build_densenet121()


def test_returns_one_logit_per_class(densenet):
    densenet.eval()
    with torch.no_grad():
        assert densenet(torch.randn(2, 1, 32, 32, 32)).shape == (2, 2)


def test_head_is_pool_dense512_dropout_output(densenet):
    head = densenet.class_layers
    assert isinstance(head.pool, nn.AdaptiveAvgPool3d)
    assert (head.hidden.in_features, head.hidden.out_features) == (1024, 512)
    assert head.dropout.p == pytest.approx(0.3)
    assert (head.out.in_features, head.out.out_features) == (512, 2)
    assert not any(isinstance(m, nn.Softmax) for m in densenet.modules())


def test_2d_variant_with_three_channels():
    model = build_densenet121(spatial_dims=2, in_channels=3, out_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_backbone_and_head_partition_the_parameters(densenet):
    backbone = group_parameter_names(densenet, "backbone")
    head = group_parameter_names(densenet, "head")
    assert backbone == group_parameter_names(densenet, "encoder")
    assert backbone and head and not backbone & head
    assert backbone | head == group_parameter_names(densenet, "all")


def test_pretrained_path_loads_local_weights(densenet, tmp_path):
    path = tmp_path / "mortality.pt"
    torch.save(densenet.state_dict(), path)
    loaded = build_densenet121(pretrained_path=path)
    assert torch.equal(loaded.features.conv0.weight, densenet.features.conv0.weight)
    assert torch.equal(loaded.class_layers.out.bias, densenet.class_layers.out.bias)


def test_pretrained_weights_of_another_head_name_the_layers(tmp_path):
    path = tmp_path / "three_classes.pt"
    torch.save(build_densenet121(out_channels=3).state_dict(), path)
    with pytest.raises(DataError, match=r"class_layers\.out\.weight \(file \(3, 512\)"):
        build_densenet121(pretrained_path=path)


def test_backbone_only_weights_load_when_not_strict(densenet, tmp_path):
    path = tmp_path / "backbone.pt"
    backbone = {k: v for k, v in densenet.state_dict().items() if k.startswith("features.")}
    torch.save(backbone, path)
    with pytest.raises(DataError, match="missing from the file"):
        build_densenet121(pretrained_path=path)
    loaded = build_densenet121(pretrained_path=path, strict=False)
    assert torch.equal(loaded.features.norm5.weight, densenet.features.norm5.weight)
