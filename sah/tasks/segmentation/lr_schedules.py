"""Learning-rate decay over a run's epochs, for the segmentation task.

A constant rate is what short fine-tuning runs want; a long run from scratch ends better when
the rate decays to zero (nnU-Net's polynomial decay, or a cosine), because the last epochs
then refine instead of bouncing around the optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sah.errors import ConfigError

POLY_EXPONENT = 0.9  # nnU-Net's

_FACTORS: dict[str, Callable[[float], float]] = {
    "constant": lambda progress: 1.0,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "poly": lambda progress: (1.0 - progress) ** POLY_EXPONENT,
}
SCHEDULES = tuple(_FACTORS)


def check_schedule(schedule: str) -> None:
    """Raise naming ``task.module.lr_schedule`` unless ``schedule`` is one of ``SCHEDULES``."""
    if schedule not in _FACTORS:
        raise ConfigError(
            "task.module.lr_schedule",
            f"unknown schedule {schedule!r}",
            f"use one of {', '.join(SCHEDULES)}",
        )


def lr_factor(schedule: str, epoch: int, max_epochs: int) -> float:
    """Multiplier of the initial rate at the start of ``epoch`` (0-based) of ``max_epochs``."""
    check_schedule(schedule)
    if max_epochs < 1:
        raise ConfigError(
            "trainer.max_epochs",
            f"a {schedule} learning-rate schedule needs a finite epoch count, got {max_epochs}",
            "set trainer.max_epochs, or task.module.lr_schedule=constant",
        )
    return _FACTORS[schedule](min(epoch, max_epochs) / max_epochs)
