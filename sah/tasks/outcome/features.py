"""Features of the first 72 hours of EMR data, from a clinical table with one row per patient.

The table holds admission variables (age, grades, image findings, ...) and, for each lab or
vital sign, one value per day in columns ``<variable>_d<day>`` (``wbc_d0`` ... ``wbc_d3``). Each
daily variable becomes per-patient summaries over the days: min, max, mean, SD and the
least-squares slope per day (the trend). Summaries use a patient's own values only, so they can
be computed before cross-validation without leaking anything between patients; missing days are
skipped (the slope and SD need two values, otherwise they are missing, to be imputed inside the
CV training folds).

``sex`` is encoded 1 = female, 0 = male (``F``/``M``, ``female``/``male`` or 1/0 accepted).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sah.data.cohorts.manifest import require_columns as require_table_columns
from sah.errors import ConfigError, DataError

SUMMARIES = ("min", "max", "mean", "sd", "slope")
SEX_CODES = {"f": 1.0, "female": 1.0, "w": 1.0, "1": 1.0, "m": 0.0, "male": 0.0, "0": 0.0}


@dataclass(frozen=True)
class Target:
    """An outcome column and how it is made binary (1 = the event to predict)."""

    column: str
    threshold: int  # event when value >= threshold
    allowed: tuple[int, ...]
    meaning: str


TARGETS = {
    "dci": Target("dci", 1, (0, 1), "delayed cerebral ischemia"),
    "mrs_3m": Target("mrs_3m", 4, tuple(range(7)), "poor 3-month outcome, mRS 4-6 vs 0-3"),
    "mortality_3m": Target("mortality_3m", 1, (0, 1), "death by 3 months"),
}


@dataclass(frozen=True)
class FeatureSpec:
    """Which table columns become model features."""

    static: tuple[str, ...]
    daily: tuple[str, ...]
    days: tuple[int, ...] = (0, 1, 2, 3)
    summaries: tuple[str, ...] = SUMMARIES

    def __post_init__(self) -> None:
        unknown = sorted(set(self.summaries) - set(SUMMARIES))
        if unknown:
            raise ConfigError(
                "task.features.summaries", f"unknown summaries {unknown}", f"use {list(SUMMARIES)}"
            )
        if len(self.days) < 1:
            raise ConfigError("task.features.days", "needs at least one day")

    def daily_columns(self, variable: str) -> list[str]:
        return [f"{variable}_d{d}" for d in self.days]

    def table_columns(self) -> list[str]:
        return [*self.static, *(c for v in self.daily for c in self.daily_columns(v))]

    def feature_names(self) -> list[str]:
        return [*self.static, *(f"{v}_{s}" for v in self.daily for s in self.summaries)]

    def groups(self) -> dict[str, list[str]]:
        """Feature names per source variable: a daily variable's summaries form one group."""
        groups = {name: [name] for name in self.static}
        groups.update({v: [f"{v}_{s}" for s in self.summaries] for v in self.daily})
        return groups


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: str | Path) -> None:
    """DataError naming every missing column (and the config key that asked for it)."""
    require_table_columns(
        table,
        columns,
        source,
        "add them to the table, or drop the variable from task.features / task.standard.features",
    )


def numeric_column(table: pd.DataFrame, column: str, source: str | Path) -> pd.Series:
    """The column as float64; blank cells are missing, any other non-number is an error."""
    raw = table[column]
    if column == "sex":
        return _sex_column(raw, table, source)
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype(np.float64)
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    _refuse(
        bad,
        raw,
        table,
        source,
        f"column {column!r} has non-numeric values",
        "fix or blank those cells (blank cells are imputed)",
    )
    return values.astype(np.float64)


def _sex_column(raw: pd.Series, table: pd.DataFrame, source: str | Path) -> pd.Series:
    text = raw.astype(str).str.strip().str.lower()
    text = text.str.replace(r"\.0$", "", regex=True)
    values = text.map(SEX_CODES)
    bad = values.isna() & raw.notna() & (text != "")
    _refuse(
        bad,
        raw,
        table,
        source,
        "column 'sex' has values that are not F/M",
        "use F/M, female/male or 1 (female)/0 (male)",
    )
    return values.astype(np.float64)


def _refuse(
    bad: pd.Series,
    raw: pd.Series,
    table: pd.DataFrame,
    source: str | Path,
    problem: str,
    fix: str,
) -> None:
    """A DataError naming the table, the problem and the first offending cells, if any."""
    if bad.any():
        raise DataError(source, f"{problem} ({_examples(raw, bad, table)})", fix)


def _examples(raw: pd.Series, bad: pd.Series, table: pd.DataFrame) -> str:
    ids = table["patient_id"] if "patient_id" in table.columns else pd.Series(table.index)
    shown = [
        f"{raw[bad].iloc[i]!r} for patient {ids[bad].iloc[i]}" for i in range(min(2, bad.sum()))
    ]
    more = f", {int(bad.sum()) - 2} more" if bad.sum() > 2 else ""
    return "; ".join(shown) + more


def summarise_days(values: np.ndarray, days: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-row min, max, mean, SD (ddof 1) and least-squares slope per day, NaN-aware."""
    values = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(values)
    count = present.sum(axis=1)
    t = np.where(present, np.asarray(days, dtype=np.float64)[None, :], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing rows give NaN, as intended
        mean = np.nanmean(values, axis=1)
        t_centred = t - np.nanmean(t, axis=1, keepdims=True)
        covariance = np.nansum(t_centred * (values - mean[:, None]), axis=1)
        spread = np.nansum(t_centred**2, axis=1)
        out = {
            "min": np.nanmin(values, axis=1),
            "max": np.nanmax(values, axis=1),
            "mean": mean,
            "sd": np.where(count >= 2, np.nanstd(values, axis=1, ddof=1), np.nan),
            "slope": np.where((count >= 2) & (spread > 0), covariance / spread, np.nan),
        }
    return out


def build_features(table: pd.DataFrame, spec: FeatureSpec, source: str | Path) -> pd.DataFrame:
    """Model features (float64, index = patient_id, columns = ``spec.feature_names()``)."""
    require_columns(table, ["patient_id", *spec.table_columns()], source)
    index = pd.Index(table["patient_id"].astype(str), name="patient_id")
    columns: dict[str, np.ndarray] = {
        name: numeric_column(table, name, source).to_numpy() for name in spec.static
    }
    for variable in spec.daily:
        values = np.column_stack(
            [numeric_column(table, c, source).to_numpy() for c in spec.daily_columns(variable)]
        )
        summaries = summarise_days(values, spec.days)
        columns.update({f"{variable}_{s}": summaries[s] for s in spec.summaries})
    return pd.DataFrame(columns, index=index)[spec.feature_names()]


def static_features(table: pd.DataFrame, names: Sequence[str], source: str | Path) -> pd.DataFrame:
    """Admission columns as float64 features (the standard model's inputs)."""
    require_columns(table, ["patient_id", *names], source)
    index = pd.Index(table["patient_id"].astype(str), name="patient_id")
    return pd.DataFrame(
        {name: numeric_column(table, name, source).to_numpy() for name in names}, index=index
    )


def binary_target(table: pd.DataFrame, target: str, source: str | Path) -> pd.Series:
    """0/1 labels indexed by patient_id; patients whose outcome is missing are left out."""
    if target not in TARGETS:
        raise ConfigError(
            "task.target", f"unknown target {target!r}", f"use one of {list(TARGETS)}"
        )
    spec = TARGETS[target]
    require_columns(table, ["patient_id", spec.column], source)
    values = numeric_column(table, spec.column, source)
    values.index = pd.Index(table["patient_id"].astype(str), name="patient_id")
    known = values.dropna()
    bad = ~known.isin(spec.allowed)
    if bad.any():
        raise DataError(
            source,
            f"column {spec.column!r} must hold {list(spec.allowed)}; patient "
            f"{known.index[bad][0]} has {known[bad].iloc[0]:g}",
        )
    return (known >= spec.threshold).astype(np.int64).rename(target)


def check_patient_ids(table: pd.DataFrame, source: str | Path) -> None:
    require_columns(table, ["patient_id"], source)
    ids = table["patient_id"].astype(str)
    if ids.duplicated().any():
        raise DataError(source, f"patient_id {ids[ids.duplicated()].iloc[0]!r} appears twice")


def merge_image_features(
    table: pd.DataFrame, image_features: pd.DataFrame, source: str | Path
) -> tuple[pd.DataFrame, list[str]]:
    """Join image-derived columns (e.g. a segmentation model's blood volume) on patient_id.

    Columns of ``image_features`` replace same-named columns of ``table`` (the image model's
    measurement wins over a table value); patients without a row get missing values, which are
    imputed inside the CV. Returns the merged table and the image columns.
    """
    check_patient_ids(image_features, source)
    features = image_features.copy()
    features["patient_id"] = features["patient_id"].astype(str)
    columns = [c for c in features.columns if c != "patient_id"]
    if not columns:
        raise DataError(source, "no columns besides patient_id", "add image-derived features")
    for column in columns:
        features[column] = numeric_column(features, column, source)
    base = table.drop(columns=[c for c in columns if c in table.columns])
    base = base.assign(patient_id=base["patient_id"].astype(str))
    merged = base.merge(features, on="patient_id", how="left", validate="one_to_one")
    if not base["patient_id"].isin(features["patient_id"]).any():
        raise DataError(
            source,
            "no patient_id in common with the clinical table",
            "check that both files use the same study ids",
        )
    return merged, columns
