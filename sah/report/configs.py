"""Which runs are one configuration, what tells configurations apart, and whether each has
every fold once.

A configuration is everything that was resolved for a run except its fold, its seed and where
it wrote things (paths, tracking, Optuna bookkeeping). Runs tagged ``sah.config_id`` carry that
digest; for a run without the tag it is computed here from the run's params (and its method,
model, target, rank and init tags), with the same keys left out.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

# Keys that change from run to run of one configuration: its fold and seed ...
RUN_SPECIFIC = {"fold", "seed", "split_seed", "resume", "trainable_params"}
# ... where it writes and how it is tracked ...
RUN_SPECIFIC_ROOTS = {"paths", "tracking", "optuna", "hydra", "logger"}
# ... and any file-system location (checkpoint dirpath, cache roots, output folders).
PATH_NAMES = {"dir", "dirpath", "path", "root", "uri", "location"}
PATH_SUFFIXES = ("_dir", "_dirpath", "_path", "_root", "_uri", "_location")
# Params the table already shows as its own columns (model, method, target, rank).
SHOWN_AS_COLUMNS = {
    "model",
    "model.name",
    "method",
    "adapter.method",
    "adapter.name",
    "rank",
    "adapter.rank",
    "target",
    "adapter.target",
    "init",
    "task",
    "task.name",
}
DESCRIPTORS = ("model", "method", "target", "rank", "init")
MISSING = ("", "None", "null", "nan")


def is_run_specific(key: str) -> bool:
    """True for a param that differs between runs of one configuration (fold, seed, paths)."""
    parts = key.split(".")
    last = parts[-1]
    return (
        last in RUN_SPECIFIC
        or parts[0] in RUN_SPECIFIC_ROOTS
        or last in PATH_NAMES
        or last.endswith(PATH_SUFFIXES)
    )


def config_params(params: dict[str, str]) -> dict[str, str]:
    """A run's params without the run-specific ones."""
    return {k: v for k, v in params.items() if not is_run_specific(k)}


def fallback_config_id(params: Mapping[str, str], descriptors: Mapping[str, object]) -> str:
    """A 12-hex digest of the configuration's params and descriptors, for untagged runs."""
    blob = json.dumps(
        {"params": params, "tags": {k: str(v) for k, v in descriptors.items()}}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def normalised(value: object) -> str | None:
    """A param value as compared between configurations: None when missing, numbers by value
    (``0.001`` and ``1e-3`` are equal)."""
    text = "" if value is None else str(value).strip()
    if text in MISSING:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return repr(number) if math.isfinite(number) else text


def distinguishing(params: list[dict[str, str]]) -> list[str]:
    """Params with at least two different values over the configurations (missing does not
    count as a value), other than those the table shows as its own columns."""
    keys = sorted({k for p in params for k in p})
    shown = []
    for key in keys:
        if key in SHOWN_AS_COLUMNS or key == "model._target_":
            continue
        values = {normalised(p.get(key)) for p in params} - {None}
        if len(values) > 1:
            shown.append(key)
    return shown


def _fold_order(fold: object) -> tuple[int, str]:
    text = str(fold)
    return (int(text), text) if text.lstrip("-").isdigit() else (10**9, text)


def fold_check(runs: pd.DataFrame, expected: list[str]) -> str:
    """'' when each seed of the configuration has every expected fold once; otherwise what is
    missing or repeated, e.g. ``missing fold 1`` or ``fold 0 ×2``."""
    problems = []
    seeds = sorted(runs["seed"].astype(str).unique())
    for seed in seeds:
        mine = runs[runs["seed"].astype(str) == seed]
        counts = mine["fold"].astype(str).value_counts()
        missing = [f for f in expected if f not in counts.index]
        repeated = [
            f"fold {f} ×{n}"
            for f, n in sorted(counts.items(), key=lambda x: _fold_order(x[0]))
            if n > 1
        ]
        found = []
        if missing:
            found.append(f"missing fold{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        found += repeated
        if found:
            where = f"seed {seed}: " if len(seeds) > 1 and seed else ""
            problems.append(where + "; ".join(found))
    return "; ".join(problems)


def expected_folds(group: pd.DataFrame, study: pd.DataFrame) -> list[str]:
    """The folds a configuration should have: 0..n_folds-1 as its runs logged n_folds, or
    (when they did not) every fold present in the study."""
    logged = group["n_folds"].dropna()
    if not logged.empty:
        return [str(f) for f in range(int(logged.max()))]
    return sorted({str(f) for f in study["fold"]}, key=_fold_order)


def label(row: pd.Series | dict, columns: list[str]) -> str:
    """A configuration in a few words: ``cp_lora decoder 8 lr=0.001``."""
    parts = []
    for key in columns:
        value = row.get(key)
        if key in DESCRIPTORS:
            if str(value) not in ("-", "", "nan"):
                parts.append(str(value))
        elif normalised(value) is not None:
            parts.append(f"{key}={value}")
    return " ".join(parts)


@dataclass
class Configs:
    """One row per configuration (``frame``; ``expected_folds`` lists the folds it should have)
    and the columns that name a row (``columns``: method, target, rank, model and init where
    they vary, then the params that differ)."""

    frame: pd.DataFrame
    columns: list[str]


def _descriptor_columns(firsts: pd.DataFrame) -> list[str]:
    columns = ["model"] if firsts["model"].nunique() > 1 else []
    columns += ["method", "target", "rank"]
    # init tells fine-tuning from training from scratch; `scratch` already says it for full.
    if firsts.loc[firsts["method"] != "scratch", "init"].nunique() > 1:
        columns.append("init")
    return columns


def config_frame(runs: pd.DataFrame) -> Configs:
    """The configurations of the runs, with their runs, folds and fold check."""
    firsts = runs.drop_duplicates("config")
    columns = _descriptor_columns(firsts) + distinguishing(list(firsts["params"]))
    rows = []
    for config, group in runs.groupby("config", sort=False):
        first = group.iloc[0]
        expected = expected_folds(group, runs)
        row: dict[str, object] = {"config": config}
        for key in columns:
            row[key] = first[key] if key in DESCRIPTORS else first["params"].get(key, "")
        row.update(
            {
                "trainable_params": float(group["trainable_params"].median()),
                "n_runs": len(group),
                "folds": ",".join(sorted({str(f) for f in group["fold"]}, key=_fold_order)),
                "n_folds_expected": len(expected),
                "expected_folds": ",".join(expected),
                "n_folds_logged": bool(group["n_folds"].notna().any()),
                "check": fold_check(group, expected),
                "config_from": first["config_from"],
            }
        )
        row["label"] = label(row, columns)
        rows.append(row)
    frame = pd.DataFrame(rows)
    repeated = frame["label"].duplicated(keep=False)
    frame.loc[repeated, "label"] += " [" + frame.loc[repeated, "config"] + "]"
    return Configs(frame, columns)
