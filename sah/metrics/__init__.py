"""Evaluation metrics for sah, numpy/scipy only so they can be copied into other projects."""

from sah.metrics.aggregate import (
    VOLUME_BINS_ML,
    aggregate,
    per_patient_table,
    volume_bin,
    volume_bin_labels,
)
from sah.metrics.classification import (
    binary_classification_metrics,
    bootstrap_auc_difference,
    calibration_bins,
    delong_auc_test,
    roc_auc,
    roc_curve_points,
)
from sah.metrics.segmentation import (
    dice,
    physical_diagonal_mm,
    segmentation_metrics,
    surface,
    surface_distances,
)

__all__ = [
    "VOLUME_BINS_ML",
    "aggregate",
    "binary_classification_metrics",
    "bootstrap_auc_difference",
    "calibration_bins",
    "delong_auc_test",
    "dice",
    "per_patient_table",
    "physical_diagonal_mm",
    "roc_auc",
    "roc_curve_points",
    "segmentation_metrics",
    "surface",
    "surface_distances",
    "volume_bin",
    "volume_bin_labels",
]
