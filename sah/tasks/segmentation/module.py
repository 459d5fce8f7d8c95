"""The segmentation LightningModule: slices or 3D patches in, per-patient 3D scores out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from torch import nn

from sah.errors import ConfigError
from sah.metrics import dice
from sah.tasks.segmentation.losses import foreground_probability, get_loss
from sah.tasks.segmentation.lr_schedules import check_schedule, lr_factor
from sah.tasks.segmentation.sliding_window import sliding_window_from


@torch.no_grad()
def predict_slices(net: nn.Module, slices: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Probabilities for a (z, 1, H, W) stack, evaluated in chunks to bound memory."""
    out = [
        foreground_probability(net(slices[i : i + chunk])) for i in range(0, slices.shape[0], chunk)
    ]
    return torch.cat(out)[:, 0]


class SegmentationTask(L.LightningModule):
    """Trains a 2D net on slices or a 3D net on patches; scores whole validation patients with
    3D Dice.

    The net arrives ready: pre-trained weights loaded and adapters injected by the caller, so
    the optimiser simply takes whatever still requires grad. It may give one logit (sigmoid) or
    two channels (softmax); losses and probabilities handle both
    (``sah.tasks.segmentation.losses``).
    Validation batches say which kind they are: a stack of slices (z, 1, H, W) is predicted
    slice by slice, a volume (1, 1, x, y, z) by sliding windows of ``roi_size`` with Gaussian
    blending (``sah.tasks.segmentation.sliding_window``), mirrored along ``tta_flip_axes`` if given.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: str = "dice_bce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        threshold: float = 0.5,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 4,
        sw_overlap: float = 0.25,
        tta_flip_axes: Sequence[int] = (),
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = get_loss(loss)
        self.lr = lr
        check_schedule(lr_schedule)  # an unknown name fails here, not after the first epoch
        self.lr_schedule = lr_schedule
        self.weight_decay = weight_decay
        self.threshold = threshold
        self.sliding_window = sliding_window_from(
            roi_size, sw_batch_size, sw_overlap, tta_flip_axes
        )
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

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        image: torch.Tensor = batch["image"]
        truth = batch["label"].cpu().numpy().astype(bool)
        pid = str(batch["patient_id"])
        if image.ndim == 5:  # one whole volume (1, 1, x, y, z): already (x, y, z)
            pred = (self.volume_probability(image) >= self.threshold).cpu().numpy()
        else:  # a stack of slices (z, 1, H, W): kept as (x, y, z) for the later evaluation
            prob = predict_slices(self.net, image)
            pred = (prob >= self.threshold).cpu().numpy()
            truth, pred = truth.transpose(1, 2, 0), pred.transpose(1, 2, 0)
        self.val_scores[pid] = dice(pred, truth)
        self.val_predictions[pid] = pred

    def volume_probability(self, image: torch.Tensor) -> torch.Tensor:
        """Blood probability (x, y, z) of one volume (1, 1, x, y, z) by sliding windows."""
        if self.sliding_window is None:
            raise ConfigError(
                "task.module.roi_size",
                "validation gives whole 3D volumes but no sliding-window ROI is set",
                "set task.module.roi_size (e.g. the training patch size, data.patch_size)",
            )
        return self.sliding_window.probability(self.net, image)

    def on_validation_epoch_end(self) -> None:
        # Under DDP each rank validates its share of the patients: the mean is over all of them.
        total = torch.tensor(
            [sum(self.val_scores.values()), len(self.val_scores)], dtype=torch.float64
        )
        if self._trainer is not None and self.trainer.world_size > 1:
            # all_gather of a tensor is a tensor (Lightning annotates any collection)
            gathered = cast(torch.Tensor, self.all_gather(total.to(self.device)))
            total = gathered.reshape(-1, 2).sum(0).cpu()
        if total[1] > 0:
            self.log("val/dice", float(total[0] / total[1]), prog_bar=True)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return optimizer
        max_epochs = int(self.trainer.max_epochs or -1)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: lr_factor(self.lr_schedule, epoch, max_epochs)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "epoch"},
        }
