"""The multi-view Unet of the LoRA-on-Unet SAH study (Minoccheri, Hodgman et al.).

A 2D net on axial slices built from three block types of the lab's public code:

- ``DoubleConv`` (their M1): two 3x3 conv-BN-ReLU;
- ``DilatedSkip`` (their M2): three 3x3 conv-BN-ReLU with dilations 1, 2, 4, whose output is
  concatenated after its input, so it widens ``c`` channels to ``c + features``;
- ``OutputHead`` (their M3): two 3x3 conv-BN-ReLU and a 1x1 conv to the logits.

With the defaults (1 input channel, 32 features, 2 levels) it has 232,737 parameters, as the
published net. Layer order inside every block and the concatenation order (upsampled features
first, then the skip) follow the published net, so its state dicts load with
``load_weights(model, path, prefix_map=published_key_map())``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sah.errors import ConfigError

DILATIONS = (1, 2, 4)


def _conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU (M1); a flat Sequential so layer indices match the published net."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__(*_conv_bn_relu(in_channels, features), *_conv_bn_relu(features, features))


class DilatedSkip(nn.Module):
    """Dilated context branch (M2): ``cat(x, convs(x))``, widening the receptive field cheaply."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, dilation in enumerate(DILATIONS):
            layers += _conv_bn_relu(in_channels if i == 0 else features, features, dilation)
        self.layers = nn.Sequential(*layers)
        self.out_channels = in_channels + features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.layers(x)), dim=1)


class OutputHead(nn.Sequential):
    """Two 3x3 conv-BN-ReLU and a 1x1 conv to the logits (M3)."""

    def __init__(self, in_channels: int, features: int, out_channels: int) -> None:
        super().__init__(
            *_conv_bn_relu(in_channels, features),
            *_conv_bn_relu(features, features),
            nn.Conv2d(features, out_channels, 1),
        )


class DownStep(nn.Module):
    """Convolve and halve the resolution; the dilated branch on the step's input is the skip."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv = DoubleConv(features, features)
        self.skip = DilatedSkip(features, features)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool(self.conv(x)), self.skip(x)


class UpStep(nn.Module):
    """Convolve, double the resolution (bilinear) and append the matching skip."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.conv(x), scale_factor=2, mode="bilinear", align_corners=False)
        return torch.cat((up, skip), dim=1)


class MVUnet(nn.Module):
    """Multi-view Unet; input ``(N, in_channels, H, W)`` with H, W divisible by ``2**levels``.

    Returns logits ``(N, out_channels, H, W)``; the sigmoid belongs to the loss.
    """

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, features: int = 32, levels: int = 2
    ) -> None:
        super().__init__()
        for key, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("features", features),
            ("levels", levels),
        ):
            if value < 1:
                raise ConfigError(f"model.{key}", f"must be >= 1, got {value}")
        self.levels = levels
        skip_channels = 2 * features
        self.stem = DoubleConv(in_channels, features)
        self.down = nn.ModuleList(DownStep(features) for _ in range(levels))
        self.bridge = DilatedSkip(features, features)
        # The first up step sees the bridge output (2F); later ones see F upsampled + 2F skip.
        up_inputs = [skip_channels] + [features + skip_channels] * (levels - 1)
        self.up = nn.ModuleList(UpStep(c, features) for c in up_inputs)
        self.head = OutputHead(features + skip_channels, features, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.levels
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"MVUnet with {self.levels} levels needs H and W divisible by {factor}, "
                f"got {tuple(x.shape[-2:])}; crop or pad the slices"
            )
        x = self.stem(x)
        skips = []
        for step in self.down:
            x, skip = step(x)
            skips.append(skip)
        x = self.bridge(x)
        for step, skip in zip(self.up, reversed(skips), strict=True):
            x = step(x, skip)
        return self.head(x)

    def module_groups(self) -> dict[str, list[str]]:
        """The fine-tuning groups of the published code, plus generic aliases.

        The dilated skip branches and the bridge belong to no group but ``all``, as published.
        """
        down_convs = [f"down.{i}.conv" for i in range(self.levels)]
        up_convs = [f"up.{i}.conv" for i in range(self.levels)]
        groups = {
            "top": ["stem", "head"],
            "left": ["stem", *down_convs],
            "bottom": [down_convs[-1], up_convs[0]],
            "right": [*up_convs, "head"],
            "head": ["head"],
            "all": [name for name, _ in self.named_children()],
        }
        groups["encoder"] = groups["left"]
        groups["bottleneck"] = groups["bottom"]
        groups["decoder"] = groups["right"]
        return groups


def published_key_map(levels: int = 2) -> dict[str, str]:
    """Key prefixes of the lab's published ``MV`` state dicts -> this module's keys.

    Pass it as ``load_weights(..., prefix_map=published_key_map(levels))``.
    """
    mapping = {
        "M1.DoubleConv.": "stem.",
        "M2.TripleDia.": "bridge.layers.",
        "M3.TripleOut.": "head.",
    }
    for i in range(levels):
        mapping[f"down_list.{i}.M1.DoubleConv."] = f"down.{i}.conv."
        mapping[f"down_list.{i}.M2.TripleDia."] = f"down.{i}.skip.layers."
        mapping[f"up_list.{i}.M1.DoubleConv."] = f"up.{i}.conv."
    return mapping
