"""Segmentation losses on logits, with an optional per-sample weight (window-jitter weighting).

Nets give either one logit per voxel (sigmoid) or two channels (softmax, as the Swin UNETR
study's net): ``foreground_logit`` turns both into one foreground logit, since
``softmax(l)[1] == sigmoid(l1 - l0)``. The losses below then need no second version: BCE on that
logit is exactly the two-class cross-entropy, and Dice scores the foreground channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sah.errors import ConfigError


def foreground_logit(logits: torch.Tensor) -> torch.Tensor:
    """(N, 1, ...) foreground logit from a 1-channel (sigmoid) or 2-channel (softmax) output."""
    channels = logits.shape[1]
    if channels == 1:
        return logits
    if channels == 2:
        return logits[:, 1:2] - logits[:, 0:1]
    raise ConfigError(
        "model.out_channels",
        f"binary segmentation needs 1 (sigmoid) or 2 (softmax) output channels, got {channels}",
    )


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """(N, 1, ...) probability of blood for a 1- or 2-channel output."""
    return torch.sigmoid(foreground_logit(logits))


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1.0
) -> torch.Tensor:
    """1 - soft Dice of sigmoid outputs per sample, then the (weighted) mean over the batch.

    ``eps`` smooths empty slices: a negative slice predicted empty scores a loss near 0.
    """
    prob = foreground_probability(logits).flatten(1)
    target = target.flatten(1).to(prob.dtype)
    inter = (prob * target).sum(1)
    dice = (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)
    return _weighted_mean(1 - dice, weight)


def bce_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    logit = foreground_logit(logits)
    per_sample = F.binary_cross_entropy_with_logits(
        logit, target.to(logit.dtype), reduction="none"
    ).flatten(1)
    return _weighted_mean(per_sample.mean(1), weight)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1e-8)


def dice_bce_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    return soft_dice_loss(logits, target, weight) + bce_loss(logits, target, weight)


# "dice_ce"/"ce" name the two-channel view of the same functions (MONAI's DiceCELoss on a
# softmax net, restricted to the foreground channel for the Dice term).
LOSSES = {
    "dice": soft_dice_loss,
    "dice_bce": dice_bce_loss,
    "dice_ce": dice_bce_loss,
    "bce": bce_loss,
    "ce": bce_loss,
}


def get_loss(name: str):
    """Look a loss up by its config name (``task.module.loss``)."""
    if name not in LOSSES:
        raise ConfigError(
            "task.module.loss", f"unknown loss {name!r}", f"use one of {sorted(LOSSES)}"
        )
    return LOSSES[name]
