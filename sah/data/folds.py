"""Patient-level K-fold splits that depend only on the patient ids, the strata and the seed.

Slices of one patient never land in two folds: splitting happens on patient ids, before any
slice is drawn. Stratification deals each stratum's patients round-robin over the folds, so
every fold sees every hemorrhage-volume bin (segmentation) or outcome class (classification).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sah.errors import ConfigError


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
