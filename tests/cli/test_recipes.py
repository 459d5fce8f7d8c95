"""CPU smoke runs of the LoRA study's recipes at tiny size, through the real `sah-train`.

Step 1 pre-trains the multi-view Unet on a tiny synthetic TBI cohort (`tbi_pretrain_cpu`);
step 2 fine-tunes it on the tiny SAH cohort with each of the 8 adapter options in one multirun
(`lora_transfer_cpu init_from=mlflow:<id> 'adapter=glob(*)'`), as experiments/lora_transfer
documents. The Swin UNETR recipe's smoke run is in tests/tasks/test_segmentation3d.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sah.data.cohorts.manifest import read_manifest
from sah.data.synthetic import SynthConfig, ensure_cohort

ADAPTERS = ["none", "full", "lora_c", "conv_lora", "cp_lora", "dora_c", "conv_dora", "cp_dora"]
# 48 px at 4.8 mm keeps the recipes' 230 mm field of view; 8 features keep the net tiny.
TINY = [
    "data.manifest.config.n_patients=6",
    "data.manifest.config.matrix=48",
    "data.manifest.config.spacing_mm=4.8",
    "data.slice_size=48",
    "data.batch_size=4",
    "data.slices_per_epoch=8",
    "model.features=8",
    "trainer.max_epochs=1",
    "callbacks.progress=null",
]


def sah_train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sah-train", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def transfer(tmp_path_factory: pytest.TempPathFactory, isolated_overrides):
    """Pre-train, then fine-tune with every adapter option; returns (client, pretrain run id)."""
    workdir = tmp_path_factory.mktemp("recipes")
    pretrain = sah_train(
        "experiment=tbi_pretrain_cpu",
        *isolated_overrides(workdir),
        *TINY,
        cwd=workdir,
    )
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    run_id = re.search(r"MLflow run id: (\w+)", pretrain.stdout).group(1)  # type: ignore[union-attr]
    sweep = sah_train(
        "-m",
        "experiment=lora_transfer_cpu",
        f"init_from=mlflow:{run_id}",
        "adapter=glob(*)",
        "adapter.rank=2",
        "fold=0",
        *isolated_overrides(workdir),
        *TINY,
        cwd=workdir,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    # The study's third baseline, training from scratch, logged to the same experiment.
    scratch = sah_train(
        "experiment=lora_transfer_cpu",
        "init_from=null",
        "adapter=full",
        *isolated_overrides(workdir),
        *TINY,
        cwd=workdir,
    )
    assert scratch.returncode == 0, scratch.stderr[-3000:]
    return MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db"), run_id, workdir


def finetune_runs(client: MlflowClient, pretrain_id: str) -> dict[str, object]:
    assert client.get_run(pretrain_id).info.experiment_id != (
        client.get_experiment_by_name("sah-lora-transfer").experiment_id
    )  # pre-training has its own experiment, so the transfer table holds only SAH runs
    experiment = client.get_experiment_by_name("sah-lora-transfer")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]  # the sweep's runs
    return {r.data.params["adapter.method"]: r for r in children}


def test_pretraining_runs_on_the_tbi_cohort(transfer) -> None:
    client, pretrain_id, _ = transfer
    run = client.get_run(pretrain_id)
    assert run.data.params["cohort"].startswith("synthetic tbi n=6")
    assert run.data.params["model"] == "mv_unet"
    assert 0.0 <= run.data.metrics["val/dice"] <= 1.0
    assert 0.0 <= run.data.metrics["test/dice"] <= 1.0


def test_every_adapter_option_fine_tunes_and_records_what_it_trained(transfer) -> None:
    client, pretrain_id, _ = transfer
    runs = finetune_runs(client, pretrain_id)
    assert sorted(runs) == sorted(ADAPTERS)
    trainable = {}
    for method, run in runs.items():
        params = run.data.params  # type: ignore[attr-defined]
        assert params["cohort"].startswith("synthetic sah n=6"), method
        assert params["adapter.target"] == "all", method
        if method not in ("none", "full"):
            assert params["adapter.rank"] == "2", method
        assert 0.0 <= run.data.metrics["test/dice"] <= 1.0, method  # type: ignore[attr-defined]
        trainable[method] = int(params["trainable_params"])
    total = trainable["full"]
    assert trainable["none"] == 0
    # Every adapter trains a small fraction of the net; CP factors are the cheapest.
    for method in ADAPTERS[2:]:
        assert 0 < trainable[method] < total, method
    assert trainable["cp_lora"] < trainable["conv_lora"] < trainable["lora_c"]
    # DoRA adds one magnitude per output channel of each adapted layer to its LoRA.
    for lora, dora in [("lora_c", "dora_c"), ("conv_lora", "conv_dora"), ("cp_lora", "cp_dora")]:
        assert trainable[dora] > trainable[lora]
        assert trainable[dora] - trainable[lora] == trainable["conv_dora"] - trainable["conv_lora"]


def blood_everywhere(pretrain_id: str, workdir: Path) -> Path:
    """The pre-trained checkpoint with its output bias raised so far that the net marks every
    pixel it sees: non-empty masks whatever the tiny pre-training learnt, so equal Dice below
    compares real overlaps (the crop, padding and mapping back of both paths), not 0 = 0."""
    import torch

    from sah.tracking.checkpoints import download_best_checkpoint

    source = download_best_checkpoint(f"sqlite:///{workdir}/mlflow.db", pretrain_id)
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    (bias,) = [k for k in state if k.startswith("net.head.") and k.endswith(".bias")][-1:]
    state[bias] = state[bias] + 1e3
    target = workdir / "blood_everywhere.ckpt"
    torch.save(checkpoint, target)
    return target


def test_no_fine_tuning_scores_the_pretrained_net_as_sah_predict_does(
    transfer, cache_root: Path, isolated_overrides
) -> None:
    """adapter=none evaluates the pre-trained net as it is: sah-predict with the same checkpoint
    on the same test patients gives the same per-patient Dice."""
    client, pretrain_id, workdir = transfer
    assert int(finetune_runs(client, pretrain_id)["none"].data.params["trainable_params"]) == 0  # type: ignore[attr-defined]
    weights = blood_everywhere(pretrain_id, workdir)
    none = sah_train(
        "experiment=lora_transfer_cpu",
        f"init_from={weights}",
        "adapter=none",
        "tracking.experiment=none-check",
        *isolated_overrides(workdir),
        *TINY,
        cwd=workdir,
    )
    assert none.returncode == 0, none.stderr[-3000:]
    run_id = re.search(r"MLflow run id: (\w+)", none.stdout).group(1)  # type: ignore[union-attr]
    csv_path = client.download_artifacts(run_id, "per_patient_metrics.csv", str(workdir))
    rows = pd.read_csv(csv_path)
    scored = rows[rows["set"] == "test"].set_index("patient_id")["dice"]
    cohort = ensure_cohort(
        SynthConfig(kind="sah", n_patients=6, seed=0, matrix=48, spacing_mm=4.8),
        cache_root=cache_root,
    )
    table = read_manifest(Path(cohort))
    held_out = table[table["patient_id"].isin(scored.index)]
    assert len(held_out) == len(scored) == 2  # fold 0 of 3 over 6 patients
    subset = workdir / "held_out.csv"
    held_out.to_csv(subset, index=False)
    result = subprocess.run(
        ["sah-predict", str(subset), "--model", str(weights), "--out", str(workdir / "predicted")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (scored > 0).all()  # every test patient has blood, and every pixel is marked
    for patient, dice in scored.items():
        report = json.loads((workdir / "predicted" / str(patient) / "result.json").read_text())
        assert report["metrics"]["dice"] == pytest.approx(dice, abs=1e-6), patient


def test_the_documented_report_compares_every_option_with_no_fine_tuning(transfer) -> None:
    """`sah-report --baseline method=none` over the experiment, as the study's README runs it:
    every run has finished (also adapter=none, which trains nothing) and is in the table."""
    client, pretrain_id, workdir = transfer
    runs = finetune_runs(client, pretrain_id)
    assert {r.info.status for r in runs.values()} == {"FINISHED"}  # type: ignore[attr-defined]
    result = subprocess.run(
        [
            "sah-report",
            "--tracking-uri",
            f"sqlite:///{workdir}/mlflow.db",
            "--experiment",
            "sah-lora-transfer",
            "--baseline",
            "method=none",
            "--out",
            str(workdir / "report"),
            "--no-log",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (workdir / "report" / "report.md").read_text()
    for method in [*ADAPTERS, "scratch"]:  # scratch and full fine-tuning are separate rows
        assert f"| {method} |" in table, method
    assert "| none | - | - | 0 |" in table  # a count, not 0.000
