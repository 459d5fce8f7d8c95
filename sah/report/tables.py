"""The study's tables: one row per configuration (every hyperparameter but fold and seed),
test-set metric mean ± SD over patients (pooled over folds and seeds) with the SD of the fold
means beside it, and the same per true hemorrhage-volume bin."""

from __future__ import annotations

import math

import pandas as pd

from sah.errors import ConfigError
from sah.metrics.aggregate import VOLUME_BINS_ML, volume_bin, volume_bin_labels
from sah.report.configs import Configs

# The paper's method order; other methods follow alphabetically.
METHOD_ORDER = [
    "none",
    "scratch",
    "full",
    "lora_c",
    "conv_lora",
    "cp_lora",
    "dora_c",
    "conv_dora",
    "cp_dora",
]


def _rank_value(rank: object) -> float:
    try:
        return float(str(rank))
    except ValueError:
        return -1.0


def sort_configs(frame: pd.DataFrame, then: list[str] | None = None) -> pd.DataFrame:
    """Baselines first, then each method by target and numeric rank, then by the label (the
    params that differ) and by ``then``."""
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    keys = pd.DataFrame(
        {
            "_method": frame["method"].map(lambda m: order.get(m, len(order))),
            "_name": frame["method"].astype(str),
            "_target": frame["target"].astype(str),
            "_rank": frame["rank"].map(_rank_value),
            "_label": frame["label"].astype(str) if "label" in frame else "",
        },
        index=frame.index,
    )
    by = ["_method", "_name", "_target", "_rank", "_label", *(then or [])]
    if "model" in frame.columns:
        by.insert(0, "model")
    ordered = frame.join(keys).sort_values(by, kind="stable")
    return ordered.drop(columns=list(keys.columns)).reset_index(drop=True)


def per_patient_scores(group: pd.DataFrame, metric: str) -> pd.Series:
    """One value per patient (the mean when repeated runs scored a patient twice)."""
    return group.groupby("patient_id")[metric].mean()


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else math.nan


def check_metric(patients: pd.DataFrame, metric: str) -> None:
    if metric not in patients.columns:
        numeric = [c for c in patients.columns if pd.api.types.is_numeric_dtype(patients[c])]
        raise ConfigError(
            "--metric", f"runs have no per-patient {metric!r}", f"use one of {numeric}"
        )


def config_table(patients: pd.DataFrame, configs: Configs, metric: str = "dice") -> pd.DataFrame:
    """Per configuration: its columns, runs, folds and fold check, then the test metric's
    mean ± SD over patients and the SD of the fold means."""
    check_metric(patients, metric)
    rows = []
    for _, config in configs.frame.iterrows():
        group = patients[patients["config"] == config["config"]]
        scores = per_patient_scores(group, metric)
        fold_means = group.groupby(["seed", "fold"])[metric].mean()
        rows.append(
            {
                **config.to_dict(),
                "n_patients": int(scores.size),
                f"{metric}_mean": float(scores.mean()),
                f"{metric}_sd": _sd(scores),
                f"{metric}_fold_sd": _sd(fold_means),
            }
        )
    return sort_configs(pd.DataFrame(rows))


def with_volume_bins(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["volume_bin"] = [volume_bin(float(v)) for v in out["volume_true_ml"]]
    return out


def bin_table(patients: pd.DataFrame, configs: Configs, metric: str = "dice") -> pd.DataFrame:
    """Per configuration and volume bin (0-25, 25-50, 50-100, 100-225 mL; 225+ when present)."""
    check_metric(patients, metric)
    binned = with_volume_bins(patients)
    labels = volume_bin_labels(VOLUME_BINS_ML)
    present = set(binned["volume_bin"])
    labels = [b for b in labels if b != labels[-1] or b in present]
    names = ["config", *configs.columns, "label"]
    rows = []
    for _, config in configs.frame.iterrows():
        group = binned[binned["config"] == config["config"]]
        for label in labels:
            scores = per_patient_scores(group[group["volume_bin"] == label], metric)
            rows.append(
                {
                    **{k: config[k] for k in names},
                    "volume_bin": label,
                    "n_patients": int(scores.size),
                    f"{metric}_mean": float(scores.mean()) if scores.size else math.nan,
                    f"{metric}_sd": _sd(scores),
                }
            )
    frame = pd.DataFrame(rows)
    frame["_bin"] = frame["volume_bin"].map({b: i for i, b in enumerate(labels)})
    return sort_configs(frame, then=["_bin"]).drop(columns="_bin")
