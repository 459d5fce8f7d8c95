"""The module-groups contract (docs/CONVENTIONS.md) for every model in sah.models."""

from __future__ import annotations

import pytest

from sah.errors import ConfigError
from sah.models import (
    MVUnet,
    build_densenet121,
    build_swin_unetr,
    build_unet,
    group_parameter_names,
)

BUILDERS = {
    "mv_unet": lambda: MVUnet(),
    "unet": lambda: build_unet(),
    "swin_unetr": lambda: build_swin_unetr(feature_size=12),
    "densenet121": lambda: build_densenet121(),
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def model(request):
    return BUILDERS[request.param]()


def test_every_group_names_existing_modules(model):
    modules = dict(model.named_modules())
    for group, names in model.module_groups().items():
        assert names, group
        for name in names:
            assert name in modules, f"{group}: {name}"
            assert group_parameter_names(model, group), group


def test_all_covers_every_parameter(model):
    everything = {name for name, _ in model.named_parameters()}
    listed = model.module_groups()["all"]
    under_all = {n for n in everything if n.startswith(tuple(f"{m}." for m in listed))}
    assert under_all == everything


def test_shared_group_names_exist_and_encoder_is_not_decoder(model):
    groups = model.module_groups()
    assert {"encoder", "head", "all"} <= set(groups)
    if "decoder" in groups:
        assert {"bottleneck"} <= set(groups)
        encoder = group_parameter_names(model, "encoder")
        assert not encoder & group_parameter_names(model, "decoder")


def test_unknown_group_is_a_config_error_listing_the_choices(model):
    with pytest.raises(ConfigError, match="use one of"):
        group_parameter_names(model, "nonexistent")
