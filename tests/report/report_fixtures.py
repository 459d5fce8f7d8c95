"""A small fabricated study in an MLflow store, logged as sah-train logs a run: tags (with
``seed`` and ``sah.config_id``), the compared params, ``val/dice`` (selection set) and
``test/dice`` metrics, and a per-patient CSV whose ``set`` column holds ``val`` and ``test`` rows.

Eight configurations over 3 folds of 3 test patients each: two that differ only in lr, one
lacking fold 1, one that ran fold 1 twice; plus runs a report must leave out (a sweep parent, a
failed run, a pruned trial, a run logged before per-patient CSVs said which set they hold).
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

EXPERIMENT = "lora-study"
VOLUMES = [5.0, 30.0, 70.0, 150.0, 12.0, 40.0, 90.0, 200.0, 20.0]  # mL, by test patient
VAL_DICE = 0.99  # every selection-set row: a report that read them would show it


@dataclass(frozen=True)
class Config:
    name: str
    method: str
    rank: str
    lr: float
    trainable: int
    base: float  # test Dice around which the patients' values are made
    val: tuple[float, ...]  # the run's val/dice, one per entry of folds
    folds: tuple[int, ...] = (0, 1, 2)  # the runs, by fold (a fold twice: a duplicate run)

    @property
    def config_id(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()[:12]


CONFIGS = [
    Config("none", "none", "4", 1e-3, 0, 0.40, (0.42, 0.40, 0.41)),
    Config("full", "full", "4", 1e-3, 200_000, 0.70, (0.72, 0.70, 0.71)),
    Config("lora_r4", "lora_c", "4", 1e-3, 2_000, 0.60, (0.70, 0.69, 0.71)),
    Config("lora_r8", "lora_c", "8", 1e-3, 4_000, 0.65, (0.75, 0.74, 0.73)),
    # Same as lora_r8 but for lr: best on the selection sets, worst on the test patients.
    Config("lora_r8_lr", "lora_c", "8", 1e-2, 4_000, 0.55, (0.80, 0.78, 0.79)),
    # Best val/dice of cp_lora, but fold 1 never ran.
    Config("cp_r4_gap", "cp_lora", "4", 1e-3, 500, 0.62, (0.90, 0.90), folds=(0, 2)),
    # Fold 1 ran twice (same seed).
    Config("cp_r8_twice", "cp_lora", "8", 1e-3, 900, 0.63, (0.85, 0.85, 0.86, 0.85), (0, 1, 1, 2)),
    Config("cp_r16", "cp_lora", "16", 1e-3, 1_700, 0.64, (0.60, 0.61, 0.62)),
]
BY_NAME = {c.name: c for c in CONFIGS}
N_RUNS = sum(len(c.folds) for c in CONFIGS)  # the runs a report reads


@dataclass
class Study:
    uri: str
    parent_run_id: str
    dice: dict[str, dict[str, float]]  # config name -> test patient -> Dice (mean of repeats)


def patient_dice(config: Config, index: int, repeat: int = 0) -> float:
    # A per-patient effect shared by all methods plus a method-specific wobble, so paired
    # differences are not constant; a repeated run of a fold scores a little higher.
    wobble = 0.013 * index if config.method in ("lora_c", "cp_lora") else 0.0
    return round(config.base + 0.02 * (index % 4) + wobble + 0.05 * repeat, 4)


def expected_dice() -> dict[str, dict[str, float]]:
    dice: dict[str, dict[str, float]] = {}
    for config in CONFIGS:
        seen: dict[int, int] = {}
        scores: dict[str, list[float]] = {}
        for fold in config.folds:
            repeat = seen.get(fold, 0)
            seen[fold] = repeat + 1
            for index in range(fold * 3, fold * 3 + 3):
                scores.setdefault(f"p{index}", []).append(patient_dice(config, index, repeat))
        dice[config.name] = {p: sum(v) / len(v) for p, v in scores.items()}
    return dice


def _row(patient: str, split: str, dice: float, volume: float) -> dict[str, object]:
    return {
        "patient_id": patient,
        "set": split,
        "dice": dice,
        "iou": dice / (2 - dice),
        "volume_pred_ml": volume * (0.8 + dice / 5),
        "volume_true_ml": volume,
    }


def _write(folder: Path, run_id: str, rows: list[dict[str, object]]) -> Path:
    path = folder / "staging" / run_id / "per_patient_metrics.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _params(config: Config, fold: int) -> dict[str, object]:
    params: dict[str, object] = {
        "task": "segmentation",
        "model": "unet2d",
        "adapter.method": config.method,
        "adapter.rank": config.rank,
        "adapter.target": "all",
        "lr": config.lr,
        "epochs": 5,
        "fold": fold,
        "seed": 0,
        "data.n_folds": 3,
        "init_from": "mlflow:0123abcd",
        "trainable_params": config.trainable,
    }
    if config.method not in ("none", "full"):
        params["adapter.alpha"] = 16
    return params


def _log_run(
    client: MlflowClient, folder: Path, experiment_id: str, parent: str, config: Config, i: int
) -> None:
    fold = config.folds[i]
    repeat = config.folds[:i].count(fold)
    run = client.create_run(
        experiment_id,
        run_name=f"unet2d-{config.name}-fold{fold}" + (f"-again{repeat}" if repeat else ""),
        tags={
            "method": config.method,
            "target": "all",
            "rank": config.rank,
            "fold": str(fold),
            "seed": "0",
            "model": "unet2d",
            "data": "synthetic_sah",
            "init": "pretrained",
            "sah.config_id": config.config_id,
            "mlflow.parentRunId": parent,
        },
    )
    run_id = run.info.run_id
    patients = range(fold * 3, fold * 3 + 3)
    scores = [patient_dice(config, k, repeat) for k in patients]
    test = [_row(f"p{k}", "test", d, VOLUMES[k]) for k, d in zip(patients, scores, strict=True)]
    val = [_row(f"s{fold}-{j}", "val", VAL_DICE, 10.0) for j in range(2)]
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric("val/dice", config.val[i], now, 0),
            Metric("test/dice", sum(scores) / len(scores), now, 0),
        ],
        params=[Param(k, str(v)) for k, v in _params(config, fold).items()],
    )
    client.log_artifact(run_id, str(_write(folder, run_id, [*val, *test])))
    client.set_terminated(run_id)


def make_study(folder: Path) -> Study:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(
        EXPERIMENT, artifact_location=(folder / "artifacts").as_uri()
    )
    parent = client.create_run(experiment_id, run_name="sweep", tags={"sah.kind": "sweep"})
    for config in CONFIGS:
        for i in range(len(config.folds)):
            _log_run(client, folder, experiment_id, parent.info.run_id, config, i)
    # Logged before the protocol: its CSV has no `set` column (it was scored on the patients
    # that chose its epoch) and it has no config tag.
    legacy = client.create_run(
        experiment_id,
        run_name="legacy-lora_c-r8-fold0",
        tags={"method": "lora_c", "rank": "8", "target": "all", "fold": "0", "model": "unet2d"},
    )
    rows = [_row(f"p{index}", "", 0.99, 10.0) for index in range(3)]
    for row in rows:
        del row["set"]
    client.log_param(legacy.info.run_id, "trainable_params", 4_000)
    client.log_artifact(legacy.info.run_id, str(_write(folder, legacy.info.run_id, rows)))
    client.set_terminated(legacy.info.run_id)
    failed = client.create_run(experiment_id, tags={"method": "cp_lora", "rank": "4"})
    client.set_terminated(failed.info.run_id, status="FAILED")
    pruned = client.create_run(
        experiment_id, tags={"method": "cp_lora", "rank": "8", "optuna.state": "PRUNED"}
    )
    client.set_terminated(pruned.info.run_id)
    client.set_terminated(parent.info.run_id)
    return Study(uri, parent.info.run_id, expected_dice())
