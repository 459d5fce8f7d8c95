"""Evaluation metrics for sah, numpy/scipy only so they can be copied into other projects."""

from sah.metrics.segmentation import (
    physical_diagonal_mm,
    segmentation_metrics,
    surface,
    surface_distances,
)

__all__ = [
    "physical_diagonal_mm",
    "segmentation_metrics",
    "surface",
    "surface_distances",
]
