"""Select, then report: within each group of configurations (each method, or each value of any
tag), the configuration with the best mean selection-set metric (``val/*``) over its runs.

Only the selection set chooses: the outer fold's patients (``test/*``) are never looked at
here, so "the best rank per method" is reported on patients that picked nothing. Configurations
that lack a fold, or ran one twice, compete only when their group has no complete one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from sah.errors import ConfigError
from sah.report.configs import Configs

# Metric names where lower is better (losses, errors, distances, calibration).
LOWER_IS_BETTER = ("loss", "error", "hd95", "sasd", "_mm", "brier", "ece")
DESCRIBED = ("model", "method", "target", "rank", "init")


@dataclass
class Selection:
    """What was picked (``table``: one row per group), how, and which groups or configurations
    could not compete for want of the metric (``warnings``)."""

    metric: str
    by: str
    mode: str
    table: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def configs(self) -> list[str]:
        return list(self.table["config"])


def direction(metric: str, mode: str | None = None) -> str:
    """``min`` for loss-like names (or when asked), otherwise ``max``."""
    if mode is not None:
        if mode not in ("min", "max"):
            raise ConfigError("--select-mode", f"{mode!r} is not min or max", "use min or max")
        return mode
    name = metric.rsplit("/", 1)[-1].lower()
    return "min" if any(part in name for part in LOWER_IS_BETTER) else "max"


def check_metric_name(metric: str) -> None:
    """Only the selection set may choose: a ``test/*`` (or any non-``val/``) name is refused."""
    if not metric.startswith("val/"):
        raise ConfigError(
            "--select",
            f"{metric!r} is not a selection-set metric: only val/* metrics (the patients carved "
            "out of the training folds) may choose a configuration",
            "e.g. --select val/dice",
        )


def _group_value(runs: pd.DataFrame, by: str) -> pd.Series:
    """The --select-by value of each run: a described column or any run tag."""
    if by in DESCRIBED:
        return runs[by].astype(str)
    values = runs["tags"].map(lambda tags: tags.get(by))
    if values.isna().any():
        lacking = runs.loc[values.isna(), "run_name"].tolist()
        present = sorted({k for tags in runs["tags"] for k in tags if not k.startswith("mlflow.")})
        raise ConfigError(
            "--select-by",
            f"runs {lacking[:3]} have no tag {by!r}",
            f"use one of {[*DESCRIBED, *present]}",
        )
    return values.astype(str)


def select(
    runs: pd.DataFrame, configs: Configs, metric: str, by: str = "method", mode: str | None = None
) -> Selection:
    """Per value of ``by``, the configuration with the best mean ``metric`` over its runs."""
    check_metric_name(metric)
    goal = direction(metric, mode)
    values = runs["metrics"].map(lambda m: m.get(metric, math.nan)).astype(float)
    if values.isna().all():
        logged = sorted({k for m in runs["metrics"] for k in m if k.startswith("val/")})
        raise ConfigError("--select", f"no run logged {metric!r}", f"use one of {logged}")
    scored = runs.assign(_value=values, _group=_group_value(runs, by))
    varying = scored.groupby("config")["_group"].nunique()
    if (varying > 1).any():
        config = varying[varying > 1].index[0]
        raise ConfigError(
            "--select-by",
            f"tag {by!r} differs between runs of one configuration ({config})",
            "choose a tag that names a configuration, e.g. method, model or target",
        )
    info = configs.frame.set_index("config")
    rows, warnings = [], []
    for group_value, group in scored.groupby("_group", sort=False):
        means = group.groupby("config", sort=False)["_value"].agg(["mean", "count"])
        unscored = [str(c) for c in means.index[means["count"] == 0]]
        means = means[means["count"] > 0]
        where = f"{by}={group_value}"
        if means.empty and len(unscored) == 1:  # nothing to choose from
            warnings.append(f"{where}: its only configuration logged no {metric}; reported as is")
            means = pd.DataFrame({"mean": [math.nan], "count": [0]}, index=unscored)
        elif means.empty:
            warnings.append(
                f"{where} left out: none of its {len(unscored)} configurations logged {metric}"
            )
            continue
        elif unscored:
            listed = ", ".join(str(info.loc[c, "label"]) for c in unscored)
            warnings.append(f"{where}: without {metric}, these did not compete: {listed}")
        complete = [c for c in means.index if not info.loc[c, "check"]]
        candidates = means.loc[complete] if complete else means
        ordered = (  # ties go to the smaller config id, so the pick does not depend on run order
            candidates.rename_axis("config")
            .reset_index()
            .sort_values(["mean", "config"], ascending=[goal == "min", True])
            .set_index("config")
        )
        best = ordered.index[0]
        rows.append(
            {
                by: group_value,
                "config": best,
                "label": info.loc[best, "label"],
                f"mean {metric}": float(ordered.loc[best, "mean"]),
                "runs": int(ordered.loc[best, "count"]),
                "candidates": len(means),
                "incomplete (not competing)": len(means) - len(candidates),
                "only incomplete": not complete,
            }
        )
    return Selection(metric, by, goal, pd.DataFrame(rows), warnings)


def describe(selection: Selection) -> list[str]:
    """One line per group: which configuration was picked and its mean selection metric."""
    lines = []
    for row in selection.table.to_dict("records"):
        note = " (no configuration of it has every fold once)" if row["only incomplete"] else ""
        value = row[f"mean {selection.metric}"]
        score = (
            f"mean {selection.metric} {value:.4f} over {row['runs']} runs"
            if not math.isnan(value)
            else f"no {selection.metric} logged"
        )
        lines.append(
            f"{selection.by}={row[selection.by]}: picked {row['label']} "
            f"[config {row['config']}], {score}, "
            + (
                f"best ({selection.mode}) of {row['candidates']} configurations"
                if row["candidates"] > 1
                else "the only configuration"
            )
            + note
        )
    return lines
