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

from sah.data.manifest import read_manifest
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

# Enough pre-training steps for the TBI net to mark some blood on SAH scans (seconds at this size).
LEARN_SOMETHING = [
    "trainer.max_epochs=6",
    "data.slices_per_epoch=128",
    "data.batch_size=8",
    "task.module.lr=1e-2",
    "task.module.loss=dice_bce",
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
        *LEARN_SOMETHING,
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
    assert run.data.params["data.manifest.config.kind"] == "tbi"
    assert run.data.params["model._target_"] == "sah.models.mv_unet.MVUnet"
    assert 0.0 <= run.data.metrics["val/dice"] <= 1.0


def test_every_adapter_option_fine_tunes_and_records_what_it_trained(transfer) -> None:
    client, pretrain_id, _ = transfer
    runs = finetune_runs(client, pretrain_id)
    assert sorted(runs) == sorted(ADAPTERS)
    trainable = {}
    for method, run in runs.items():
        params = run.data.params  # type: ignore[attr-defined]
        assert params["data.manifest.config.kind"] == "sah", method
        assert params["adapter.rank"] == "2" and params["adapter.target"] == "all", method
        assert 0.0 <= run.data.metrics["val/dice"] <= 1.0, method  # type: ignore[attr-defined]
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


def test_no_fine_tuning_scores_the_pretrained_net_as_sah_predict_does(
    transfer, cache_root: Path
) -> None:
    """adapter=none evaluates the TBI net as it is: sah-predict with the pre-training run's
    checkpoint on the same held-out patients gives the same per-patient Dice."""
    client, pretrain_id, workdir = transfer
    none_run = finetune_runs(client, pretrain_id)["none"]
    assert int(none_run.data.params["trainable_params"]) == 0  # type: ignore[attr-defined]
    csv_path = client.download_artifacts(
        none_run.info.run_id,  # type: ignore[attr-defined]
        "per_patient_metrics.csv",
        str(workdir),
    )
    scored = pd.read_csv(csv_path).set_index("patient_id")["dice"]
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
        [
            "sah-predict",
            str(subset),
            "--model",
            f"mlflow:{pretrain_id}",
            "--tracking-uri",
            f"sqlite:///{workdir}/mlflow.db",
            "--out",
            str(workdir / "predicted"),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert scored.max() > 0  # the TBI net marks some blood, so equal Dice is not just 0 = 0
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
