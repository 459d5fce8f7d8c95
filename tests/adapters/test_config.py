"""AdapterConfig validation: bad input raises AdapterError naming the key."""

from __future__ import annotations

import math

import pytest

from sah.adapters import METHODS, AdapterConfig, AdapterError


@pytest.mark.parametrize("rank", [0, -1, 2.5, True, None])
def test_rank_must_be_positive_int(rank):
    with pytest.raises(AdapterError, match=r"adapter\.rank"):
        AdapterConfig("conv_lora", rank)


def test_unknown_method_names_the_key():
    with pytest.raises(AdapterError, match=r"adapter\.method.*'lora_x'"):
        AdapterConfig("lora_x", 4)


def test_adapter_error_is_value_error():
    assert issubclass(AdapterError, ValueError)


@pytest.mark.parametrize("method", ["full", "none"])
def test_baselines_ignore_rank(method):
    assert AdapterConfig(method, None).scale == 0.0
    assert AdapterConfig(method, 8).scale == 0.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rank", [0, -1, 2.5, True, "4"])
def test_every_method_refuses_a_rank_that_is_not_a_positive_integer(method, rank):
    with pytest.raises(AdapterError, match=r"adapter\.rank: must be a positive integer"):
        AdapterConfig(method, rank)


def test_alpha_defaults_to_rank_and_scale():
    assert AdapterConfig("cp_lora", 8).scale == 1.0
    assert AdapterConfig("cp_lora", 8, alpha=16).scale == 2.0
    assert AdapterConfig("cp_lora", 16, rslora=True).scale == pytest.approx(16 / math.sqrt(16))
    assert AdapterConfig("cp_lora", 4, alpha=8, rslora=True).scale == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"dropout": 1.0}, "adapter.dropout"),
        ({"dropout": -0.1}, "adapter.dropout"),
        ({"target": []}, "adapter.target"),
        ({"target": ""}, "adapter.target"),
        ({"alpha": float("nan")}, "adapter.alpha"),
    ],
)
def test_other_bad_values(kwargs, key):
    with pytest.raises(AdapterError, match=key):
        AdapterConfig("conv_dora", 4, **kwargs)


def test_round_trip_through_dict():
    config = AdapterConfig("dora_c", 4, alpha=2.0, target=["decoder", "head"], train_norm=True)
    assert AdapterConfig.from_dict(config.to_dict()) == config
    assert set(METHODS) == {
        "lora_c",
        "conv_lora",
        "cp_lora",
        "dora_c",
        "conv_dora",
        "cp_dora",
        "full",
        "none",
    }
