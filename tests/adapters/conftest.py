"""Layers covering every geometry the adapters must honour, and small shared helpers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sah.adapters import AdapterConfig, inject

LORA = ["lora_c", "conv_lora", "cp_lora"]
DORA = ["dora_c", "conv_dora", "cp_dora"]
METHODS = LORA + DORA
PATHS = ("weight", "lowrank", "lowrank_taps")  # every way a training step can be evaluated


def _layers() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """name -> (layer, input shape). Small, so the index-loop oracles stay fast."""
    return {
        "linear": (nn.Linear(6, 5), (3, 4, 6)),
        "conv1d_strided_dilated": (nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2), (2, 4, 11)),
        "conv1d_circular": (nn.Conv1d(4, 6, 3, padding=1, padding_mode="circular"), (2, 4, 9)),
        "conv2d": (nn.Conv2d(4, 6, 3, padding=1), (2, 4, 8, 9)),
        "conv2d_dilated": (nn.Conv2d(4, 6, 3, padding=2, dilation=2), (2, 4, 9, 8)),
        "conv2d_grouped_strided": (
            nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(2, 1), groups=2),
            (2, 4, 8, 9),
        ),
        "conv2d_depthwise": (nn.Conv2d(4, 8, 3, padding=1, groups=4, bias=False), (2, 4, 7, 7)),
        "conv2d_reflect": (
            nn.Conv2d(4, 6, 3, padding=2, dilation=2, padding_mode="reflect"),
            (2, 4, 8, 9),
        ),
        "conv2d_circular_strided": (
            nn.Conv2d(4, 6, 3, padding=1, stride=2, padding_mode="circular"),
            (2, 4, 8, 9),
        ),
        "conv2d_replicate": (nn.Conv2d(4, 6, 3, padding=1, padding_mode="replicate"), (2, 4, 6, 7)),
        "conv2d_same_even": (nn.Conv2d(4, 6, 4, padding="same"), (2, 4, 8, 9)),
        "conv2d_1x1": (nn.Conv2d(4, 6, 1), (2, 4, 5, 5)),
        "conv3d_strided": (nn.Conv3d(4, 6, 3, padding=1, stride=(1, 2, 1)), (1, 4, 4, 5, 4)),
        "conv3d_1x1x1": (nn.Conv3d(4, 6, 1), (2, 4, 3, 3, 3)),
        "conv3d_grouped_dilated": (
            nn.Conv3d(4, 6, 3, padding=2, dilation=2, groups=2),
            (1, 4, 5, 5, 5),
        ),
        "convT1d_output_padding": (
            nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1),
            (2, 4, 7),
        ),
        "convT2d_grouped_dilated": (
            nn.ConvTranspose2d(
                4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2
            ),
            (2, 4, 5, 6),
        ),
        "convT2d_1x1": (nn.ConvTranspose2d(4, 6, 1), (2, 4, 5, 6)),
        "convT3d": (
            nn.ConvTranspose3d(4, 6, 2, stride=2, output_padding=1, bias=False),
            (2, 4, 3, 3, 3),
        ),
    }


LAYERS = _layers()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # The layers are tiny: one thread is faster than two and leaves the CPU to others.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def fresh_layer(name: str, dtype=torch.float64) -> tuple[nn.Module, torch.Tensor]:
    """A float64 copy of a test layer with random weights, and a matching input."""
    layer, shape = LAYERS[name]
    layer = copy.deepcopy(layer).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return layer, torch.randn(*shape, dtype=dtype)


def adapted(layer: nn.Module, method: str, rank: int = 2, **kw) -> nn.Sequential:
    """``layer`` inside a Sequential (as ``"0"``) with ``method`` injected."""
    model = nn.Sequential(copy.deepcopy(layer))
    inject(model, AdapterConfig(method, rank, **kw))
    return model


def randomise_adapter(model: nn.Module, generator_seed: int = 1) -> None:
    """Give every trainable tensor non-trivial values (the zero factor included)."""
    gen = torch.Generator().manual_seed(generator_seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5
                p.copy_(noise + (1.5 if name.endswith("magnitude") else 0.0))
