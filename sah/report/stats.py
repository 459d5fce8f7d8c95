"""Each configuration against a baseline: paired Wilcoxon signed-rank test over patients.

Pairs are the patients both configurations scored (each patient is validated once per CV
split, so pairs are matched on patient id across folds). p-values are two-sided; ``p_holm``
adjusts them for the number of comparisons (Holm-Bonferroni).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from sah.errors import ConfigError
from sah.report.collect import group_key
from sah.report.tables import per_patient_scores, sort_configs


def parse_selector(text: str) -> dict[str, str]:
    """``"method=none"`` or ``"method=full,target=all"`` -> {column: value}; a bare name is a
    method."""
    selector: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        column, sep, value = part.partition("=")
        if not sep:
            column, value = "method", column
        if column not in ("model", "method", "target", "rank"):
            raise ConfigError(
                "--baseline", f"{column!r} is not a column", "use method=, target=, rank=, model="
            )
        selector[column.strip()] = value.strip()
    if not selector:
        raise ConfigError("--baseline", "empty selector", "e.g. --baseline method=none")
    return selector


def baseline_config(table: pd.DataFrame, selector: dict[str, str]) -> tuple[str, ...]:
    """The one configuration the selector picks; a ConfigError listing candidates otherwise."""
    key = group_key(table)
    configs = table[key].drop_duplicates().astype(str)
    mask = np.ones(len(configs), dtype=bool)
    for column, value in selector.items():
        if column in configs:
            mask &= (configs[column] == value).to_numpy()
    matches = configs[mask]
    listed = ["/".join(row) for row in configs.itertuples(index=False)]
    if len(matches) != 1:
        problem = "matches no configuration" if matches.empty else "matches several"
        picked = ", ".join("/".join(r) for r in matches.itertuples(index=False))
        raise ConfigError(
            "--baseline",
            f"{selector} {problem}{': ' + picked if picked else ''}",
            f"narrow it (e.g. method=full,target=all); configurations ({'/'.join(key)}): {listed}",
        )
    return tuple(matches.iloc[0])


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
    table: pd.DataFrame, baseline: tuple[str, ...], metric: str = "dice"
) -> pd.DataFrame:
    key = group_key(table)
    text = table.astype({k: str for k in key})
    groups = dict(iter(text.groupby(key, sort=False)))
    base = per_patient_scores(groups[baseline], metric)
    rows = []
    for values, group in groups.items():
        if values == baseline:
            continue
        scores = per_patient_scores(group, metric)
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
                **dict(zip(key, values, strict=True)),
                "baseline": "/".join(baseline),
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
