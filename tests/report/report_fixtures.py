"""A small fabricated study in an MLflow store: 4 configurations x 3 folds x 3 patients, plus
runs a report must leave out (a sweep parent, a failed run, a pruned trial)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

EXPERIMENT = "lora-study"
# (method, target, rank, trainable params, base Dice)
CONFIGS = [
    ("none", "all", "4", 0, 0.40),
    ("full", "all", "4", 200_000, 0.70),
    ("lora_c", "all", "4", 2_000, 0.60),
    ("lora_c", "all", "8", 4_000, 0.65),
]
VOLUMES = [5.0, 30.0, 70.0, 150.0, 12.0, 40.0, 90.0, 200.0, 20.0]  # mL, by patient


@dataclass
class Study:
    uri: str
    parent_run_id: str
    dice: dict[tuple[str, str], dict[str, float]]  # (method, rank) -> patient -> dice


def patient_dice(base: float, index: int, method: str) -> float:
    # A per-patient effect shared by all methods plus a method-specific wobble, so paired
    # differences are not constant.
    return round(base + 0.02 * (index % 4) + (0.013 * index if method == "lora_c" else 0.0), 4)


def make_study(folder: Path) -> Study:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(
        EXPERIMENT, artifact_location=(folder / "artifacts").as_uri()
    )
    parent = client.create_run(experiment_id, run_name="sweep", tags={"sah.kind": "sweep"})
    dice: dict[tuple[str, str], dict[str, float]] = {}
    for method, target, rank, params, base in CONFIGS:
        for fold in range(3):
            run = client.create_run(
                experiment_id,
                run_name=f"unet2d-{method}-r{rank}-fold{fold}",
                tags={
                    "method": method,
                    "target": target,
                    "rank": rank,
                    "fold": str(fold),
                    "model": "unet2d",
                    "mlflow.parentRunId": parent.info.run_id,
                },
            )
            client.log_param(run.info.run_id, "trainable_params", params)
            rows = []
            for index in range(fold * 3, fold * 3 + 3):
                value = patient_dice(base, index, method)
                dice.setdefault((method, rank), {})[f"p{index}"] = value
                volume = VOLUMES[index]
                rows.append(
                    {
                        "patient_id": f"p{index}",
                        "dice": value,
                        "iou": value / (2 - value),
                        "volume_pred_ml": volume * (0.8 + value / 5),
                        "volume_true_ml": volume,
                    }
                )
            path = folder / "staging" / run.info.run_id / "per_patient_metrics.csv"
            path.parent.mkdir(parents=True)
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            client.log_artifact(run.info.run_id, str(path))
            client.set_terminated(run.info.run_id)
    failed = client.create_run(experiment_id, tags={"method": "cp_lora", "rank": "4"})
    client.set_terminated(failed.info.run_id, status="FAILED")
    pruned = client.create_run(
        experiment_id, tags={"method": "cp_lora", "rank": "8", "optuna.state": "PRUNED"}
    )
    client.set_terminated(pruned.info.run_id)
    client.set_terminated(parent.info.run_id)
    return Study(uri, parent.info.run_id, dice)
