"""The 3D patch datamodule: preprocessing through the cache, patient-level splits, patch draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sah.data.modules.case import Case
from sah.data.modules.patches import PatchDataModule, RandomPatches
from sah.errors import ConfigError

# A coarse grid keeps each case a few ten thousand voxels.
COARSE = {"spacing": [5.0, 5.0, 6.0], "clip_hu": [0.0, 140.0]}
PATCH = (16, 16, 16)


def make_datamodule(manifest: Path, cache_root: Path, **overrides) -> PatchDataModule:
    settings = {
        "manifest": manifest,
        "n_folds": 3,
        "preprocess": COARSE,
        "patch_size": PATCH,
        "batch_size": 3,
        "patches_per_epoch": 6,
        "cache_dir": cache_root,
        **overrides,
    }
    dm = PatchDataModule(**settings)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def datamodule(tiny_manifest: Path, cache_root: Path) -> PatchDataModule:
    return make_datamodule(tiny_manifest, cache_root)


def test_batches_have_patch_and_volume_shapes(datamodule: PatchDataModule) -> None:
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (3, 1, *PATCH)
    assert batch["label"].shape == (3, 1, *PATCH)
    assert batch["image"].dtype == torch.float32
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0}
    volume = next(iter(datamodule.val_dataloader()))
    case = datamodule.val_cases[0]
    assert volume["image"].shape == (1, 1, *case.image.shape)
    assert volume["label"].shape == case.label.shape
    assert volume["patient_id"] == case.patient_id
    # Preprocessed to the configured grid, and at least one patch in size.
    assert case.spacing == pytest.approx((5.0, 5.0, 6.0))
    assert all(n >= p for n, p in zip(case.image.shape, PATCH, strict=True))


def test_folds_split_patients_and_cover_the_cohort(datamodule: PatchDataModule) -> None:
    train = {c.patient_id for c in datamodule.train_cases}
    val = {c.patient_id for c in datamodule.val_cases}  # the selection set
    test = {c.patient_id for c in datamodule.test_cases}  # the outer fold
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == 6 and (len(train), len(val), len(test)) == (2, 2, 2)
    # The validation loop (checkpoint choice) sees the selection set, never the test fold.
    seen = {batch["patient_id"] for batch in datamodule.val_dataloader()}
    assert seen == val
    assert datamodule.inference_spec()["kind"] == "volume"


def test_preprocessed_cases_come_from_the_cache(
    datamodule: PatchDataModule, tiny_manifest: Path, cache_root: Path
) -> None:
    entries = list((cache_root / "preprocess").glob("swin-*/*/*.safetensors"))
    assert len(entries) >= 6
    again = make_datamodule(tiny_manifest, cache_root)
    first, second = datamodule.val_cases[0], again.val_cases[0]
    np.testing.assert_array_equal(first.image, second.image)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_positive_fraction_of_patch_centres(datamodule: PatchDataModule, fraction: float) -> None:
    patches = RandomPatches(datamodule.train_cases, PATCH, 400, pos_fraction=fraction, seed=1)
    items = [patches[i] for i in range(len(patches))]
    centred_on_blood = np.mean([bool(item["positive"]) for item in items])
    assert centred_on_blood == pytest.approx(fraction, abs=0.08)
    if fraction == 1.0:
        assert all(item["label"].any() for item in items)


def test_flips_mirror_image_and_label_together() -> None:
    image = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8) + 1
    label = np.zeros((8, 8, 8), dtype=np.uint8)
    label[:2] = 1
    case = Case("p", image, label, (1.0, 1.0, 1.0))
    flipped = RandomPatches([case], (8, 8, 8), 4, flip_prob=1.0, flip_axes=(0,))[0]
    np.testing.assert_array_equal(flipped["image"][0].numpy(), image[::-1])
    np.testing.assert_array_equal(flipped["label"][0].numpy(), label[::-1])


def test_selection_and_external_sites_stay_out_of_training(
    tiny_manifest: Path, cache_root: Path
) -> None:
    dm = make_datamodule(tiny_manifest, cache_root)
    by_site: dict[str, int] = {}
    for case in dm.train_cases + dm.val_cases + dm.test_cases:
        by_site[case.site or ""] = by_site.get(case.site or "", 0) + 1
    external_site = min((s for s in by_site if s), key=lambda s: by_site[s])
    if len(dm.train_cases + dm.val_cases + dm.test_cases) - by_site[external_site] < 5:
        pytest.skip("the tiny cohort's smallest site leaves too few internal patients")
    dm = make_datamodule(tiny_manifest, cache_root, n_folds=2, external_sites=[external_site])
    assert dm.external_cases and all(c.site == external_site for c in dm.external_cases)
    internal = {c.patient_id for c in dm.train_cases + dm.val_cases + dm.test_cases}
    assert not internal & {c.patient_id for c in dm.external_cases}


def test_selection_set_is_carved_from_the_training_folds(
    tiny_manifest: Path, cache_root: Path
) -> None:
    outer = make_datamodule(tiny_manifest, cache_root, n_folds=2)
    dm = make_datamodule(tiny_manifest, cache_root, n_folds=2, selection_fraction=0.5)
    train = {c.patient_id for c in dm.train_cases}
    picked = {c.patient_id for c in dm.val_cases}
    held_out = {c.patient_id for c in dm.test_cases}
    assert len(picked) >= 2 and not picked & train and not picked & held_out
    assert len(train | picked | held_out) == 6
    # The selection fraction moves patients between train and selection, never the outer fold.
    assert held_out == {c.patient_id for c in outer.test_cases}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"patch_size": [16, 16]}, "data.patch_size"),
        ({"selection_fraction": 1.0}, "data.selection_fraction"),
        ({"preprocess": {"spacing": [1.0, -1.0, 1.0]}}, "preprocess.spacing"),
        ({"preprocess": {"no_such_field": 1}}, "preprocess.no_such_field"),
    ],
)
def test_bad_settings_name_their_key(tiny_manifest: Path, overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        PatchDataModule(tiny_manifest, **overrides)
