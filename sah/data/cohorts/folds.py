"""Patient-level K-fold splits that depend only on the patient ids, the strata and the seed.

Slices of one patient never land in two folds: splitting happens on patient ids, before any
slice is drawn. Stratification deals each stratum's patients round-robin over the folds, so
every fold sees every hemorrhage-volume bin (segmentation) or outcome class (classification).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sah.errors import ConfigError, DataError


def assign_folds(
    patient_ids: Sequence[str],
    n_folds: int = 3,
    seed: int = 0,
    strata: Sequence[object] | None = None,
) -> dict[str, int]:
    """Map each patient id to a fold index in ``range(n_folds)``.

    The result does not depend on the order of ``patient_ids``: ids are sorted before the
    seeded shuffle, so the same cohort gives the same folds whatever order the manifest has.
    """
    ids = [str(p) for p in patient_ids]
    if len(set(ids)) != len(ids):
        raise ConfigError("data.manifest", "duplicate patient ids; folds need one row per patient")
    if n_folds < 2:
        raise ConfigError("data.n_folds", f"must be at least 2, got {n_folds}")
    if len(ids) < n_folds:
        raise ConfigError(
            "data.n_folds", f"{n_folds} folds need at least {n_folds} patients, got {len(ids)}"
        )
    labels = ["all"] * len(ids) if strata is None else [str(s) for s in strata]
    if len(labels) != len(ids):
        raise ValueError("strata must have one entry per patient id")
    rng = np.random.default_rng(seed)
    order = sorted(range(len(ids)), key=lambda i: (labels[i], ids[i]))
    folds: dict[str, int] = {}
    offset = 0
    for stratum in sorted(set(labels)):
        members = [i for i in order if labels[i] == stratum]
        members = [members[j] for j in rng.permutation(len(members))]
        for rank, i in enumerate(members):
            folds[ids[i]] = (offset + rank) % n_folds
        # Continue the round-robin where this stratum stopped, so fold sizes stay balanced.
        offset = (offset + len(members)) % n_folds
    return folds


def split_fold(
    patient_ids: Sequence[str],
    fold: int,
    n_folds: int = 3,
    seed: int = 0,
    strata: Sequence[object] | None = None,
) -> tuple[list[str], list[str]]:
    """Return (train ids, validation ids) for ``fold``, each sorted."""
    if not 0 <= fold < n_folds:
        raise ConfigError("fold", f"must be in 0..{n_folds - 1} for {n_folds} folds, got {fold}")
    folds = assign_folds(patient_ids, n_folds, seed, strata)
    train = sorted(p for p, f in folds.items() if f != fold)
    val = sorted(p for p, f in folds.items() if f == fold)
    return train, val


def site_split(sites: dict[str, str], external_sites: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split patients into internal and external cohorts by their ``site`` column."""
    unknown = set(external_sites) - set(sites.values())
    if unknown:
        raise ConfigError(
            "data.external_sites",
            f"no patient has site {sorted(unknown)}; sites present: {sorted(set(sites.values()))}",
        )
    external = sorted(p for p, s in sites.items() if s in external_sites)
    internal = sorted(p for p, s in sites.items() if s not in external_sites)
    return internal, external


@dataclass(frozen=True)
class FoldSplit:
    """The three sets of one run: ``train`` fits the weights, ``selection`` chooses (best epoch,
    early stopping, pruning, thresholds, the value a sweeper sees) and ``test`` (the outer fold)
    is scored once, after training, and only reported."""

    train: list[str]
    selection: list[str]
    test: list[str]


SELECTION_SEED_SALT = 0x5E1  # the selection draw has its own stream, independent of the folds
MIN_SELECTION = 2


def split_with_selection(
    patient_ids: Sequence[str],
    fold: int,
    n_folds: int,
    seed: int,
    selection_fraction: float,
    strata: Sequence[object] | None = None,
    pinned: Mapping[str, int] | None = None,
) -> FoldSplit:
    """Outer fold ``fold`` as the test set; about ``selection_fraction`` of the remaining
    (training) patients, stratified like the folds, as the selection set.

    ``pinned`` (patient id -> fold) fixes the outer folds instead of drawing them, e.g. a
    published split; the selection set is still drawn from the training patients.
    """
    check_selection_fraction(selection_fraction)
    ids = [str(p) for p in patient_ids]
    labels = None if strata is None else [str(s) for s in strata]
    if pinned is not None:
        train, test = pinned_split(ids, fold, n_folds, pinned)
    else:
        train, test = split_fold(ids, fold, n_folds, seed, strata=labels)
    stratum_of = dict(zip(ids, labels, strict=True)) if labels is not None else None
    train_strata = None if stratum_of is None else [stratum_of[p] for p in train]
    selection = draw_selection(train, selection_fraction, seed, train_strata)
    chosen = set(selection)
    return FoldSplit([p for p in train if p not in chosen], selection, test)


def check_selection_fraction(value: float) -> float:
    """``data.selection_fraction`` as a float in (0, 1), or a ConfigError naming it."""
    if not 0.0 < float(value) < 1.0:
        raise ConfigError(
            "data.selection_fraction",
            f"must be in (0, 1), got {value!r}",
            "e.g. 0.15: that fraction of the training patients chooses the best epoch",
        )
    return float(value)


def draw_selection(
    train_ids: Sequence[str],
    fraction: float,
    seed: int,
    strata: Sequence[object] | None = None,
) -> list[str]:
    """About ``fraction`` of ``train_ids`` (at least two), dealt stratum by stratum like the
    folds so the selection set sees the cohort's volume bins or outcome classes."""
    n_train = len(train_ids)
    wanted = max(MIN_SELECTION, round(fraction * n_train))
    if n_train - wanted < 1:
        raise ConfigError(
            "data.selection_fraction",
            f"a selection set of {wanted} patients (at least {MIN_SELECTION}) leaves no training "
            f"patient of the {n_train} outside the test fold",
            "use a larger cohort or fewer folds",
        )
    parts = max(2, round(n_train / wanted))
    parts_of = assign_folds(train_ids, parts, seed + SELECTION_SEED_SALT, strata)
    # The round-robin deals part 0 first, so it holds ceil(n_train / parts) >= 2 patients.
    return sorted(p for p, part in parts_of.items() if part == 0)


def pinned_split(
    ids: Sequence[str], fold: int, n_folds: int, pinned: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    """(train, test) from a given patient -> fold map; every patient must have a fold."""
    if not 0 <= fold < n_folds:
        raise ConfigError("fold", f"must be in 0..{n_folds - 1} for {n_folds} folds, got {fold}")
    missing = [p for p in ids if p not in pinned]
    if missing:
        raise ConfigError(
            "data.folds_file",
            f"no fold for {len(missing)} patient(s): {', '.join(missing[:5])}",
            "give every patient of the manifest a row (patient_id, fold)",
        )
    bad = sorted({f for p, f in pinned.items() if p in set(ids) and not 0 <= f < n_folds})
    if bad:
        raise ConfigError("data.folds_file", f"folds {bad} outside 0..{n_folds - 1}")
    train = sorted(p for p in ids if pinned[p] != fold)
    test = sorted(p for p in ids if pinned[p] == fold)
    return train, test


def read_folds_file(path: str | Path | None) -> dict[str, int] | None:
    """A CSV with ``patient_id`` and ``fold`` columns, or None when no file is given."""
    if path in (None, ""):
        return None
    import pandas as pd

    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError("data.folds_file", f"no file at {file}", "a CSV with patient_id, fold")
    table = pd.read_csv(file, dtype={"patient_id": str})
    if not {"patient_id", "fold"} <= set(table.columns):
        raise DataError(file, "needs columns patient_id and fold", "one row per patient")
    return {str(p): int(f) for p, f in zip(table["patient_id"], table["fold"], strict=True)}
