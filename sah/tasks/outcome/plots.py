"""Figures of an outcome run: ROC curves and calibration against the standard model, and
permutation importance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sah.figures import pyplot, save_figure, unit_square
from sah.metrics import calibration_bins, roc_auc, roc_curve_points


def save_roc_figure(
    predictions: pd.DataFrame, path: str | Path, model_label: str, target: str
) -> Path:
    """ROC of each repeat's pooled held-out predictions (model solid, standard dashed) and a
    reliability diagram over all repeats."""
    plt = pyplot()
    fig, (roc_ax, cal_ax) = plt.subplots(1, 2, figsize=(9.5, 4.3))
    series = (
        ("prob", model_label, "tab:red", "-"),
        ("standard_prob", "standard", "tab:blue", "--"),
    )
    for column, label, colour, style in series:
        repeats = [part for _, part in predictions.groupby("repeat", sort=True)]
        mean_auc = np.mean([roc_auc(part["y"], part[column]) for part in repeats])
        for i, part in enumerate(repeats):
            fpr, tpr, _ = roc_curve_points(part["y"], part[column])
            name = f"{label} (pooled AUC {mean_auc:.2f})" if i == 0 else None
            roc_ax.plot(fpr, tpr, color=colour, ls=style, lw=1.2, alpha=0.8, label=name)
        bins = calibration_bins(
            predictions["y"], predictions[column], n_bins=8, strategy="quantile"
        )
        cal_ax.plot(bins["mean_predicted"], bins["observed_fraction"], "o", color=colour, ls=style)
    unit_square(roc_ax, "1 - specificity", "sensitivity", f"{target}: held-out ROC", "lower right")
    unit_square(cal_ax, "mean predicted probability", "observed fraction", "calibration", None)
    return save_figure(fig, path)


def save_importance_figure(
    importance: pd.DataFrame, path: str | Path, model_label: str, top: int = 20
) -> Path:
    """Horizontal bars of the mean AUC drop (SD as error bars), most important on top."""
    plt = pyplot()
    shown = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.0, 0.28 * len(shown) + 1.2))
    ax.barh(shown["feature"], shown["auc_drop_mean"], xerr=shown["auc_drop_sd"], color="tab:red")
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="AUC drop when permuted (held-out folds)", title=f"{model_label}: importance")
    ax.tick_params(axis="y", labelsize=8)
    return save_figure(fig, path)
