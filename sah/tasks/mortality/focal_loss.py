"""Class-weighted focal loss on softmax logits, as the mortality study trained with (AUCMEDI).

Per case with true class ``t`` and softmax probability ``p_t``::

    loss = -alpha[t] * (1 - p_t) ** gamma * log(p_t)

averaged over the batch (AUCMEDI's ``categorical_focal_loss``: sum over the one-hot classes, then
the mean). ``gamma`` down-weights easy cases; ``alpha`` carries the class weights, so the rare
outcome (death, about 28 % in the study) counts as much in total as the common one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sah.errors import ConfigError


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: torch.Tensor | None = None,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Mean focal loss of ``logits`` (batch, classes) against class indices ``target`` (batch,).

    ``alpha`` (classes,) weights each case by its true class; None weights every class 1.
    Computed from ``log_softmax`` so that confident cases do not underflow to ``log(0)``.
    """
    log_prob = F.log_softmax(logits.float(), dim=1)
    log_pt = log_prob.gather(1, target.long().view(-1, 1)).squeeze(1)
    per_case = -((1.0 - log_pt.exp()).clamp_min(0.0) ** gamma) * log_pt
    if alpha is not None:
        per_case = per_case * alpha.to(per_case)[target.long()]
    return per_case.mean()


def balanced_class_weights(labels: Sequence[int] | np.ndarray, n_classes: int = 2) -> list[float]:
    """``n / (n_classes * n_c)`` per class (sklearn's "balanced", which AUCMEDI uses).

    Every class must occur: a weight for an absent class would be infinite.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    if len(counts) != n_classes or (counts == 0).any():
        raise ConfigError(
            "task.module.class_weights",
            f"balanced weights need every one of {n_classes} classes in the training patients, "
            f"got counts {counts.tolist()}",
        )
    return [float(counts.sum() / (n_classes * c)) for c in counts]
