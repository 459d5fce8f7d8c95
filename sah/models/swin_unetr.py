"""MONAI's Swin UNETR with named module groups (the blood-segmentation study's net).

The study used in 1 / out 2 channels, feature size 48, batch norm and gradient checkpointing.
MONAI >= 1.5 infers the input size at run time (``img_size`` is gone); each spatial size must
be divisible by 32, which the study's 128x128x64 sliding-window ROI is.
"""

from __future__ import annotations

import importlib.util

from monai.networks.nets import SwinUNETR
from torch import nn

from sah.errors import ConfigError

SKIP_BLOCKS = ("encoder1", "encoder2", "encoder3", "encoder4")
BOTTLENECK_BLOCK = "encoder10"
UP_BLOCKS = ("decoder5", "decoder4", "decoder3", "decoder2", "decoder1")
OUTPUT_BLOCK = "out"


class GroupedSwinUNETR(SwinUNETR):
    """``monai.networks.nets.SwinUNETR`` (same state-dict keys) plus ``module_groups()``."""

    def module_groups(self) -> dict[str, list[str]]:
        """Groups; ``attention`` and ``mlp`` list the transformer's Linear layers for LoRA.

        ``encoder``: the Swin transformer; ``attention``: its qkv and output projections;
        ``mlp``: its feed-forward Linear layers; ``skip``: the conv blocks on the transformer's
        skip features; ``bottleneck``: the conv block on the deepest features; ``decoder``: the
        skip blocks, the up blocks and the output conv (everything convolutional but the
        bottleneck); ``head``: the output 1x1 conv.
        """
        attention, mlp = [], []
        for name, module in self.swinViT.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            parent, _, leaf = name.rpartition(".")
            if parent.endswith("attn") and leaf in ("qkv", "proj"):
                attention.append(f"swinViT.{name}")
            elif parent.endswith("mlp"):
                mlp.append(f"swinViT.{name}")
        return {
            "encoder": ["swinViT"],
            "attention": attention,
            "mlp": mlp,
            "skip": list(SKIP_BLOCKS),
            "bottleneck": [BOTTLENECK_BLOCK],
            "decoder": [*SKIP_BLOCKS, *UP_BLOCKS, OUTPUT_BLOCK],
            "head": [OUTPUT_BLOCK],
            "all": [name for name, _ in self.named_children()],
        }


def build_swin_unetr(
    in_channels: int = 1,
    out_channels: int = 2,
    feature_size: int = 48,
    spatial_dims: int = 3,
    use_checkpoint: bool = False,
    norm_name: str = "batch",
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    dropout_path_rate: float = 0.0,
    use_v2: bool = False,
) -> GroupedSwinUNETR:
    """A Swin UNETR returning logits; ``use_checkpoint`` trades compute for activation memory."""
    if importlib.util.find_spec("einops") is None:
        # MONAI imports einops lazily and would fail only at the first forward pass.
        raise ImportError("Swin UNETR needs the 'einops' package: pip install einops")
    if feature_size % 12:
        raise ConfigError("model.feature_size", f"must be a multiple of 12, got {feature_size}")
    return GroupedSwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        spatial_dims=spatial_dims,
        use_checkpoint=use_checkpoint,
        norm_name=norm_name,
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
        dropout_path_rate=dropout_path_rate,
        use_v2=use_v2,
    )
