"""Each configuration against a baseline: paired Wilcoxon signed-rank test over patients.

Pairs are the patients both configurations scored on their test sets (each patient is in the
outer fold of one CV split, so pairs are matched on patient id across folds). p-values are
two-sided; ``p_holm`` adjusts them for the number of comparisons (Holm-Bonferroni).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from sah.errors import ConfigError
from sah.report.configs import normalised
from sah.report.tables import per_patient_scores, sort_configs

DESCRIBED = ("model", "method", "target", "rank", "init")
# Config-table columns that are not part of a configuration's name.
SUMMARY_COLUMNS = (
    "trainable_params",
    "n_runs",
    "folds",
    "n_folds_expected",
    "expected_folds",
    "n_folds_logged",
    "config_from",
    "n_patients",
)


def parse_selector(text: str) -> dict[str, str]:
    """``"method=none"`` or ``"method=full,target=all,lr=0.001"`` -> {key: value}; a bare name
    is a method. Keys are the table's columns (model, method, target, rank, init), any logged
    param, or ``config`` (the configuration id)."""
    selector: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        column, sep, value = part.partition("=")
        if not sep:
            column, value = "method", column
        selector[column.strip()] = value.strip()
    if not selector:
        raise ConfigError("--baseline", "empty selector", "e.g. --baseline method=none")
    return selector


def attributes(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its id, described columns and every param (None when
    missing)."""
    rows = []
    for config, group in runs.groupby("config", sort=False):
        first = group.iloc[0]
        row = {k: None if normalised(v) is None else str(v) for k, v in first["params"].items()}
        row.update({k: str(first[k]) for k in DESCRIBED})
        row["config"] = str(config)
        rows.append(row)
    return pd.DataFrame(rows)


def _natural(value: str) -> tuple[int, float, str]:
    """Numbers by value before words: ``4, 8, 16, -``."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


def _matching(frame: pd.DataFrame, selector: dict[str, str]) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for key, value in selector.items():
        if key not in frame.columns:
            return frame.iloc[0:0]
        mask &= (frame[key].map(normalised) == normalised(value)).to_numpy()
    return frame[mask]


def _no_match(frame: pd.DataFrame, selector: dict[str, str]) -> ConfigError:
    """Names the first key no run matches and the values the runs have instead."""
    pool, within = frame, dict[str, str]()
    for key, value in selector.items():
        hits = _matching(pool, {key: value})
        if hits.empty:
            column = pool[key] if key in pool.columns else pd.Series(dtype=object)
            present = sorted({str(v) for v in column.dropna()}, key=_natural)
            where = f" among runs with {_text(within)}" if within else ""
            if present:
                kind = f"{key}s" if key in DESCRIBED else f"values of {key}"
                return ConfigError(
                    "--baseline",
                    f"no run has {_text(selector)}; {kind} present{where}: {', '.join(present)}",
                )
            keys = [*DESCRIBED, "config", *sorted(c for c in frame.columns if c not in DESCRIBED)]
            return ConfigError(
                "--baseline",
                f"no run has {_text(selector)}; no run{where} has a {key!r}",
                f"use one of {', '.join(dict.fromkeys(keys))}",
            )
        pool, within = hits, {**within, key: value}
    return ConfigError("--baseline", f"{_text(selector)} matches no configuration")


def baseline_config(
    runs: pd.DataFrame, selector: dict[str, str], reported: list[str] | None = None
) -> str:
    """The id of the one configuration the selector picks, looked for among the reported
    configurations first, then among all; a one-line ConfigError otherwise."""
    frame = attributes(runs)
    pools = [frame[frame["config"].isin(reported)]] if reported is not None else []
    for pool in [*pools, frame]:
        matches = _matching(pool, selector)
        if len(matches) == 1:
            return str(matches["config"].iloc[0])
        if len(matches) > 1:
            differ = sorted(
                (
                    c
                    for c in matches.columns
                    if c != "config" and matches[c].nunique(dropna=False) > 1
                ),
                key=lambda c: c not in DESCRIBED,
            )
            example = f"{_text(selector)},{differ[0]}=..." if differ else "config=<id>"
            raise ConfigError(
                "--baseline",
                f"{_text(selector)} matches {len(matches)} configurations "
                f"({', '.join(matches['config'])})",
                f"add one of {', '.join(differ) or 'config'} (e.g. {example}), or use config=<id>",
            )
    raise _no_match(frame, selector)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted


def wilcoxon_vs_baseline(
    patients: pd.DataFrame, configs: pd.DataFrame, baseline: str, metric: str = "dice"
) -> pd.DataFrame:
    """Each configuration of ``configs`` (rows of the config table) against the configuration
    ``baseline`` (an id), paired on the patients both scored."""
    base = per_patient_scores(patients[patients["config"] == baseline], metric)
    names = [c for c in configs.columns if c not in SUMMARY_COLUMNS and not c.startswith(metric)]
    labels = dict(zip(configs["config"], configs["label"], strict=True))
    rows = []
    for _, config in configs.iterrows():
        if config["config"] == baseline:
            continue
        scores = per_patient_scores(patients[patients["config"] == config["config"]], metric)
        common = scores.index.intersection(base.index)
        diff = (scores[common] - base[common]).to_numpy(dtype=float)
        if diff.size == 0:
            statistic, p_value = math.nan, math.nan
        elif np.allclose(diff, 0.0):
            statistic, p_value = 0.0, 1.0
        else:
            result = stats.wilcoxon(scores[common], base[common])
            statistic, p_value = float(result.statistic), float(result.pvalue)
        rows.append(
            {
                **{k: config[k] for k in names},
                "baseline": labels.get(baseline, baseline),
                "n_pairs": int(diff.size),
                f"{metric}_mean_diff": float(diff.mean()) if diff.size else math.nan,
                f"{metric}_median_diff": float(np.median(diff)) if diff.size else math.nan,
                "statistic": statistic,
                "p_value": p_value,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["p_holm"] = holm(frame["p_value"].tolist())
    return sort_configs(frame)
