"""3D segmentation: 1- and 2-channel outputs, sliding-window inference, the task's 3D validation,
whole-volume evaluation, and the Swin UNETR CPU recipe through sah-train."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sah.errors import ConfigError
from sah.tasks.segmentation.evaluate import evaluate_volumes, predict_volume_3d
from sah.tasks.segmentation.losses import foreground_logit, foreground_probability, get_loss
from sah.tasks.segmentation.module import SegmentationTask
from sah.tasks.segmentation.sliding_window import SlidingWindow


class Pointwise(nn.Module):
    """A 1x1x1 conv: output at a voxel depends on that voxel only (so it commutes with flips)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, out_channels, 1)
        with torch.no_grad():
            weights = [1.0] if out_channels == 1 else [-1.0, 1.0]  # blood: image > 0
            self.conv.weight.copy_(torch.tensor(weights).view(-1, 1, 1, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_two_channel_softmax_equals_the_logit_difference() -> None:
    logits = torch.randn(2, 2, 4, 4, 4)
    target = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    prob = foreground_probability(logits)
    torch.testing.assert_close(prob, torch.softmax(logits, 1)[:, 1:2])
    # "ce" on two channels is the cross-entropy of the softmax; on one logit it is the BCE.
    ce = F.cross_entropy(logits, target[:, 0].long())
    torch.testing.assert_close(get_loss("ce")(logits, target), ce)
    one = foreground_logit(logits)
    torch.testing.assert_close(
        get_loss("dice_ce")(logits, target), get_loss("dice_bce")(one, target)
    )


def test_more_than_two_channels_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.out_channels"):
        foreground_logit(torch.zeros(1, 3, 2, 2, 2))


@pytest.mark.parametrize("channels", [1, 2])
def test_sliding_window_covers_any_volume_and_flips_back(channels: int) -> None:
    net = Pointwise(channels).eval()
    image = torch.randn(1, 1, 21, 13, 9)  # not a multiple of the ROI, smaller than it in z
    plain = SlidingWindow((8, 8, 16), sw_batch_size=2).probability(net, image)
    assert plain.shape == (21, 13, 9)
    torch.testing.assert_close(plain, foreground_probability(net(image))[0, 0])
    # A pointwise net commutes with flips: TTA changes nothing when each flip is undone.
    tta = SlidingWindow((8, 8, 16), flip_axes=(0, 2)).probability(net, image)
    assert len(SlidingWindow((8, 8, 16), flip_axes=(0, 2)).flips()) == 4
    torch.testing.assert_close(tta, plain)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"roi_size": (8, 8)}, "roi_size"),
        ({"roi_size": (8, 8, 8), "overlap": 1.0}, "sw_overlap"),
        ({"roi_size": (8, 8, 8), "flip_axes": (3,)}, "tta_flip_axes"),
    ],
)
def test_bad_sliding_window_settings_name_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        SlidingWindow(**settings)


def volume_batch() -> dict[str, object]:
    image = torch.full((1, 1, 24, 20, 12), -1.0)
    label = torch.zeros(24, 20, 12, dtype=torch.uint8)
    image[0, 0, 5:10, 5:10, 3:6] = 3.0
    label[5:10, 5:10, 3:6] = 1
    return {"image": image, "label": label, "patient_id": "p1"}


@pytest.mark.parametrize("channels", [1, 2])
def test_task_validates_whole_volumes_by_sliding_windows(channels: int) -> None:
    task = SegmentationTask(Pointwise(channels), roi_size=[16, 16, 8]).eval()
    task.on_validation_epoch_start()
    task.validation_step(volume_batch(), 0)
    assert task.val_predictions["p1"].shape == (24, 20, 12)
    assert task.val_scores["p1"] == pytest.approx(1.0)


def test_task_trains_on_patches_with_either_output() -> None:
    from sah.models.unet import build_unet

    for channels in (1, 2):
        net = build_unet(spatial_dims=3, out_channels=channels, channels=(4, 8), strides=(2,))
        task = SegmentationTask(net, loss="dice_ce", roi_size=[8, 8, 8])
        batch = {"image": torch.randn(2, 1, 8, 8, 8), "label": torch.ones(2, 1, 8, 8, 8)}
        loss = task.training_step(batch, 0)
        loss.backward()
        assert torch.isfinite(loss)


def test_volume_batch_without_roi_is_a_config_error() -> None:
    task = SegmentationTask(Pointwise(1)).eval()
    with pytest.raises(ConfigError, match=r"task\.module\.roi_size"):
        task.validation_step(volume_batch(), 0)


def test_evaluate_volumes_reports_the_metric_suite_in_the_grid_spacing() -> None:
    from sah.data.modules.case import Case

    batch = volume_batch()
    image = batch["image"][0, 0].numpy()  # type: ignore[index]
    label = batch["label"].numpy()  # type: ignore[union-attr]
    case = Case("p1", image, label, (1.5, 1.5, 2.0))
    window = SlidingWindow((16, 16, 8))
    mask = predict_volume_3d(Pointwise(2), image, window)
    np.testing.assert_array_equal(mask, label.astype(bool))
    rows, masks = evaluate_volumes(Pointwise(2), [case], window)
    assert set(masks) == {"p1"}
    row = rows[0]
    for name in ("dice", "iou", "vsi", "sasd_mm", "sensitivity", "specificity"):
        assert name in row
    assert row["dice"] == pytest.approx(1.0)
    assert row["volume_true_ml"] == pytest.approx(label.sum() * 1.5 * 1.5 * 2.0 / 1000)


# -- sah-train ----------------------------------------------------------------------------


def sah_train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sah-train", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


def tiny_3d_recipe_overrides(
    cache_root: Path, workdir: Path, experiment: str = "swin_unetr_cpu"
) -> list[str]:
    """A 3D CPU recipe shrunk to one training step on the tiny cohort of tests/conftest.py
    ("++" sets the cohort's grid keys whether or not the recipe's data config names them)."""
    return [
        f"experiment={experiment}",
        f"paths.cache_dir={cache_root}",
        f"paths.root_dir={workdir}",
        f"tracking.uri=sqlite:///{workdir}/mlflow.db",
        f"hydra.run.dir={workdir}/run",
        "++data.manifest.config.n_patients=6",
        "++data.manifest.config.matrix=64",
        "++data.manifest.config.spacing_mm=2.5",
        "data.preprocess.spacing=[6.0,6.0,6.0]",
        "data.patches_per_epoch=2",
        "trainer.max_epochs=1",
        "callbacks.progress=null",
    ]


def test_unet3d_cpu_recipe_trains_with_decay_and_sparse_validation(
    tmp_path: Path, cache_root: Path, tiny_manifest: Path
) -> None:
    """The volumetry recipe at tiny size: validation on its schedule, the LR decay recorded."""
    from mlflow.tracking import MlflowClient

    overrides = tiny_3d_recipe_overrides(cache_root, tmp_path, experiment="unet3d_cpu")
    overrides += ["trainer.max_epochs=2", "trainer.check_val_every_n_epoch=2"]
    result = sah_train(*overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r"MLflow run id: (\w+)", result.stdout).group(1)  # type: ignore[union-attr]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_id)
    assert run.data.params["lr_schedule"] == "cosine"
    assert run.data.params["model"] == "unet3d"
    history = client.get_metric_history(run_id, "val/dice")
    # the epoch-2 validation and the final per-patient summary; validating every epoch makes 3
    assert len(history) == 2


def test_a_3d_model_on_slice_data_is_one_line_naming_data(tmp_path: Path, tiny_overrides) -> None:
    result = sah_train(*tiny_overrides(tmp_path), "model=unet3d", cwd=tmp_path)
    assert result.returncode == 2
    assert "config key 'data'" in result.stderr and "3D" in result.stderr


def test_swin_unetr_cpu_recipe_logs_the_study_metrics(
    tmp_path: Path, cache_root: Path, tiny_manifest: Path
) -> None:
    from mlflow.tracking import MlflowClient

    result = sah_train(*tiny_3d_recipe_overrides(cache_root, tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r"MLflow run id: (\w+)", result.stdout).group(1)  # type: ignore[union-attr]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_id)
    for name in ("dice", "iou", "vsi", "sasd_mm", "sensitivity", "specificity"):
        assert f"val/{name}" in run.data.metrics and f"test/{name}" in run.data.metrics
    assert 0.0 <= run.data.metrics["test/dice"] <= 1.0
    assert run.data.params["model"] == "swin_unetr"
    artifacts = {f.path for f in client.list_artifacts(run_id)}
    assert {"per_patient_metrics.csv", "test_overlays.png", "resolved_config.yaml"} <= artifacts
    csv_path = client.download_artifacts(run_id, "per_patient_metrics.csv", str(tmp_path))
    lines = Path(csv_path).read_text().strip().splitlines()
    assert lines[0].startswith("set,patient_id,dice")
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["test", "test", "val", "val"]
