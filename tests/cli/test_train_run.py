"""sah-train end to end on a tiny synthetic cohort: the run, what MLflow holds, sah-predict."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from mlflow.tracking import MlflowClient


def sah(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_overrides):
    """One short training run of the demo config, shared by the tests of this module."""
    workdir = tmp_path_factory.mktemp("train")
    result = sah("sah-train", *tiny_overrides(workdir), cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r"MLflow run id: (\w+)", result.stdout).group(1)
    return workdir, run_id, result.stdout


def test_demo_config_prints_dice_run_id_and_ui_command(trained) -> None:
    workdir, run_id, stdout = trained
    assert re.search(r"test/dice \(outer fold 0 of 3, 2 patients.*\): \d\.\d{3}", stdout)
    assert re.search(r"val/dice \(selection set, 2 .*\): \d\.\d{3}", stdout)
    assert f"mlflow ui --backend-store-uri sqlite:///{workdir}/mlflow.db" in stdout
    assert len(run_id) == 32


def test_mlflow_run_reads_back_with_params_metrics_and_artifacts(trained) -> None:
    workdir, run_id, _ = trained
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(run_id)
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    # The params people compare, not the whole flattened config (that is an artifact).
    assert 20 <= len(params) <= 40
    assert params["fold"] == "0" and params["model"] == "unet2d"
    assert params["adapter.method"] == "full" and params["selection_fraction"] == "0.15"
    assert (params["n_train"], params["n_val"], params["n_test"]) == ("2", "2", "2")
    assert int(params["trainable_params"]) > 0
    for prefix in ("val", "test"):
        assert 0.0 <= metrics[f"{prefix}/dice"] <= 1.0
        for name in ("iou", "vsi", "sasd_mm", "hd95_mm", "sensitivity"):
            assert f"{prefix}/{name}" in metrics
    assert run.data.tags["model"] == "unet2d"
    assert len(run.data.tags["sah.config_id"]) == 12
    # The runs table's Dataset column: the cohort's manifest and who was in which set.
    contexts = {
        tag.value
        for entry in run.inputs.dataset_inputs
        for tag in entry.tags
        if tag.key == "mlflow.data.context"
    }
    assert {"cohort", "train", "selection", "test"} <= contexts
    assert run.info.run_name == "unet2d-full-all-fold0"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "sah-segmentation"
    # Without this tag MLflow 3's UI opens the experiment on its GenAI traces view.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    artifacts = {f.path for f in client.list_artifacts(run_id)}
    expected = {"per_patient_metrics.csv", "resolved_config.yaml", "test_overlays.png"}
    assert expected | {"patients_by_set.csv"} <= artifacts
    assert [f.path for f in client.list_artifacts(run_id, "checkpoints")]
    # The per-patient CSV says which set each patient belongs to: 6 patients, 3 folds.
    csv_path = client.download_artifacts(run_id, "per_patient_metrics.csv", str(workdir))
    lines = Path(csv_path).read_text().strip().splitlines()
    assert lines[0].startswith("set,patient_id,dice")
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["test", "test", "val", "val"]


def test_predict_writes_mask_on_the_input_grid_and_volume(trained, tiny_manifest: Path) -> None:
    workdir, _, _ = trained
    ckpt = next((workdir / "run" / "checkpoints").glob("*.ckpt"))
    import pandas as pd

    row = pd.read_csv(tiny_manifest).iloc[0]
    image = tiny_manifest.parent / row["image"]
    label = tiny_manifest.parent / row["label"]
    out = workdir / "pred"
    result = sah(
        "sah-predict",
        str(image),
        "--label",
        str(label),
        "--model",
        str(ckpt),
        "--out",
        str(out),
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    case = out / row["patient_id"]
    summary = json.loads((case / "result.json").read_text())
    mask = nib.load(case / "mask.nii.gz")
    source = nib.load(image)
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine)
    voxel_ml = float(np.prod(source.header.get_zooms()[:3])) / 1000
    assert summary["blood_volume_ml"] == pytest.approx(
        float(np.asarray(mask.dataobj).sum()) * voxel_ml, rel=1e-4
    )
    assert summary["metrics"]["volume_true_ml"] == pytest.approx(
        float(np.asarray(nib.load(label).dataobj).astype(bool).sum()) * voxel_ml, rel=1e-4
    )
    assert row["patient_id"] in result.stdout and "mL" in result.stdout
    assert summary["warnings"] == []  # a (synthetic) head CT passes the HU histogram checks
    # The checkpoint records the pixel size the net learnt at (the tiny cohort's 2.5 mm).
    import torch

    spec = torch.load(ckpt, map_location="cpu", weights_only=True)["sah_inference"]
    assert spec["pixel_mm"] == pytest.approx(2.5)
    assert (case / "overlay.png").stat().st_size > 0
    assert summary["models"] == [str(ckpt)]

    # The same command again must not replace the result.
    before = (case / "result.json").stat().st_mtime_ns
    again = sah("sah-predict", str(image), "--model", str(ckpt), "--out", str(out), cwd=workdir)
    assert again.returncode == 2
    assert "--overwrite" in again.stderr
    assert (case / "result.json").stat().st_mtime_ns == before


def test_predict_via_mlflow_run_id(trained, tiny_manifest: Path) -> None:
    """The model is recorded as the user named it, and the downloaded checkpoint is removed."""
    workdir, run_id, _ = trained
    import os

    import pandas as pd

    image = tiny_manifest.parent / pd.read_csv(tiny_manifest).iloc[1]["image"]
    temp = workdir / "tmp"
    temp.mkdir()
    result = subprocess.run(
        [
            "sah-predict",
            str(image),
            "--model",
            f"mlflow:{run_id}",
            "--tracking-uri",
            f"sqlite:///{workdir}/mlflow.db",
            "--out",
            str(workdir / "p2"),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mL" in result.stdout
    (case,) = (workdir / "p2").iterdir()
    assert json.loads((case / "result.json").read_text())["models"] == [f"mlflow:{run_id}"]
    # No checkpoint left behind (torch may keep its own compile cache there).
    assert list(temp.rglob("*.ckpt")) == [] and not list(temp.glob("sah-*"))
    assert "frozen" not in result.stderr and "Warning" not in result.stderr
    assert "Downloading artifacts" not in result.stderr  # MLflow's bar is off (sah.cli.quiet)


def test_predict_warns_on_a_scan_that_is_not_a_head_ct_and_keeps_a_small_grid(trained) -> None:
    """A water cylinder in air is valid HU but no head: the JSON carries the warning. Its odd,
    small grid (smaller than the net's downsampling needs) is padded, and the mask comes back
    on the input grid."""
    workdir, _, _ = trained
    ckpt = next((workdir / "run" / "checkpoints").glob("*.ckpt"))
    ii, jj = np.mgrid[:37, :29]
    cylinder = ((ii - 18) ** 2 + (jj - 14) ** 2 < 12**2)[..., None].repeat(3, axis=2)
    phantom = np.where(cylinder, 0.0, -1000.0).astype(np.int16)
    image = workdir / "water.nii.gz"
    nib.save(nib.Nifti1Image(phantom, np.diag([2.5, 2.5, 5.0, 1.0])), image)
    out = workdir / "water-pred"
    result = sah("sah-predict", str(image), "--model", str(ckpt), "--out", str(out), cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "water" / "result.json").read_text())
    warnings = summary["warnings"]
    assert any("brain" in w and "may not be a non-contrast head CT" in w for w in warnings)
    assert any("bone" in w for w in warnings)
    assert "WARNING" in result.stdout
    assert nib.load(out / "water" / "mask.nii.gz").shape == (37, 29, 3)


def test_predict_names_the_layers_of_a_checkpoint_that_does_not_fit_its_model(
    trained, tiny_manifest: Path
) -> None:
    import torch

    from sah.errors import DataError
    from sah.tasks.segmentation.inference import load_segmenter

    workdir, _, _ = trained
    checkpoint = torch.load(
        next((workdir / "run" / "checkpoints").glob("*.ckpt")),
        map_location="cpu",
        weights_only=True,
    )
    state = checkpoint["state_dict"]
    dropped = sorted(k for k in state if k.startswith("net.") and k.endswith(".weight"))[0]
    edited = {**checkpoint, "state_dict": {k: v for k, v in state.items() if k != dropped}}
    torch.save(edited, workdir / "missing.ckpt")
    result = sah(
        "sah-predict",
        str(tiny_manifest),
        "--model",
        str(workdir / "missing.ckpt"),
        "--out",
        str(workdir / "never"),
        cwd=workdir,
    )
    assert result.returncode == 2
    assert "missing.ckpt" in result.stderr and dropped.removeprefix("net.") in result.stderr
    assert not (workdir / "never").exists()  # nothing written for a model that cannot load

    # Weights of another size (the spec asks for twice the channels the weights have).
    spec = checkpoint["sah_inference"]
    wider = {
        **spec,
        "model": {**spec["model"], "channels": [c * 2 for c in spec["model"]["channels"]]},
    }
    torch.save({**checkpoint, "sah_inference": wider}, workdir / "wider.ckpt")
    with pytest.raises(
        DataError, match=r"wider\.ckpt.*do not fit.*with another shape.*\(file \(16, 1, 3, 3\), "
    ):
        load_segmenter([workdir / "wider.ckpt"])
