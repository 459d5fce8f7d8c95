"""What a classification run reports: the decision threshold, per-patient predictions, ROC and
calibration figures. Plain arrays in, files out (logging them is the CLI's business)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sah.errors import ConfigError
from sah.figures import pyplot, save_figure, unit_square
from sah.metrics import calibration_bins, roc_auc, roc_curve_points


@dataclass(frozen=True)
class Predictions:
    """One set's predictions: patient ids, true outcomes (0/1) and probabilities of 1."""

    patient_ids: list[str]
    y: np.ndarray
    prob: np.ndarray

    @property
    def has_both_classes(self) -> bool:
        return len(set(self.y.tolist())) == 2


def choose_threshold(setting: float | str, validation: Predictions) -> float:
    """A fixed probability, or ``"youden"``: the validation threshold maximising
    sensitivity + specificity - 1 (then applied unchanged to the test set)."""
    if isinstance(setting, str):
        if setting != "youden":
            raise ConfigError("task.threshold", f"a probability or 'youden', got {setting!r}")
        fpr, tpr, thresholds = roc_curve_points(validation.y, validation.prob)
        finite = np.isfinite(thresholds)
        best = int(np.argmax(np.where(finite, tpr - fpr, -np.inf)))
        return float(thresholds[best])
    value = float(setting)
    if not 0.0 < value < 1.0:
        raise ConfigError("task.threshold", f"must be in (0, 1) or 'youden', got {setting!r}")
    return value


def write_predictions(
    sets: Mapping[str, Predictions], threshold: float, fold: int, path: str | Path
) -> Path:
    """``patient_id, split, fold, y_true, prob, predicted`` per patient of every set."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "split", "fold", "y_true", "prob", "predicted"])
        for split, preds in sets.items():
            for pid, y, p in zip(preds.patient_ids, preds.y, preds.prob, strict=True):
                writer.writerow([pid, split, fold, int(y), f"{p:.6f}", int(p >= threshold)])
    return out


COLOURS = {"val": "tab:blue", "test": "tab:red"}


def save_roc_figure(
    sets: Mapping[str, Predictions], threshold: float, path: str | Path, title: str
) -> Path:
    """ROC curve of each set (AUC in the legend), with the operating point at ``threshold``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for split, preds in sets.items():
        if not preds.has_both_classes:
            continue
        fpr, tpr, _ = roc_curve_points(preds.y, preds.prob)
        colour = COLOURS.get(split)
        label = f"{split} (AUC {roc_auc(preds.y, preds.prob):.2f}, n={len(preds.y)})"
        ax.plot(fpr, tpr, color=colour, lw=1.5, label=label)
        predicted = preds.prob >= threshold
        positives = preds.y.astype(bool)
        ax.plot(np.mean(predicted[~positives]), np.mean(predicted[positives]), "o", color=colour)
    unit_square(
        ax,
        "1 - specificity",
        "sensitivity",
        f"{title}\n(dots: threshold {threshold:.2f})",
        legend="lower right",
    )
    return save_figure(fig, path)


def save_calibration_figure(
    sets: Mapping[str, Predictions], path: str | Path, title: str, n_bins: int = 5
) -> Path:
    """Reliability diagram: observed outcome rate against mean predicted probability per bin
    (equal-width bins; marker area grows with the bin's patients)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for split, preds in sets.items():
        if not len(preds.y):
            continue
        bins = calibration_bins(preds.y, preds.prob, n_bins=n_bins, strategy="uniform")
        ax.plot(
            bins["mean_predicted"], bins["observed_fraction"], "-", color=COLOURS.get(split), lw=1
        )
        ax.scatter(
            bins["mean_predicted"],
            bins["observed_fraction"],
            s=20 + 12 * bins["count"],
            color=COLOURS.get(split),
            label=f"{split} (n={len(preds.y)})",
        )
    unit_square(
        ax, "mean predicted probability", "observed fraction", f"{title}: calibration", "upper left"
    )
    return save_figure(fig, path)
