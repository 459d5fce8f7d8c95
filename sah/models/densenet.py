"""DenseNet-121 with the mortality study's classification head.

The study (AUCMEDI defaults) puts global average pooling, a 512-unit linear layer without
activation, dropout 0.3 and the output layer on the backbone. The module returns logits; the
softmax belongs to the loss and the evaluation.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import cast

from monai.networks.nets import DenseNet121
from torch import nn

from sah.errors import ConfigError
from sah.models.checkpoint import load_weights

HIDDEN_UNITS = 512
_POOLS: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}


class DenseNet121Classifier(DenseNet121):
    """MONAI's DenseNet121 (``features`` unchanged) with the AUCMEDI head as ``class_layers``."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, dropout: float = 0.3
    ) -> None:
        if spatial_dims not in _POOLS:
            raise ConfigError("model.spatial_dims", f"must be 1, 2 or 3, got {spatial_dims}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("model.dropout", f"must be in [0, 1), got {dropout}")
        super().__init__(spatial_dims, in_channels, out_channels, pretrained=False)
        backbone_channels = cast(nn.Linear, self.class_layers.out).in_features
        self.class_layers = nn.Sequential(
            OrderedDict(
                relu=nn.ReLU(),  # the backbone ends on a batch norm
                pool=_POOLS[spatial_dims](1),
                flatten=nn.Flatten(1),
                hidden=nn.Linear(backbone_channels, HIDDEN_UNITS),
                dropout=nn.Dropout(dropout),
                out=nn.Linear(HIDDEN_UNITS, out_channels),
            )
        )

    def module_groups(self) -> dict[str, list[str]]:
        """``backbone``/``encoder``: the dense blocks; ``head``: pooling and the linear layers.

        Freezing ``backbone`` gives the study's first transfer-learning phase.
        """
        return {
            "backbone": ["features"],
            "encoder": ["features"],
            "head": ["class_layers"],
            "all": ["features", "class_layers"],
        }


def build_densenet121(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    dropout: float = 0.3,
    pretrained_path: str | Path | None = None,
    strict: bool = True,
) -> DenseNet121Classifier:
    """DenseNet-121 classifier; ``pretrained_path`` loads weights from a local file only.

    ``strict=False`` accepts a file that lacks some layers (e.g. a backbone-only checkpoint);
    layers present in both must still agree in shape.
    """
    model = DenseNet121Classifier(spatial_dims, in_channels, out_channels, dropout)
    if pretrained_path is not None:
        load_weights(model, pretrained_path, strict=strict)
    return model
