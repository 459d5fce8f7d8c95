"""Cohort aggregation: volume bins, per-bin counts and means, and no silently dropped patients."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from sah.metrics import (
    VOLUME_BINS_ML,
    aggregate,
    per_patient_table,
    segmentation_metrics,
    volume_bin,
    volume_bin_labels,
)

ROWS = [
    {"patient_id": "a", "dice": 0.9, "volume_true_ml": 0.0, "empty_pred": 0.0, "empty_truth": 1.0},
    {"patient_id": "b", "dice": 0.7, "volume_true_ml": 10.0, "empty_pred": 0.0, "empty_truth": 0.0},
    {"patient_id": "c", "dice": 0.5, "volume_true_ml": 25.0, "empty_pred": 0.0, "empty_truth": 0.0},
    {"patient_id": "d", "dice": 0.8, "volume_true_ml": 49.9, "empty_pred": 0.0, "empty_truth": 0.0},
    {"patient_id": "e", "dice": 0.0, "volume_true_ml": 60.0, "empty_pred": 1.0, "empty_truth": 0.0},
    {
        "patient_id": "f",
        "dice": 0.6,
        "volume_true_ml": 300.0,
        "empty_pred": 0.0,
        "empty_truth": 0.0,
    },
]


def test_volume_bins_are_half_open_with_an_open_top() -> None:
    assert VOLUME_BINS_ML == (0.0, 25.0, 50.0, 100.0, 225.0)
    assert volume_bin_labels() == ["0-25", "25-50", "50-100", "100-225", "225+"]
    assert volume_bin(0.0) == "0-25"
    assert volume_bin(24.99) == "0-25"
    assert volume_bin(25.0) == "25-50"
    assert volume_bin(224.9) == "100-225"
    assert volume_bin(225.0) == "225+"
    assert volume_bin(1000.0) == "225+"
    assert volume_bin(7.5, bins=(0, 7.5, 30)) == "7.5-30"
    with pytest.raises(ValueError):
        volume_bin(-1.0)
    with pytest.raises(ValueError):
        volume_bin(math.nan)


def test_fold_strata_close_the_top_bin() -> None:
    # The folds stratify with open_top=False: a bleed over 225 mL joins "100-225".
    assert volume_bin(99.9, open_top=False) == "50-100"
    assert volume_bin(100.0, open_top=False) == "100-225"
    assert volume_bin(225.0, open_top=False) == "100-225"
    assert volume_bin(1000.0, open_top=False) == "100-225"


def test_counts_and_means_per_bin_on_a_hand_made_cohort() -> None:
    summary = aggregate(ROWS)
    assert summary["n"] == 6
    assert summary["n_empty_pred"] == 1 and summary["n_empty_truth"] == 1
    assert summary["overall"]["dice"]["mean"] == pytest.approx(3.5 / 6)
    assert summary["overall"]["dice"]["sd"] == pytest.approx(
        np.std([0.9, 0.7, 0.5, 0.8, 0.0, 0.6], ddof=1)
    )
    assert "patient_id" not in summary["overall"]
    bins = summary["by_volume_bin"]
    assert list(bins) == ["0-25", "25-50", "50-100", "100-225", "225+"]
    assert list(summary["n_by_volume_bin"].values()) == [2, 2, 1, 0, 1]
    assert [bins[label]["dice"]["n"] for label in bins] == [2, 2, 1, 0, 1]
    assert bins["0-25"]["dice"]["mean"] == pytest.approx(0.8)
    assert bins["25-50"]["dice"]["mean"] == pytest.approx(0.65)
    assert bins["25-50"]["dice"]["sd"] == pytest.approx(np.std([0.5, 0.8], ddof=1))
    assert bins["50-100"]["dice"]["mean"] == 0.0
    assert math.isnan(bins["50-100"]["dice"]["sd"])  # one patient: SD undefined
    assert bins["100-225"]["dice"]["n"] == 0
    assert bins["225+"]["dice"]["mean"] == pytest.approx(0.6)


def test_a_missed_bleed_stays_in_the_mean_with_its_finite_penalty() -> None:
    spacing = (1.0, 1.0, 2.0)
    truth = np.zeros((10, 10, 5), dtype=bool)
    truth[2:6, 2:6, 1:3] = True
    hit = segmentation_metrics(truth, truth, spacing)
    miss = segmentation_metrics(np.zeros_like(truth), truth, spacing)
    summary = aggregate([hit, miss])
    assert summary["n"] == 2 and summary["n_empty_pred"] == 1
    assert summary["overall"]["dice"]["mean"] == pytest.approx(0.5)
    assert summary["overall"]["hd95_mm"]["mean"] == pytest.approx(miss["hd95_mm"] / 2)
    assert summary["overall"]["hd95_mm"]["n"] == 2
    assert math.isfinite(summary["overall"]["hd95_mm"]["mean"])


def test_nan_metrics_raise_instead_of_being_dropped() -> None:
    rows = [dict(ROWS[0]), dict(ROWS[1], dice=math.nan)]
    with pytest.raises(ValueError, match="'dice' of b"):
        aggregate(rows)
    with pytest.raises(ValueError, match="volume_true_ml"):
        aggregate([{"dice": 0.5}])
    with pytest.raises(ValueError):
        aggregate([])


def test_accepts_dataframe_like_input() -> None:
    class Frame:
        columns = ("patient_id", "dice", "volume_true_ml")

        def to_dict(self, orient: str) -> list[dict]:
            assert orient == "records"
            return [{"patient_id": "x", "dice": 0.4, "volume_true_ml": 30.0}]

    assert aggregate(Frame())["n_by_volume_bin"]["25-50"] == 1


def test_per_patient_table_writes_a_csv(tmp_path) -> None:
    path = per_patient_table(ROWS, tmp_path / "out" / "patients.csv", bins=VOLUME_BINS_ML)
    with path.open() as handle:
        read = list(csv.DictReader(handle))
    assert len(read) == len(ROWS)
    assert read[0]["patient_id"] == "a" and float(read[3]["dice"]) == 0.8
    assert [row["volume_bin"] for row in read] == [
        "0-25",
        "0-25",
        "25-50",
        "25-50",
        "50-100",
        "225+",
    ]
