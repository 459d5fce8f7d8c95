"""Predictions of 3D nets, made in the preprocessed grid, land on the right voxels of the scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sah.data.ct import CTVolume
from sah.data.preprocess import build_preprocess
from sah.metrics import segmentation_metrics
from sah.tasks.evaluate import predict_probabilities


def scan_with_ball() -> tuple[CTVolume, np.ndarray]:
    """Brain-like 30 HU with an 80 HU ball off centre, on an anisotropic, shifted grid."""
    shape, spacing = (72, 64, 18), (0.9, 0.9, 5.0)
    idx = np.indices(shape).astype(float)
    centre = np.array([40.0, 25.0, 10.0])
    mm = [(idx[a] - centre[a]) * spacing[a] for a in range(3)]
    ball = (mm[0] ** 2 + mm[1] ** 2 + mm[2] ** 2) <= 14.0**2
    image = np.where(ball, 80.0, 30.0).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-30.0, 12.0, -40.0)
    return CTVolume(image, affine, spacing, Path("scan.nii.gz")), ball


class Threshold(nn.Module):
    """A 'net' whose logit is positive exactly where the input exceeds ``level``."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(50.0)
            self.conv.bias.fill_(-50.0 * level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_volume_predictions_map_back_onto_the_scan_grid() -> None:
    ct, ball = scan_with_ball()
    params = {"spacing": (1.5, 1.5, 2.0), "min_shape": (32, 32, 16), "background_below_hu": None}
    case = build_preprocess("swin", **params)(ct)
    level = float(case.image.min() + case.image.max()) / 2
    spec = {
        "kind": "volume",
        "preprocess": {
            "name": "swin",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        },
        "patch_size": [32, 32, 16],
    }
    prob = predict_probabilities(Threshold(level), ct, spec)
    assert prob.shape == ct.array.shape
    scores = segmentation_metrics(prob >= 0.5, ball, ct.spacing)
    # Resampling to 1.5x1.5x2 mm and back costs only the ball's boundary voxels.
    assert scores["dice"] > 0.9
    assert abs(scores["volume_pred_ml"] - scores["volume_true_ml"]) / scores["volume_true_ml"] < 0.1
