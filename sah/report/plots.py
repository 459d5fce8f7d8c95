"""The study's figures, on test patients only: Dice against trainable parameters with the
Pareto front, Dice by hemorrhage-volume bin, and predicted against true blood volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sah.figures import pyplot, save_figure

MAX_SCATTERED = 10


def pareto_front(params: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices of configurations no other beats on both fewer parameters and higher score,
    ordered by parameters."""
    order = np.lexsort((-scores, params))
    front, best = [], -np.inf
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return np.asarray(front, dtype=int)


def dice_vs_params(configs: pd.DataFrame, path: Path, metric: str = "dice") -> Path:
    mean = configs[f"{metric}_mean"].to_numpy(dtype=float)
    params = configs["trainable_params"].to_numpy(dtype=float)
    fig, ax = pyplot().subplots(figsize=(6.5, 4.5))
    for i, (method, group) in enumerate(configs.groupby("method", sort=False)):
        ax.errorbar(
            group["trainable_params"],
            group[f"{metric}_mean"],
            yerr=group[f"{metric}_sd"].fillna(0.0),
            fmt="o",
            capsize=3,
            color=f"C{i % 10}",
            label=method,
        )
    usable = np.isfinite(params) & np.isfinite(mean)
    if usable.any():
        idx = np.flatnonzero(usable)[pareto_front(params[usable], mean[usable])]
        ax.step(
            params[idx], mean[idx], where="post", color="k", lw=1, ls="--", label="Pareto front"
        )
    if np.all(params[usable] > 0):
        ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(f"test {metric} (mean ± SD over patients)")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=130)


def dice_by_volume_bin(bins: pd.DataFrame, path: Path, metric: str = "dice") -> Path:
    names = bins["label"]
    configs = list(dict.fromkeys(names))
    labels = list(dict.fromkeys(bins["volume_bin"]))
    width = 0.8 / max(1, len(configs))
    fig, ax = pyplot().subplots(figsize=(max(6.0, 1.6 * len(labels) + 0.25 * len(configs)), 4.5))
    x = np.arange(len(labels))
    for i, config in enumerate(configs):
        rows = bins[names == config].set_index("volume_bin").reindex(labels)
        ax.bar(
            x + (i - (len(configs) - 1) / 2) * width,
            rows[f"{metric}_mean"],
            width,
            yerr=rows[f"{metric}_sd"].fillna(0.0),
            capsize=2,
            label=config,
            color=f"C{i % 10}",
        )
    counts = bins.groupby("volume_bin", sort=False)["n_patients"].max().reindex(labels)
    ax.set_xticks(x, [f"{b} mL\n(n={int(n) if n == n else 0})" for b, n in counts.items()])
    ax.set_ylabel(f"test {metric} (mean ± SD over patients)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncols=2)
    return save_figure(fig, path, dpi=130)


def volume_agreement(patients: pd.DataFrame, configs: pd.DataFrame, path: Path) -> Path:
    """Predicted against true test-set volume per patient, for each row of the table (the
    first ten when there are more: ``--select`` reports one per method)."""
    shown = configs.head(MAX_SCATTERED)
    fig, ax = pyplot().subplots(figsize=(5.5, 5))
    top = 1.0
    for i, row in enumerate(shown.itertuples(index=False)):
        rows = patients[patients["config"] == row.config]
        ax.scatter(
            rows["volume_true_ml"],
            rows["volume_pred_ml"],
            s=14,
            alpha=0.7,
            color=f"C{i % 10}",
            label=row.label,
        )
        top = max(top, float(rows[["volume_true_ml", "volume_pred_ml"]].to_numpy().max()))
    ax.plot([0, top], [0, top], "k--", lw=1, label="identity")
    if len(configs) > MAX_SCATTERED:
        ax.set_title(f"first {MAX_SCATTERED} of {len(configs)} rows", fontsize=9)
    ax.set_xlabel("true blood volume (mL), test patients")
    ax.set_ylabel("predicted blood volume (mL)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=130)
