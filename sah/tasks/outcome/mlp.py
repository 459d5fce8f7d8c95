"""A small MLP for tabular outcome prediction: a LightningModule behind an sklearn interface.

The sklearn face (``fit`` / ``predict_proba``) lets it sit in the same impute -> scale pipeline
and cross-validation as the other tabular models; Lightning does the training loop so the same
module runs on a GPU with ``task.estimator.params.accelerator=gpu``. Full-batch by default: a few
hundred patients fit in one batch and train in about a second on a CPU.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TabularMLP(L.LightningModule):
    """Linear -> ReLU -> dropout blocks, one logit out; class-balanced BCE."""

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (32,),
        dropout: float = 0.5,
        lr: float = 3e-3,
        weight_decay: float = 1e-2,
        pos_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(pos_weight)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        return self.loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


class LightningMLPClassifier(ClassifierMixin, BaseEstimator):
    """sklearn classifier wrapping ``TabularMLP`` (binary labels 0/1)."""

    def __init__(
        self,
        hidden: Sequence[int] = (32,),
        dropout: float = 0.5,
        lr: float = 3e-3,
        weight_decay: float = 1e-2,
        max_epochs: int = 150,
        batch_size: int | None = None,
        balance_classes: bool = True,
        accelerator: str = "cpu",
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.balance_classes = balance_classes
        self.accelerator = accelerator
        self.seed = seed

    def fit(self, X, y) -> LightningMLPClassifier:
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        labels = np.asarray(y).astype(np.float32)
        self.classes_ = np.array([0, 1])
        n_pos = float(labels.sum())
        pos_weight = (len(labels) - n_pos) / max(n_pos, 1.0) if self.balance_classes else 1.0
        torch.manual_seed(self.seed)
        self.module_ = TabularMLP(
            x.shape[1], tuple(self.hidden), self.dropout, self.lr, self.weight_decay, pos_weight
        )
        loader = DataLoader(
            TensorDataset(x, torch.as_tensor(labels)),
            batch_size=self.batch_size or len(labels),
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
        )
        loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
        levels, threads = [lg.level for lg in loggers], torch.get_num_threads()
        for lg in loggers:
            lg.setLevel(logging.WARNING)  # one fit per CV fold: no banner about GPUs each time
        if self.accelerator == "cpu":
            # A net this small gains nothing from intra-op threads, and on a shared machine
            # they oversubscribe the cores (10x slower measured on 2 busy cores).
            torch.set_num_threads(1)
        try:
            trainer = L.Trainer(
                accelerator=self.accelerator,
                devices=1,
                max_epochs=self.max_epochs,
                barebones=True,  # no logging, checkpoints or progress: a fit takes ~1-2 s
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "few dataloader workers", "few batches": intended
                trainer.fit(self.module_, loader)
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            torch.set_num_threads(threads)
        self.module_.cpu().eval()
        return self

    def predict_proba(self, X) -> np.ndarray:
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        with torch.no_grad():
            positive = torch.sigmoid(self.module_(x)).numpy().astype(np.float64)
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)
