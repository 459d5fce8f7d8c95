"""MONAI's residual UNet with named module groups, so adapters can target its parts.

MONAI nests the net recursively: ``model = Sequential(down, SkipConnection(inner), up)`` where
``inner`` has the same shape one level deeper, and the innermost ``SkipConnection`` wraps the
bottom layer alone. The groups are found by walking that nesting, so they hold for any depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard, cast

from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet
from torch import nn


class GroupedUNet(UNet):
    """``monai.networks.nets.UNet`` (same state-dict keys) plus ``module_groups()``."""

    def module_groups(self) -> dict[str, list[str]]:
        """``encoder``/``decoder``: the down/up layers; ``bottleneck``: the bottom layer;
        ``head``: the last conv(s) that produce the logits (part of the decoder)."""
        encoder: list[str] = []
        decoder: list[str] = []
        node: nn.Module = self.model
        name = "model"
        while _is_unet_level(node):
            encoder.append(f"{name}.0")
            decoder.insert(0, f"{name}.2")
            node, name = cast(SkipConnection, node[1]).submodule, f"{name}.1.submodule"
        # With residual units the top up layer is (transposed conv, output conv); without, the
        # transposed conv itself makes the logits.
        head = f"{decoder[-1]}.1" if self.num_res_units > 0 else decoder[-1]
        return {
            "encoder": encoder,
            "bottleneck": [name],
            "decoder": decoder,
            "head": [head],
            "all": ["model"],
        }


def _is_unet_level(node: nn.Module) -> TypeGuard[nn.Sequential]:
    return (
        isinstance(node, nn.Sequential) and len(node) == 3 and isinstance(node[1], SkipConnection)
    )


def build_unet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    norm: str = "batch",
    dropout: float = 0.0,
) -> GroupedUNet:
    """A MONAI residual UNet returning logits; input sizes divisible by ``prod(strides)``."""
    return GroupedUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )
