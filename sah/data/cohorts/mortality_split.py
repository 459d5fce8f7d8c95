"""task=mortality's cohort: binary outcome labels of a manifest and their patient-level splits
(task=outcome, the tabular models, splits in ``sah.tasks.outcome.cross_validation``).

A classification run needs both outcome classes in every set it trains or scores on: an AUC is
undefined on one class and balanced class weights are infinite for an absent one. So every way a
cohort can fail that (a missing column, one class overall, too few events for the folds, a fold
without events) stops here with the column, fold or key named, before anything is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sah.data.cohorts.folds import split_with_selection
from sah.data.cohorts.manifest import require_columns
from sah.errors import ConfigError, DataError

TEST_SEED_SALT = 0x7E57  # the test hold-out draws from its own stream, independent of the folds


@dataclass(frozen=True)
class OutcomeSplit:
    """Patient ids of one run: ``train``; ``val``, the selection set carved from the training
    patients (early stopping, learning-rate plateaus, the best epoch, a Youden threshold);
    ``test``, the outer fold, scored once after training; ``holdout``, a fixed set outside every
    fold (maybe empty), also only scored."""

    train: list[str]
    val: list[str]
    test: list[str]
    holdout: list[str]


def read_outcome_cohort(
    manifest: str | Path, outcome: str, outcomes: str | Path | None = None
) -> pd.DataFrame:
    """``patient_id``, ``image`` (absolute path) and ``y`` (0/1) of every manifest patient.

    The outcome column comes from the manifest itself, or from ``outcomes`` (a CSV with
    ``patient_id`` and the column, e.g. a synthetic cohort's ``clinical.csv``) joined on
    ``patient_id``.
    """
    from sah.data.cohorts.manifest import read_manifest

    table = read_manifest(manifest)
    source = Path(manifest)
    if outcomes is not None:
        source = Path(outcomes)
        extra = _read_outcome_table(source, outcome)
        table = table.drop(columns=[outcome], errors="ignore").merge(
            extra, on="patient_id", how="left", indicator=True
        )
        absent = table.loc[table["_merge"] == "left_only", "patient_id"].tolist()
        if absent:
            raise DataError(
                source,
                f"no row for {len(absent)} manifest patient(s): {', '.join(absent[:10])}",
                "give every patient of the manifest an outcome row",
            )
    elif outcome not in table.columns:
        raise ConfigError(
            "data.outcome",
            f"manifest {manifest} has no column '{outcome}' (columns: {', '.join(table.columns)})",
            "add the column (0/1 per patient), name another column with data.outcome=..., or "
            "give a CSV with patient_id and the column as data.outcomes=...",
        )
    labels = _binary_labels(table, outcome, source)
    return pd.DataFrame(
        {"patient_id": table["patient_id"], "image": table["image"], "y": labels}
    ).reset_index(drop=True)


def _read_outcome_table(path: Path, outcome: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "outcome table not found", "check data.outcomes")
    try:
        table = pd.read_csv(path, dtype={"patient_id": str})
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(path, f"is not a readable CSV ({error})") from error
    require_columns(
        table,
        ("patient_id", outcome),
        path,
        "set data.outcome to one of its columns, or add the column",
    )
    if table["patient_id"].duplicated().any():
        dup = table.loc[table["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise DataError(path, f"patient_id {dup!r} appears more than once")
    table["patient_id"] = table["patient_id"].str.strip()
    return table[["patient_id", outcome]]


def _binary_labels(table: pd.DataFrame, outcome: str, source: Path) -> np.ndarray:
    raw = table[outcome]
    values = pd.to_numeric(raw.replace({True: 1, False: 0}), errors="coerce")
    blank = raw.isna()
    if blank.any():
        ids = table.loc[blank, "patient_id"].tolist()
        raise DataError(
            source,
            f"column '{outcome}' is empty for {len(ids)} patient(s): {', '.join(ids[:10])}",
            "fill in 0/1 for each, or leave those patients out of the manifest",
        )
    bad = ~values.isin([0, 1])
    if bad.any():
        first = table.loc[bad].iloc[0]
        raise DataError(
            source,
            f"column '{outcome}' must hold 0/1; patient {first['patient_id']!r} has "
            f"{raw[bad].iloc[0]!r}",
            "code the outcome as 1 (event, e.g. death) and 0 (no event)",
        )
    return values.to_numpy(dtype=np.int64)


def split_outcome_cohort(
    patient_ids: Sequence[str],
    labels: Sequence[int],
    outcome: str,
    fold: int,
    n_folds: int,
    seed: int = 0,
    holdout_fraction: float = 0.0,
    stratify: bool = True,
    selection_fraction: float = 0.25,
    pinned: dict[str, int] | None = None,
) -> OutcomeSplit:
    """Hold out a set stratified by outcome (``holdout_fraction`` of each class, fixed for
    every fold), split the rest into ``n_folds`` folds stratified by outcome (fold ``fold`` is
    the test set), and carve the selection set from the training patients, stratified too."""
    ids = [str(p) for p in patient_ids]
    y = np.asarray(labels, dtype=np.int64)
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise DataError(
            "data.manifest",
            f"column '{outcome}' is {classes[0] if classes else '-'} for all {len(ids)} patients",
            "a classifier needs patients of both outcomes (0 and 1)",
        )
    if not 0.0 <= holdout_fraction < 1.0:
        raise ConfigError("data.holdout_fraction", f"must be in [0, 1), got {holdout_fraction}")
    holdout = _hold_out(ids, y, holdout_fraction, seed) if holdout_fraction > 0 else []
    if holdout:
        _require_both(
            "data.holdout_fraction",
            "the hold-out set",
            [y[ids.index(p)] for p in holdout],
            outcome,
        )
    held = set(holdout)
    rest = [i for i, p in enumerate(ids) if p not in held]
    rest_ids, rest_y = [ids[i] for i in rest], y[rest]
    events, non_events = int(rest_y.sum()), int(len(rest_y) - rest_y.sum())
    if min(events, non_events) < n_folds:
        where = " not held out" if holdout else ""
        raise ConfigError(
            "data.n_folds",
            f"{n_folds} folds need at least {n_folds} patients of each '{outcome}' class among "
            f"the {len(rest_ids)} patients{where}; there are {events} with {outcome}=1 and "
            f"{non_events} with {outcome}=0",
            "use fewer folds, a smaller data.holdout_fraction or a larger cohort",
        )
    strata = rest_y.tolist() if stratify else None
    split = split_with_selection(
        rest_ids, fold, n_folds, seed, selection_fraction, strata=strata, pinned=pinned
    )
    label_of = dict(zip(rest_ids, rest_y.tolist(), strict=True))
    for key, where, members in (
        ("fold", f"fold {fold}'s test set", split.test),
        ("data.selection_fraction", f"fold {fold}'s selection set", split.selection),
        ("fold", f"fold {fold}'s training set", split.train),
    ):
        _require_both(key, where, [label_of[p] for p in members], outcome)
    return OutcomeSplit(split.train, split.selection, split.test, sorted(holdout))


def _hold_out(ids: list[str], y: np.ndarray, fraction: float, seed: int) -> list[str]:
    rng = np.random.default_rng([int(seed), TEST_SEED_SALT])
    chosen: list[str] = []
    for value in (0, 1):
        members = sorted(p for p, label in zip(ids, y.tolist(), strict=True) if label == value)
        count = max(1, round(fraction * len(members)))
        chosen += [members[i] for i in rng.permutation(len(members))[:count]]
    return chosen


def _require_both(key: str, where: str, labels: Sequence[int], outcome: str) -> None:
    present = sorted({int(v) for v in labels})
    if len(present) < 2:
        raise ConfigError(
            key,
            f"all {len(labels)} patients of {where} have {outcome}={present[0]}; its AUC and "
            "class weights need both outcomes",
            "stratify the folds (data.stratify=true), use fewer folds or a larger cohort",
        )
