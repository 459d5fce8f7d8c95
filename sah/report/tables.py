"""The study's tables: one row per configuration (method x target x rank), Dice mean ± SD over
patients (pooled over folds) with the SD of the fold means beside it, and the same per true
hemorrhage-volume bin."""

from __future__ import annotations

import math

import pandas as pd

from sah.metrics.aggregate import VOLUME_BINS_ML, volume_bin, volume_bin_labels
from sah.report.collect import group_key

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
    """Baselines first, then each method by target and numeric rank (then by ``then``)."""
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    keys = pd.DataFrame(
        {
            "_method": frame["method"].map(lambda m: (order.get(m, len(order)), m)),
            "_target": frame["target"].astype(str),
            "_rank": frame["rank"].map(_rank_value),
        },
        index=frame.index,
    )
    by = ["_method", "_target", "_rank", *(then or [])]
    if "model" in frame.columns:
        by.insert(0, "model")
    ordered = frame.join(keys).sort_values(by, kind="stable")
    return ordered.drop(columns=list(keys.columns)).reset_index(drop=True)


def per_patient_scores(group: pd.DataFrame, metric: str) -> pd.Series:
    """One value per patient (the mean when repeated runs scored a patient twice)."""
    return group.groupby("patient_id")[metric].mean()


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else math.nan


def config_table(table: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per configuration: size, folds, patients, metric mean ± SD over patients and folds."""
    if metric not in table.columns:
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        from sah.errors import ConfigError

        raise ConfigError(
            "--metric", f"runs have no per-patient {metric!r}", f"use one of {numeric}"
        )
    key = group_key(table)
    rows = []
    for values, group in table.groupby(key, sort=False):
        scores = per_patient_scores(group, metric)
        fold_means = group.groupby("fold")[metric].mean()
        rows.append(
            {
                **dict(zip(key, values, strict=True)),
                "trainable_params": float(group["trainable_params"].median()),
                "n_runs": int(group["run_id"].nunique()),
                "n_folds": int(group["fold"].nunique()),
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


def bin_table(table: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per configuration and volume bin (0-25, 25-50, 50-100, 100-225 mL; 225+ when present)."""
    key = group_key(table)
    binned = with_volume_bins(table)
    labels = volume_bin_labels(VOLUME_BINS_ML)
    present = set(binned["volume_bin"])
    labels = [b for b in labels if b != labels[-1] or b in present]
    rows = []
    for values, group in binned.groupby(key, sort=False):
        for label in labels:
            scores = per_patient_scores(group[group["volume_bin"] == label], metric)
            rows.append(
                {
                    **dict(zip(key, values, strict=True)),
                    "volume_bin": label,
                    "n_patients": int(scores.size),
                    f"{metric}_mean": float(scores.mean()) if scores.size else math.nan,
                    f"{metric}_sd": _sd(scores),
                }
            )
    frame = pd.DataFrame(rows)
    frame["_bin"] = frame["volume_bin"].map({b: i for i, b in enumerate(labels)})
    return sort_configs(frame, then=["_bin"]).drop(columns="_bin")
