"""Cohort summaries of per-patient metrics: mean ± SD overall and per hemorrhage-volume bin.

Bins are by true hemorrhage volume in mL and half-open, ``[lo, hi)``: with the default edges
``VOLUME_BINS_ML = (0, 25, 50, 100, 225)`` the labels are ``"0-25"``, ``"25-50"``, ``"50-100"``,
``"100-225"``, plus an open ``"225+"`` bin for anything at or above the last edge, so very large
bleeds are reported apart rather than mixed into the last bounded bin. A volume of exactly 25 mL
is in ``"25-50"``; scans without blood (0 mL) are in ``"0-25"``.

Every patient counts: a NaN or missing metric raises instead of being skipped, because dropping
a patient silently (as MONAI's NaN-aware mean does for missed bleeds) flatters the model. SD is
the sample SD (``ddof=1``) and is NaN when a group has fewer than two patients; ``n`` is always
given next to it. Empty bins are listed with ``n = 0`` so tables keep the same rows.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from numbers import Real
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

VOLUME_BINS_ML: tuple[float, ...] = (0.0, 25.0, 50.0, 100.0, 225.0)

Summary = dict[str, float]  # mean, sd, n


def _format_edge(edge: float) -> str:
    return f"{edge:g}"


def volume_bin_labels(bins: Sequence[float] = VOLUME_BINS_ML) -> list[str]:
    """Labels of the bounded bins followed by the open top bin, e.g. ``["0-25", ..., "225+"]``."""
    edges = [float(edge) for edge in bins]
    if len(edges) < 2 or any(lo >= hi for lo, hi in pairwise(edges)):
        raise ValueError(f"volume bins must be at least two increasing edges, got {bins!r}")
    bounded = [f"{_format_edge(lo)}-{_format_edge(hi)}" for lo, hi in pairwise(edges)]
    return [*bounded, f"{_format_edge(edges[-1])}+"]


def volume_bin(
    volume_ml: float, bins: Sequence[float] = VOLUME_BINS_ML, *, open_top: bool = True
) -> str:
    """Label of the half-open bin ``[lo, hi)`` holding ``volume_ml``; at or above the last edge
    it is the open bin (``"225+"``).

    ``open_top=False`` puts those volumes in the last bounded bin (``"100-225"``) instead: the
    folds' strata, where a bleed over 225 mL is too rare to make a stratum of its own.
    """
    labels = volume_bin_labels(bins)
    if not (math.isfinite(volume_ml) and volume_ml >= bins[0]):
        raise ValueError(f"volume {volume_ml!r} mL is not a finite value >= {bins[0]} mL")
    index = int(np.searchsorted(np.asarray(bins, dtype=float), volume_ml, side="right")) - 1
    return labels[index if open_top else min(index, len(labels) - 2)]


def _rows(per_patient: Iterable[Mapping[str, Any]] | Any) -> list[Mapping[str, Any]]:
    """A list of dicts; a pandas DataFrame is taken through ``to_dict("records")``."""
    if hasattr(per_patient, "to_dict") and hasattr(per_patient, "columns"):
        return per_patient.to_dict("records")
    return list(per_patient)


def _is_number(value: Any) -> TypeGuard[Real | np.number]:
    return isinstance(value, Real | np.number) and not isinstance(value, bool | np.bool_)


def _metric_names(rows: list[Mapping[str, Any]]) -> list[str]:
    """Keys whose value is a number in the first row (text columns like ``patient_id`` are not)."""
    return [key for key, value in rows[0].items() if _is_number(value)]


def _values(rows: list[Mapping[str, Any]], metric: str) -> np.ndarray:
    values = []
    for index, row in enumerate(rows):
        value = row.get(metric)
        if not _is_number(value) or not math.isfinite(float(value)):
            who = row.get("patient_id", f"row {index}")
            raise ValueError(
                f"metric '{metric}' of {who} is {value!r}; every patient must have a finite value "
                "so that none is silently left out of the mean"
            )
        values.append(float(value))
    return np.asarray(values)


def _summary(values: np.ndarray) -> Summary:
    return {
        "mean": float(values.mean()) if values.size else math.nan,
        "sd": float(values.std(ddof=1)) if values.size > 1 else math.nan,
        "n": int(values.size),
    }


def aggregate(
    per_patient: Iterable[Mapping[str, Any]] | Any,
    bins: Sequence[float] = VOLUME_BINS_ML,
    volume_key: str = "volume_true_ml",
) -> dict[str, Any]:
    """Mean ± SD of every numeric metric over patients, overall and per true-volume bin.

    Returns ``{"n", "n_empty_pred", "n_empty_truth", "overall": {metric: {mean, sd, n}},
    "by_volume_bin": {label: {metric: {mean, sd, n}}}, "n_by_volume_bin": {label: n}}``, every
    bin listed in order. The empty-mask counts are 0 when rows carry no ``empty_pred`` /
    ``empty_truth`` flags.
    """
    rows = _rows(per_patient)
    if not rows:
        raise ValueError("aggregate needs at least one patient")
    metrics = _metric_names(rows)
    if volume_key not in metrics:
        raise ValueError(f"rows need a numeric '{volume_key}' to assign hemorrhage-volume bins")
    table = {metric: _values(rows, metric) for metric in metrics}
    labels = np.asarray([volume_bin(volume, bins) for volume in table[volume_key]])

    bin_labels = volume_bin_labels(bins)
    by_bin = {
        label: {metric: _summary(values[labels == label]) for metric, values in table.items()}
        for label in bin_labels
    }
    flag_count = {
        key: int(table[key].sum()) if key in table else 0 for key in ("empty_pred", "empty_truth")
    }
    return {
        "n": len(rows),
        "n_empty_pred": flag_count["empty_pred"],
        "n_empty_truth": flag_count["empty_truth"],
        "overall": {metric: _summary(values) for metric, values in table.items()},
        "by_volume_bin": by_bin,
        "n_by_volume_bin": {label: int(np.sum(labels == label)) for label in bin_labels},
    }


def per_patient_table(
    per_patient: Iterable[Mapping[str, Any]], path: str | Path, bins: Sequence[float] | None = None
) -> Path:
    """Write one CSV row per patient (columns in first-seen order); with ``bins``, add a
    ``volume_bin`` column from ``volume_true_ml``. Returns the path written."""
    rows = [dict(row) for row in _rows(per_patient)]
    if bins is not None:
        for row in rows:
            row["volume_bin"] = volume_bin(float(row["volume_true_ml"]), bins)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
