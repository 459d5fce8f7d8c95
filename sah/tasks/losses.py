"""Segmentation losses on logits, with an optional per-sample weight (window-jitter weighting)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sah.errors import ConfigError


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1.0
) -> torch.Tensor:
    """1 - soft Dice of sigmoid outputs per sample, then the (weighted) mean over the batch.

    ``eps`` smooths empty slices: a negative slice predicted empty scores a loss near 0.
    """
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1).to(prob.dtype)
    inter = (prob * target).sum(1)
    dice = (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)
    return _weighted_mean(1 - dice, weight)


def bce_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    per_sample = F.binary_cross_entropy_with_logits(
        logits, target.to(logits.dtype), reduction="none"
    ).flatten(1)
    return _weighted_mean(per_sample.mean(1), weight)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1e-8)


LOSSES = {
    "dice": soft_dice_loss,
    "dice_bce": lambda logits, target, weight=None: (
        soft_dice_loss(logits, target, weight) + bce_loss(logits, target, weight)
    ),
    "bce": bce_loss,
}


def get_loss(name: str):
    """Look a loss up by its config name (``task.module.loss``)."""
    if name not in LOSSES:
        raise ConfigError(
            "task.module.loss", f"unknown loss {name!r}", f"use one of {sorted(LOSSES)}"
        )
    return LOSSES[name]
