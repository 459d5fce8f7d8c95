"""Prepare a network for training: load pre-trained weights, then apply the adapter method."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from torch import nn

log = logging.getLogger(__name__)


class ReattachNorms(L.Callback):
    """Frozen norms stay frozen (and folded norms applied once) under ``sync_batchnorm``.

    Lightning swaps the BatchNorms for SyncBatchNorms after the adapters were injected; see
    ``sah.adapters.reattach_norms``. ``on_fit_start`` runs after that swap.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from sah.adapters import reattach_norms

        net = getattr(pl_module, "net", None)
        if isinstance(net, nn.Module):
            reattach_norms(net)


@dataclass
class AdapterSettings:
    """The `adapter` config group as plain values (`adapter.target` is a group name or regex)."""

    method: str = "full"
    rank: int | None = 4
    alpha: float | None = None
    target: str = "all"
    rslora: bool = False
    train_norm: bool = False
    detach_norm: bool = True
    dropout: float = 0.0
    fold_norm: bool = True


def prepare_network(
    net: nn.Module, init_from: Path | None, adapter: AdapterSettings | None
) -> list[str]:
    """Load ``init_from`` into ``net``, inject the adapter, and return the adapted module names.

    Without an adapter everything trains (training from scratch or plain fine-tuning).
    """
    if init_from is not None:
        from sah.models.checkpoint import load_weights

        load_weights(net, init_from)
        log.info("loaded pre-trained weights from %s", init_from)
    if adapter is None:
        return []
    from sah.adapters import AdapterConfig, inject

    config = AdapterConfig(
        method=adapter.method,
        rank=adapter.rank,
        alpha=adapter.alpha,
        rslora=adapter.rslora,
        targets=adapter.target,
        train_norm=adapter.train_norm,
        detach_norm=adapter.detach_norm,
        dropout=adapter.dropout,
        fold_norm=adapter.fold_norm,
    )
    return inject(net, config)
