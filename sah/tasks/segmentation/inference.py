"""Load a trained segmentation checkpoint as a plain network and segment whole CT volumes.

A checkpoint written by ``sah-train`` carries, beside its weights, an ``sah_inference`` entry:
how to rebuild the network (its model config), which adapter was trained, and the
preprocessing (window, slice size). So a user who has only a checkpoint and a scan can segment
it. Adapters are merged into the base weights before inference: zero overhead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from sah.data.readers.ct import CTVolume
from sah.errors import DataError

SPEC_KEY = "sah_inference"


class InferenceSpecCallback(L.Callback):
    """Store the inference spec (plain types only) in every checkpoint Lightning writes.

    ``spec`` may be a function, called at each save: parts of the spec (the training pixel
    size) are known only once the data is set up.
    """

    def __init__(self, spec: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        self.spec = spec

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[SPEC_KEY] = self.spec() if callable(self.spec) else self.spec


@dataclass
class Segmenter:
    """One or more trained nets (fold models) that segment volumes the way they were trained."""

    nets: list[nn.Module]
    spec: dict[str, Any]
    sources: list[str] = field(default_factory=list)

    def probabilities(self, ct: CTVolume, flip_tta: bool = False) -> np.ndarray:
        """Blood probability per voxel of the scan's grid, averaged over the fold models."""
        from sah.tasks.segmentation.evaluate import predict_probabilities

        return np.mean([predict_probabilities(n, ct, self.spec, flip_tta) for n in self.nets], 0)

    def segment(self, ct: CTVolume, flip_tta: bool = False) -> np.ndarray:
        threshold = float(self.spec.get("threshold", 0.5))
        return self.probabilities(ct, flip_tta) >= threshold


def load_segmenter(checkpoints: Sequence[str | Path]) -> Segmenter:
    """Rebuild each checkpoint's net, merge its adapters, and check they share preprocessing."""
    nets, specs = [], []
    for path in checkpoints:
        net, spec = load_network(path)
        nets.append(net)
        specs.append(spec)
    keys = ("kind", "window", "slice_size", "preprocess", "patch_size", "roi_size")
    first = {k: specs[0].get(k) for k in keys}
    for path, spec in zip(checkpoints, specs, strict=True):
        if {k: spec.get(k) for k in keys} != first:
            raise DataError(path, "was trained with other preprocessing than the first model")
    return Segmenter(nets, specs[0], [str(p) for p in checkpoints])


def load_network(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A plain (adapter-merged) network in eval mode and its inference spec."""
    from hydra.utils import instantiate

    from sah.adapters import AdapterConfig, inject, merge_and_unload
    from sah.models.checkpoint import load_state

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(path, f"cannot be read as a checkpoint ({err})") from err
    spec = checkpoint.get(SPEC_KEY) if isinstance(checkpoint, dict) else None
    if not spec:
        raise DataError(
            path,
            "has no sah inference spec (not written by sah-train)",
            "pass a checkpoint that sah-train logged (outputs/.../checkpoints/best.ckpt)",
        )
    net = instantiate(spec["model"])
    adapter = spec.get("adapter")
    if adapter and adapter.get("method") not in (None, "none", "full"):
        inject(
            net,
            AdapterConfig(
                method=adapter["method"],
                rank=adapter["rank"],
                alpha=adapter.get("alpha"),
                rslora=adapter.get("rslora", False),
                target=adapter.get("target", "all"),
                train_norm=adapter.get("train_norm", False),
                detach_norm=adapter.get("detach_norm", True),
            ),
        )
    state = {
        k.removeprefix("net."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("net.")
    }
    load_state(net, state, path)  # names missing, unexpected and reshaped layers
    if adapter and adapter.get("method") not in (None, "none", "full"):
        net = merge_and_unload(net)
    net.eval()
    return net, spec


HEAD_CT_CHECKS = {
    "air": (-1100.0, -900.0, 0.02),
    "brain": (15.0, 45.0, 0.05),
    "bone": (700.0, 3000.0, 0.005),
}


def head_ct_warnings(image_hu: np.ndarray) -> list[str]:
    """Warnings when the HU histogram does not look like a non-contrast head CT."""
    warnings = []
    n = image_hu.size
    for tissue, (low, high, min_fraction) in HEAD_CT_CHECKS.items():
        fraction = float(np.count_nonzero((image_hu >= low) & (image_hu <= high))) / n
        if fraction < min_fraction:
            warnings.append(
                f"only {fraction:.1%} of voxels are {tissue} ({low:g} to {high:g} HU); "
                "this may not be a non-contrast head CT in HU, so the result may be meaningless"
            )
    return warnings
