"""Training progress: Lightning's rich bar in a terminal, one plain line per epoch in a file.

A redrawn bar written to a file (nohup, SLURM) shows up once, at the end; a log should say
which epoch a run is at and how its numbers move, so without a terminal each epoch ends with

    [12:00:31] epoch 2/3: train/loss 0.8123, val/dice 0.4411 (12 s)

``conf/callbacks/default.yaml`` builds the bar with ``progress_bar()``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from sah.data.progress import is_terminal, stamp


def progress_bar() -> ProgressBar:
    """RichProgressBar when stdout is a terminal, else ``EpochLines`` on stderr."""
    if is_terminal(sys.stdout):
        return RichProgressBar()
    return EpochLines()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # a tensor with several values
        return None


def _format(number: float) -> str:
    """Four decimals for metrics and losses of the usual size (0.0000 rather than 0)."""
    if number == 0 or 1e-3 <= abs(number) < 1e4:
        return f"{number:.4f}"
    return f"{number:.3g}"


class EpochLines(ProgressBar):
    """One line per training epoch: epoch i/n, the train loss, the validation metrics computed
    in this epoch, and the seconds the epoch took."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream
        self._enabled = True
        self._started = time.perf_counter()
        self._validated = False

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        print(self.line(trainer), file=self.stream or sys.stderr, flush=True)

    def line(self, trainer: L.Trainer) -> str:
        epoch = trainer.current_epoch + 1
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        metrics = trainer.callback_metrics
        shown = ["train/loss"] if "train/loss" in metrics else []
        if self._validated:
            shown += sorted(name for name in metrics if name.startswith("val/"))
        values = []
        for name in shown:
            number = _number(metrics[name])
            if number is not None:
                values.append(f"{name} {_format(number)}")
        seconds = time.perf_counter() - self._started
        head = f"epoch {epoch}/{total}" if total else f"epoch {epoch}"
        body = f": {', '.join(values)}" if values else ""
        return f"{stamp()} {head}{body} ({seconds:.0f} s)"
