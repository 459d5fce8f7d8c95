"""Whole-volume outcome classification (mortality study) with the study's transfer schedule.

Transfer learning as AUCMEDI does it: for ``freeze_epochs`` the backbone is frozen and only
the head learns at ``lr``; then everything the run trains (all layers, or the adapters the
caller injected) continues at ``finetune_lr``. At that switch the plateau scheduler and early
stopping start afresh, as AUCMEDI's second ``fit`` does. "Frozen" is complete: no gradients,
and the backbone's batch norms keep their running statistics (eval mode), so the backbone is
bit-for-bit the pre-trained one until the switch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, cast

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader

from sah.errors import ConfigError
from sah.metrics import binary_classification_metrics
from sah.models.groups import GroupedModel, group_parameter_names
from sah.tasks.mortality.focal_loss import focal_loss

log = logging.getLogger(__name__)

# binary_classification_metrics key -> logged name (``val/auc`` as in task=outcome).
METRIC_NAMES = {
    "accuracy": "accuracy",
    "f1": "f1",
    "roc_auc": "auc",
    "balanced_accuracy": "balanced_accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "brier": "brier",
}


def classification_metrics(
    y: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray, threshold: float
) -> dict[str, float]:
    """Accuracy, F1, AUC, balanced accuracy, sensitivity, specificity at ``threshold``, Brier."""
    values = binary_classification_metrics(np.asarray(y), np.asarray(prob), threshold)
    return {name: float(values[key]) for key, name in METRIC_NAMES.items()}


@torch.no_grad()
def predict_probabilities(
    net: nn.Module, loader: DataLoader
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(patient ids, outcomes, probability of outcome 1) over a loader, in eval mode."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    ids: list[str] = []
    ys, probs = [], []
    for batch in loader:
        logits = net(batch["image"].to(device))
        probs.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
        ys.append(batch["label"].cpu())
        ids += [str(p) for p in batch["patient_id"]]
    net.train(was_training)
    if not ids:
        return [], np.zeros(0, dtype=np.int64), np.zeros(0)
    return ids, torch.cat(ys).numpy(), torch.cat(probs).double().numpy()


class ClassificationTask(L.LightningModule):
    """Trains a classifier whose ``module_groups()`` name a ``backbone`` and a ``head``.

    The net arrives ready (pre-trained weights loaded, adapters injected); what requires grad
    then is what the fine-tuning phase trains. The head always trains: it is new for the
    outcome. ``class_weights`` are the focal loss's ``alpha``.
    """

    class_weights: torch.Tensor | None  # a buffer (register_buffer)

    def __init__(
        self,
        net: nn.Module,
        class_weights: Sequence[float] | None = None,
        lr: float = 1e-4,
        finetune_lr: float = 1e-5,
        freeze_epochs: int = 10,
        weight_decay: float = 0.0,
        focal_gamma: float = 2.0,
        threshold: float = 0.5,
        plateau_monitor: str | None = "val/loss",
        plateau_mode: str = "min",
        plateau_factor: float = 0.1,
        plateau_patience: int = 5,
    ) -> None:
        super().__init__()
        if freeze_epochs < 0:
            raise ConfigError("task.module.freeze_epochs", f"must be >= 0, got {freeze_epochs}")
        if not 0.0 < threshold < 1.0:
            raise ConfigError("task.threshold", f"must be in (0, 1), got {threshold}")
        if plateau_mode not in ("min", "max"):
            raise ConfigError("task.module.plateau_mode", f"min or max, got {plateau_mode!r}")
        self.net = net
        self.lr, self.finetune_lr, self.freeze_epochs = lr, finetune_lr, freeze_epochs
        self.weight_decay, self.focal_gamma, self.threshold = weight_decay, focal_gamma, threshold
        self.plateau_monitor, self.plateau_mode = plateau_monitor, plateau_mode
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        weights = None if class_weights is None else torch.tensor(list(class_weights)).float()
        self.register_buffer("class_weights", weights)

        groups = cast(GroupedModel, net).module_groups() if hasattr(net, "module_groups") else {}
        self.backbone_modules = list(groups.get("backbone", []))
        self.backbone_params = group_parameter_names(net, "backbone") if groups else set()
        head = group_parameter_names(net, "head") if "head" in groups else set()
        for name, p in net.named_parameters():
            if name in head:
                p.requires_grad_(True)
        self.finetuned = {n for n, p in net.named_parameters() if p.requires_grad}
        self.backbone_frozen = False
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    # -- the freeze schedule ---------------------------------------------------------------

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze (no grad, batch norms in eval mode) or restore the fine-tuning set."""
        for name, p in self.net.named_parameters():
            if name in self.backbone_params:
                p.requires_grad_(not frozen and name in self.finetuned)
        self.backbone_frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> ClassificationTask:
        super().train(mode)
        if mode and self.backbone_frozen:
            for name in self.backbone_modules:
                self.net.get_submodule(name).eval()
        return self

    def on_train_start(self) -> None:
        # Also right after resuming from a checkpoint taken in either phase.
        self.set_backbone_frozen(self.current_epoch < self.freeze_epochs)

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.freeze_epochs
        if self.backbone_frozen and not frozen:
            self.set_backbone_frozen(False)
            self._start_finetuning()
        elif frozen != self.backbone_frozen:
            self.set_backbone_frozen(frozen)
        self.log("train/backbone_frozen", float(self.backbone_frozen), on_epoch=True)

    def _start_finetuning(self) -> None:
        """Drop to ``finetune_lr`` and restart the plateau scheduler and early stopping."""
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.finetune_lr
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, ReduceLROnPlateau):
                scheduler._reset()
                scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
        for callback in self.trainer.early_stopping_callbacks:
            callback.wait_count = 0
            worst = torch.tensor(torch.inf if callback.monitor_op == torch.lt else -torch.inf)
            callback.best_score = worst
        log.info(
            "epoch %d: backbone unfrozen, fine-tuning at lr %g",
            self.current_epoch,
            self.finetune_lr,
        )

    # -- training and validation -----------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, labels, self.class_weights, self.focal_gamma)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.net(batch["image"]), batch["label"])
        batch_size = len(batch["label"])
        self.log(
            "train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size
        )
        return loss

    def on_train_epoch_end(self) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", lr, on_epoch=True)

    def on_validation_epoch_start(self) -> None:
        self._val_logits, self._val_labels = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._val_logits.append(self.net(batch["image"]).detach().float().cpu())
        self._val_labels.append(batch["label"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_logits:
            return
        logits, labels = torch.cat(self._val_logits), torch.cat(self._val_labels)
        self.log("val/loss", self.loss(logits, labels), prog_bar=True)
        if labels.unique().numel() == 2:
            prob = torch.softmax(logits, dim=1)[:, 1].double().numpy()
            metrics = classification_metrics(labels.numpy(), prob, self.threshold)
            for name, value in metrics.items():
                self.log(f"val/{name}", value, prog_bar=name == "auc")

    def configure_optimizers(self) -> Any:
        params = [p for n, p in self.net.named_parameters() if n in self.finetuned]
        if not params:
            raise ConfigError("adapter", "nothing to train: no parameter requires grad")
        lr = self.lr if self.freeze_epochs > 0 else self.finetune_lr
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        if not self.plateau_monitor:
            return optimizer
        scheduler = ReduceLROnPlateau(
            optimizer,
            mode=cast(Literal["min", "max"], self.plateau_mode),  # checked in __init__
            factor=self.plateau_factor,
            patience=self.plateau_patience,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.plateau_monitor},
        }
