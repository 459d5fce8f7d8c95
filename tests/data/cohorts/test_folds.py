"""Patient-level folds: every patient in exactly one fold, deterministic, stratified."""

from __future__ import annotations

import pytest

from sah.data.cohorts.folds import assign_folds, site_split, split_fold, split_with_selection
from sah.errors import ConfigError

IDS = [f"p{i:02d}" for i in range(30)]
BINS = ["0-25", "25-50", "50-100", "100-225"] * 7 + ["0-25", "25-50"]


def test_folds_cover_all_patients_once() -> None:
    splits = [split_fold(IDS, fold, 3, seed=0, strata=BINS) for fold in range(3)]
    val_sets = [set(val) for _, val in splits]
    assert set().union(*val_sets) == set(IDS)
    assert sum(len(v) for v in val_sets) == len(IDS)
    for train, val in splits:
        assert not set(train) & set(val)
        assert set(train) | set(val) == set(IDS)


def test_folds_depend_only_on_ids_strata_and_seed() -> None:
    a = assign_folds(IDS, 3, seed=7, strata=BINS)
    shuffled = list(zip(IDS, BINS, strict=True))[::-1]
    b = assign_folds([p for p, _ in shuffled], 3, seed=7, strata=[s for _, s in shuffled])
    assert a == b
    assert assign_folds(IDS, 3, seed=8, strata=BINS) != a


def test_every_fold_sees_every_volume_bin() -> None:
    folds = assign_folds(IDS, 3, seed=0, strata=BINS)
    for fold in range(3):
        bins = {s for p, s in zip(IDS, BINS, strict=True) if folds[p] == fold}
        assert bins == set(BINS)
    sizes = [list(folds.values()).count(f) for f in range(3)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("ids", "fold", "n_folds", "key"),
    [
        (IDS, 3, 3, "fold"),
        (IDS, 0, 1, "data.n_folds"),
        (IDS[:2], 0, 3, "data.n_folds"),
        (["a", "a", "b"], 0, 2, "data.manifest"),
    ],
)
def test_bad_fold_settings_name_the_key(ids, fold, n_folds, key) -> None:
    with pytest.raises(ConfigError, match=key):
        split_fold(ids, fold, n_folds)


def test_site_split_separates_external_sites() -> None:
    internal, external = site_split({"a": "s1", "b": "s2", "c": "s1"}, ["s2"])
    assert (internal, external) == (["a", "c"], ["b"])
    with pytest.raises(ConfigError, match="external_sites"):
        site_split({"a": "s1"}, ["s9"])


def test_the_selection_set_comes_from_the_training_folds_only() -> None:
    for fold in range(3):
        split = split_with_selection(IDS, fold, 3, seed=0, selection_fraction=0.15, strata=BINS)
        _, test = split_fold(IDS, fold, 3, seed=0, strata=BINS)
        assert split.test == test  # the outer fold is the same with or without selection
        parts = [set(split.train), set(split.selection), set(split.test)]
        assert sum(map(len, parts)) == len(IDS) and set().union(*parts) == set(IDS)
        assert len(split.selection) == 3  # 15 % of the 20 training patients


def test_the_selection_set_is_stratified_and_repeatable() -> None:
    ids = [f"p{i:02d}" for i in range(60)]
    bins = [("0-25", "25-50", "50-100")[i % 3] for i in range(60)]
    a = split_with_selection(ids, 1, 3, seed=4, selection_fraction=0.3, strata=bins)
    back_ids, back_bins = ids[::-1], bins[::-1]
    b = split_with_selection(back_ids, 1, 3, seed=4, selection_fraction=0.3, strata=back_bins)
    assert a == b  # depends on ids, strata and seed only, not the manifest's order
    stratum = dict(zip(ids, bins, strict=True))
    assert {stratum[p] for p in a.selection} == set(bins)


def test_pinned_folds_fix_the_test_set() -> None:
    pinned = {p: i % 2 for i, p in enumerate(IDS)}
    split = split_with_selection(IDS, 1, 2, seed=0, selection_fraction=0.2, pinned=pinned)
    assert split.test == sorted(p for p, f in pinned.items() if f == 1)
    with pytest.raises(ConfigError, match=r"data\.folds_file.*no fold for 1 patient"):
        split_with_selection(IDS, 0, 2, 0, 0.2, pinned={p: 0 for p in IDS[1:]})


@pytest.mark.parametrize(("fraction", "n"), [(0.0, 30), (1.0, 30), (0.15, 4)])
def test_a_selection_set_that_cannot_be_drawn_names_the_key(fraction: float, n: int) -> None:
    ids = [f"p{i}" for i in range(n)]
    with pytest.raises(ConfigError, match=r"data\.selection_fraction"):
        split_with_selection(ids, 0, 3, seed=0, selection_fraction=fraction)
