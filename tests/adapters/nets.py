"""Small models with module groups, standing in for the project's nets in adapter tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinySegNet(nn.Module):
    """Encoder (conv-BN-ReLU, dilated conv), transposed-conv decoder, 1x1 head, a linear gate."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        c = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=2, dilation=2, stride=2),
            nn.BatchNorm2d(c),
            nn.ReLU(),
        )
        self.bottleneck = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=2), nn.ReLU())
        self.gate = nn.Linear(c, c)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bottleneck(self.encoder(x))
        gate = torch.sigmoid(self.gate(h.mean(dim=(2, 3))))
        h = h * gate[:, :, None, None]
        return self.head(self.decoder(h))

    def module_groups(self) -> dict[str, list[str]]:
        return {
            "encoder": ["encoder"],
            "bottleneck": ["bottleneck", "gate"],
            "decoder": ["decoder"],
            "head": ["head"],
        }


class TinyNoGroups(nn.Module):
    """A model without ``module_groups``: targets are regular expressions (or ``all``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(2, 4, 3, padding=1)
        self.conv_b = nn.Conv3d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv_b(F.relu(self.conv_a(x))))
        return self.fc(h.mean(dim=(2, 3, 4)))
