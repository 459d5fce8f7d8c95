"""The segmentation LightningModule: slices in, per-patient 3D scores out."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn

from sah.tasks.losses import get_loss


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Binary Dice; both empty counts as a perfect 1 (nothing to find, nothing found)."""
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * inter / total)


@torch.no_grad()
def predict_slices(net: nn.Module, slices: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Probabilities for a (z, 1, H, W) stack, evaluated in chunks to bound memory."""
    out = [torch.sigmoid(net(slices[i : i + chunk])) for i in range(0, slices.shape[0], chunk)]
    return torch.cat(out)[:, 0]


class SegmentationTask(L.LightningModule):
    """Trains any 2D net on slices and scores whole validation patients with 3D Dice.

    The net arrives ready: pre-trained weights loaded and adapters injected by the caller, so
    the optimiser simply takes whatever still requires grad.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: str = "dice_bce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = get_loss(loss)
        self.lr = lr
        self.weight_decay = weight_decay
        self.threshold = threshold
        self.val_scores: dict[str, float] = {}
        self.val_predictions: dict[str, np.ndarray] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.net(batch["image"])
        loss = self.loss_fn(logits, batch["label"], batch.get("weight"))
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_scores = {}
        self.val_predictions = {}

    def validation_step(self, batch: dict[str, object], batch_idx: int) -> None:
        prob = predict_slices(self.net, batch["image"])  # type: ignore[arg-type]
        pred = (prob >= self.threshold).cpu().numpy()
        truth = batch["label"].cpu().numpy().astype(bool)  # type: ignore[union-attr]
        pid = str(batch["patient_id"])
        self.val_scores[pid] = dice_score(pred, truth)
        # Kept as (x, y, z) for the evaluation that follows fit.
        self.val_predictions[pid] = pred.transpose(1, 2, 0)

    def on_validation_epoch_end(self) -> None:
        if self.val_scores:
            mean = float(np.mean(list(self.val_scores.values())))
            self.log("val/dice", mean, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.net.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
