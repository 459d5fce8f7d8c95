"""Predictions made in another grid (3D nets' preprocessed grid, 2D nets' training pixel size)
land on the right voxels of the scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sah.data.preprocess import build_preprocess
from sah.data.readers.ct import CTVolume
from sah.metrics import segmentation_metrics
from sah.tasks.segmentation.evaluate import predict_probabilities


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


class Threshold2d(nn.Module):
    """The 2D 'net' of a slice model: positive logit where the windowed input exceeds 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(50.0)
            self.conv.bias.fill_(-25.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_slice_model_sees_a_finer_scan_at_its_training_pixel_size() -> None:
    """A 2D net trained on 1.8 mm pixels and 24-pixel slices gets a 0.9 mm, 72x64 scan. Resampled
    to 1.8 mm the whole field of view fits the net's slice, so the ball off centre (largely
    outside a 24-pixel centre crop of the raw scan) is found; the mask is on the scan grid."""
    ct, ball = scan_with_ball()
    spec = {"kind": "slices", "window": [0.0, 140.0], "slice_size": 24, "pixel_mm": 1.8}
    prob = predict_probabilities(Threshold2d(), ct, spec)
    assert prob.shape == ct.array.shape
    scores = segmentation_metrics(prob >= 0.5, ball, ct.spacing)
    assert scores["dice"] > 0.9
    assert abs(scores["volume_pred_ml"] - scores["volume_true_ml"]) / scores["volume_true_ml"] < 0.1
    # Without the recorded pixel size (older checkpoints) the raw scan is centre-cropped.
    legacy = predict_probabilities(Threshold2d(), ct, {**spec, "pixel_mm": None})
    assert segmentation_metrics(legacy >= 0.5, ball, ct.spacing)["dice"] < 0.8


def test_in_plane_resampling_keeps_the_field_of_view() -> None:
    from sah.tasks.segmentation.evaluate import resample_in_plane

    x = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((1, 6, 2), np.float32)
    coarse = resample_in_plane(x, (4, 3))
    np.testing.assert_allclose(coarse[:, 0, 0], [0.5, 2.5, 4.5, 6.5])  # centres of pixel pairs
    back = resample_in_plane(coarse, (8, 6))
    assert back.shape == x.shape
    np.testing.assert_allclose(back[1:-1, :, :], x[1:-1, :, :], atol=1e-5)  # linear: exact inside


def test_overlay_legend_names_the_reference_only_when_there_is_one() -> None:
    from sah.tasks.segmentation.overlay import legend

    image = np.zeros((4, 4, 2), dtype=np.float32)
    mask = np.zeros((4, 4, 2), dtype=bool)
    assert legend([("a", image, None, mask)]) == "red: prediction"
    assert "green: reference" in legend([("a", image, mask, mask), ("b", image, None, mask)])
