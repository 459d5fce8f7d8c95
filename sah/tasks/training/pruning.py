"""Optuna pruning inside the Lightning loop: report the validation metric every epoch to the
sweep's trial, and stop the trial early when the study's pruner says it will not catch up.

The trial lives in the sweep's storage (``optuna.storage``, ``optuna.study_name``,
``optuna.trial_number`` reach the job as overrides), so this works in any process the launcher
picks. The pruner is the one the sweeper stored on the study (``hydra.sweeper.pruner``). Under
DDP only rank 0 talks to the storage; its decision is broadcast so every rank stops together.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

PRUNER_ATTR = "sah.pruner"


def build_pruner(spec: dict[str, Any] | None):
    """An Optuna pruner from ``{"_target_": "optuna.pruners.MedianPruner", **kwargs}``."""
    import optuna

    if not spec:
        return optuna.pruners.NopPruner()
    spec = dict(spec)
    module, _, name = str(spec.pop("_target_")).rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec)


class OptunaPruning(L.Callback):
    """Reports ``monitor`` after each validation epoch; sets ``pruned_epoch`` when pruned."""

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_number = trial_number
        self.monitor = monitor
        self.pruned_epoch: int | None = None
        self._trial: Any = None
        self._enabled = True

    def _get_trial(self) -> Any:
        if self._trial is None:
            import optuna

            from sah.tracking.studies import load_trial, open_storage

            study = optuna.load_study(
                study_name=self.study_name, storage=open_storage(self.storage, "optuna.storage")
            )
            if len(study.directions) > 1:  # Optuna cannot prune multi-objective trials
                self._enabled = False
                return None
            pruner = build_pruner(study.user_attrs.get(PRUNER_ATTR))
            self._trial = load_trial(self.storage, self.study_name, self.trial_number, pruner)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._enabled:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            trial = self._get_trial() if value is not None else None
            if value is not None and trial is not None:
                epoch = trainer.current_epoch
                trial.report(float(value), step=epoch)
                prune = bool(trial.should_prune())
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned_epoch = trainer.current_epoch
            trainer.should_stop = True
            log.info(
                "Optuna trial %d pruned at epoch %d (%s below the study's pruner threshold)",
                self.trial_number,
                self.pruned_epoch,
                self.monitor,
            )


def trial_callbacks(
    storage: str | None, study_name: str | None, trial_number: int | None, monitor: str
) -> list[L.Callback]:
    """The pruning callback when this job is an Optuna trial, else nothing."""
    if storage is None or study_name is None or trial_number is None:
        return []
    return [OptunaPruning(storage, study_name, int(trial_number), monitor)]


def raise_if_pruned(callbacks: list[L.Callback]) -> None:
    """Raise ``optuna.TrialPruned`` after fit when a pruning callback stopped the trial; the
    sweeper then records the trial as PRUNED."""
    for callback in callbacks:
        if isinstance(callback, OptunaPruning) and callback.pruned_epoch is not None:
            import optuna

            raise optuna.TrialPruned(
                f"trial {callback.trial_number} pruned at epoch {callback.pruned_epoch}"
            )
