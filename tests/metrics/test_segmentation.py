"""segmentation_metrics vs MONAI, direct counts, hand-made geometry and the empty-mask rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from sah.metrics import dice, physical_diagonal_mm, segmentation_metrics

SPACING = (0.9, 0.7, 3.0)


def blobby_pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A ground-truth blob mask and a correlated, imperfect prediction of it."""
    rng = np.random.default_rng(seed)
    sigma = (3.0, 3.0, 1.0)[: len(shape)]
    base = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    level = np.quantile(base, 0.8)
    truth = base > level
    pred = (base + 0.7 * noise) > level
    return pred, truth


def monai_reference(pred: np.ndarray, truth: np.ndarray, spacing) -> dict[str, float]:
    torch = pytest.importorskip("torch")
    from monai.metrics import (
        DiceMetric,
        HausdorffDistanceMetric,
        MeanIoU,
        SurfaceDistanceMetric,
    )

    y_pred = torch.from_numpy(pred[None, None].astype(np.float32))
    y = torch.from_numpy(truth[None, None].astype(np.float32))
    common = {"include_background": True, "reduction": "none"}
    return {
        "dice": float(DiceMetric(**common)(y_pred=y_pred, y=y)),
        "iou": float(MeanIoU(**common)(y_pred=y_pred, y=y)),
        "sasd_mm": float(
            SurfaceDistanceMetric(symmetric=True, **common)(y_pred=y_pred, y=y, spacing=spacing)
        ),
        "hd95_mm": float(
            HausdorffDistanceMetric(percentile=95, **common)(y_pred=y_pred, y=y, spacing=spacing)
        ),
    }


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_monai_on_anisotropic_3d_blobs(seed: int) -> None:
    pred, truth = blobby_pair(seed, (40, 36, 14))
    ours = segmentation_metrics(pred, truth, SPACING)
    reference = monai_reference(pred, truth, SPACING)
    assert ours["dice"] == pytest.approx(reference["dice"], abs=1e-6)
    assert ours["iou"] == pytest.approx(reference["iou"], abs=1e-6)
    assert ours["sasd_mm"] == pytest.approx(reference["sasd_mm"], abs=1e-3)
    assert ours["hd95_mm"] == pytest.approx(reference["hd95_mm"], abs=1e-3)


def test_agrees_with_monai_in_2d_and_when_masks_touch_the_border() -> None:
    pred, truth = blobby_pair(7, (64, 48))
    truth[:, :3] = True  # the array border is a surface, as in MONAI
    for spacing in ((0.45, 0.8), (1.0, 1.0)):
        ours = segmentation_metrics(pred, truth, spacing)
        reference = monai_reference(pred, truth, spacing)
        for key, tolerance in (("dice", 1e-6), ("iou", 1e-6), ("sasd_mm", 1e-3), ("hd95_mm", 1e-3)):
            assert ours[key] == pytest.approx(reference[key], abs=tolerance), key


def test_counts_and_volumes_match_direct_numpy_counts() -> None:
    pred, truth = blobby_pair(11, (30, 30, 10))
    ours = segmentation_metrics(pred, truth, SPACING)
    tp = np.sum(pred & truth)
    tn = np.sum(~pred & ~truth)
    fp = np.sum(pred & ~truth)
    fn = np.sum(~pred & truth)
    voxel_ml = 0.9 * 0.7 * 3.0 / 1000
    assert ours["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert ours["specificity"] == pytest.approx(tn / (tn + fp))
    assert ours["volume_pred_ml"] == pytest.approx(pred.sum() * voxel_ml)
    assert ours["volume_true_ml"] == pytest.approx(truth.sum() * voxel_ml)
    assert ours["volume_abs_error_ml"] == pytest.approx(
        abs(int(pred.sum()) - int(truth.sum())) * voxel_ml
    )
    assert ours["vsi"] == pytest.approx(
        1 - abs(int(pred.sum()) - int(truth.sum())) / (pred.sum() + truth.sum())
    )
    assert ours["empty_pred"] == ours["empty_truth"] == 0.0


def test_voxel_volume_override_sets_the_ml_scale() -> None:
    pred, truth = blobby_pair(3, (20, 20, 8))
    ours = segmentation_metrics(pred, truth, SPACING, voxel_volume_ml=0.002)
    assert ours["volume_true_ml"] == pytest.approx(truth.sum() * 0.002)


@pytest.mark.parametrize(("axis", "shift"), [(0, 1), (0, 3), (2, 2)])
def test_parallel_plates_are_exactly_shift_times_spacing_apart(axis: int, shift: int) -> None:
    """A one-voxel-thick plate is all surface; its copy ``shift`` voxels away is at that distance
    from every point, so every surface distance, hence SASD and HD95, is shift * spacing."""
    truth = np.zeros((12, 12, 12), dtype=bool)
    pred = np.zeros_like(truth)
    plate = [slice(2, 10)] * 3
    plate[axis] = slice(3, 4)
    truth[tuple(plate)] = True
    plate[axis] = slice(3 + shift, 4 + shift)
    pred[tuple(plate)] = True
    ours = segmentation_metrics(pred, truth, SPACING)
    expected = shift * SPACING[axis]
    assert ours["sasd_mm"] == pytest.approx(expected)
    assert ours["hd95_mm"] == pytest.approx(expected)
    assert ours["dice"] == 0.0


def test_offset_cubes_have_known_overlap() -> None:
    side, shift = 6, 2
    truth = np.zeros((16, 10, 10), dtype=bool)
    pred = np.zeros_like(truth)
    truth[2 : 2 + side, 2:8, 2:8] = True
    pred[2 + shift : 2 + shift + side, 2:8, 2:8] = True
    ours = segmentation_metrics(pred, truth, SPACING)
    assert ours["dice"] == pytest.approx((side - shift) / side)
    assert ours["iou"] == pytest.approx((side - shift) / (side + shift))
    assert ours["vsi"] == 1.0
    assert ours["volume_abs_error_ml"] == 0.0


def test_identical_masks_are_perfect() -> None:
    _, truth = blobby_pair(5, (24, 24, 8))
    ours = segmentation_metrics(truth, truth.astype(np.uint8), SPACING)
    assert ours["dice"] == ours["iou"] == ours["vsi"] == 1.0
    assert ours["sasd_mm"] == ours["hd95_mm"] == 0.0


class TestEmptyMasks:
    shape = (20, 16, 6)

    def test_both_empty_is_a_perfect_true_negative(self) -> None:
        empty = np.zeros(self.shape, dtype=bool)
        ours = segmentation_metrics(empty, empty, SPACING)
        assert ours["dice"] == ours["iou"] == ours["vsi"] == 1.0
        assert ours["sasd_mm"] == ours["hd95_mm"] == 0.0
        assert ours["sensitivity"] == ours["specificity"] == 1.0
        assert ours["empty_pred"] == ours["empty_truth"] == 1.0

    def test_missed_bleed_scores_zero_overlap_and_the_finite_penalty(self) -> None:
        truth = np.zeros(self.shape, dtype=bool)
        truth[5:9, 5:9, 2:4] = True
        ours = segmentation_metrics(np.zeros_like(truth), truth, SPACING)
        penalty = np.sqrt((20 * 0.9) ** 2 + (16 * 0.7) ** 2 + (6 * 3.0) ** 2)
        assert physical_diagonal_mm(self.shape, SPACING) == pytest.approx(penalty)
        assert ours["dice"] == ours["iou"] == ours["vsi"] == ours["sensitivity"] == 0.0
        assert ours["sasd_mm"] == ours["hd95_mm"] == pytest.approx(penalty)
        assert np.isfinite(ours["hd95_mm"])
        assert ours["empty_pred"] == 1.0 and ours["empty_truth"] == 0.0

    def test_penalty_exceeds_any_real_distance(self) -> None:
        truth = np.zeros(self.shape, dtype=bool)
        pred = np.zeros_like(truth)
        truth[0, 0, 0] = True
        pred[-1, -1, -1] = True
        worst_hit = segmentation_metrics(pred, truth, SPACING)["hd95_mm"]
        assert worst_hit < physical_diagonal_mm(self.shape, SPACING)

    def test_bleed_on_a_clean_scan_is_penalised_and_flagged(self) -> None:
        pred = np.zeros(self.shape, dtype=bool)
        pred[1:3, 1:3, 1] = True
        ours = segmentation_metrics(pred, np.zeros_like(pred), SPACING, empty_penalty_mm=50.0)
        assert ours["dice"] == ours["vsi"] == 0.0
        assert ours["sasd_mm"] == ours["hd95_mm"] == 50.0
        assert ours["sensitivity"] == 1.0 and ours["specificity"] < 1.0
        assert ours["empty_pred"] == 0.0 and ours["empty_truth"] == 1.0

    def test_all_values_are_finite_in_every_case(self) -> None:
        some = np.zeros(self.shape, dtype=bool)
        some[3:6, 3:6, 2] = True
        none = np.zeros_like(some)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for pred, truth in ((some, none), (none, some), (none, none), (some, some)):
                values = segmentation_metrics(pred, truth, SPACING).values()
                assert np.all(np.isfinite(list(values)))


def test_rejects_unusable_inputs() -> None:
    mask = np.zeros((8, 8, 4), dtype=bool)
    with pytest.raises(ValueError, match="binary"):
        segmentation_metrics(mask.astype(float) + 0.5, mask, SPACING)
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(mask, mask[:-1], SPACING)
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(mask, mask, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(mask, mask, (1.0, 0.0, 1.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_dice_is_the_reported_dice_and_monais(seed: int) -> None:
    """The Dice a training loop validates with (``dice``) is the one the report shows and
    MONAI's DiceMetric, so the epoch it picks is picked on the reported metric."""
    torch = pytest.importorskip("torch")
    from monai.metrics import DiceMetric

    pred, truth = blobby_pair(seed, (24, 20, 12))
    reference = DiceMetric(include_background=True)(
        torch.from_numpy(pred[None, None].astype(np.float32)),
        torch.from_numpy(truth[None, None].astype(np.float32)),
    )
    assert dice(pred, truth) == pytest.approx(float(reference), abs=1e-6)
    assert dice(pred, truth) == segmentation_metrics(pred, truth, 1.0)["dice"]
    empty = np.zeros_like(truth)
    assert dice(empty, empty) == 1.0
    assert dice(empty, truth) == 0.0
    with pytest.raises(ValueError, match="binary mask"):
        dice(pred * 0.5, truth)
