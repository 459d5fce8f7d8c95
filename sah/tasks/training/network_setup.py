"""Prepare a network for training: load pre-trained weights, then apply the adapter method."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
from torch import nn

if TYPE_CHECKING:
    from sah.adapters import AdapterConfig

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


def prepare_network(
    net: nn.Module, init_from: Path | None, adapter: AdapterConfig | None
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
    from sah.adapters import inject

    return inject(net, adapter)
