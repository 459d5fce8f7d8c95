"""The segmentation task's learning-rate decay, as the optimiser actually applies it."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sah.errors import ConfigError
from sah.tasks.segmentation.module import SegmentationTask


class _Recorder(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _fit(schedule: str, epochs: int, quiet_trainer) -> list[float]:
    images = torch.randn(4, 1, 8, 8)
    labels = (images > 1).float()
    loader = DataLoader(
        TensorDataset(images, labels),
        batch_size=2,
        collate_fn=lambda rows: {
            "image": torch.stack([r[0] for r in rows]),
            "label": torch.stack([r[1] for r in rows]),
        },
    )
    task = SegmentationTask(torch.nn.Conv2d(1, 1, 3, padding=1), lr=0.01, lr_schedule=schedule)
    recorder = _Recorder()
    quiet_trainer(epochs, [recorder]).fit(task, train_dataloaders=loader)
    return recorder.lrs


@pytest.mark.parametrize(
    ("schedule", "factor"),
    [
        ("constant", lambda t: 1.0),
        ("cosine", lambda t: 0.5 * (1 + math.cos(math.pi * t))),
        ("poly", lambda t: (1 - t) ** 0.9),
    ],
)
def test_each_epoch_starts_at_the_scheduled_rate(schedule: str, factor, quiet_trainer) -> None:
    epochs = 4
    expected = [0.01 * factor(e / epochs) for e in range(epochs)]
    assert _fit(schedule, epochs, quiet_trainer) == pytest.approx(expected, rel=1e-9)


def test_an_unknown_schedule_names_the_key_before_training() -> None:
    with pytest.raises(ConfigError, match=r"task\.module\.lr_schedule.*cosine"):
        SegmentationTask(torch.nn.Conv2d(1, 1, 1), lr_schedule="step")
