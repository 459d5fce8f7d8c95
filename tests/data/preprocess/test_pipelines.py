"""Per-study preprocessing pipelines, their geometry and intensity steps, and pos/neg patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sah.data.preprocess import (
    MortalityPreprocess,
    PosNegPatchSampler,
    SwinPreprocess,
    build_preprocess,
)
from sah.data.preprocess.geometry import (
    center_crop_or_pad,
    foreground_box,
    resample_to_spacing,
    shift_affine,
)
from sah.data.preprocess.intensity import normalize_nonzero
from sah.data.readers.ct import CTVolume, voxel_spacing
from sah.errors import ConfigError, DataError


def world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(index, dtype=float) + affine[:3, 3]


def centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return world(affine, np.argwhere(mask).mean(axis=0))


def head(
    shape: tuple[int, int, int] = (64, 56, 20),
    spacing: tuple[float, float, float] = (3.0, 3.5, 5.0),
    origin: tuple[float, float, float] = (-90.0, -100.0, -40.0),
    seed: int = 0,
) -> tuple[CTVolume, np.ndarray]:
    """A head phantom in HU (air, bone shell, brain with noise) with an off-centre blood ball."""
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    pos = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1) @ np.diag(
        spacing
    ) + np.asarray(origin)
    centre = np.asarray(origin) + (np.asarray(shape) - 1) * np.asarray(spacing) / 2
    radius = np.linalg.norm((pos - centre) / np.array([80.0, 85.0, 42.0]), axis=-1)
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[radius < 1.0] = 900.0
    image[radius < 0.9] = 35.0 + rng.normal(0, 4, size=int((radius < 0.9).sum()))
    blood = np.linalg.norm(pos - (centre + np.array([25.0, 10.0, 5.0])), axis=-1) < 16.0
    image[blood] = 70.0
    return CTVolume(image, affine, voxel_spacing(affine), Path("head.nii.gz")), blood.astype(
        np.uint8
    )


# -- geometry -------------------------------------------------------------------------------


def test_resampling_gives_expected_shape_spacing_and_keeps_a_sphere_in_place() -> None:
    ct, _ = head()
    pos = np.stack(np.indices(ct.shape), axis=-1) @ ct.affine[:3, :3].T + ct.affine[:3, 3]
    sphere = (np.linalg.norm(pos - [12.0, -8.0, 10.0], axis=-1) < 20.0).astype(np.uint8)
    new_spacing = (1.5, 1.5, 2.0)
    image, affine = resample_to_spacing(ct.array, ct.affine, new_spacing, order=1)
    label, label_affine = resample_to_spacing(sphere, ct.affine, new_spacing, order=0)
    assert image.shape == label.shape == (128, 131, 50)  # round(64 * 3 / 1.5), ...
    assert np.allclose(voxel_spacing(affine), new_spacing)
    assert np.allclose(affine, label_affine)
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    shift = np.abs(centroid_mm(label > 0, affine) - centroid_mm(sphere > 0, ct.affine))
    assert np.all(shift <= np.asarray(new_spacing) / 2)
    # Field-of-view centres coincide.
    centre_old = world(ct.affine, (np.array(ct.shape) - 1) / 2)
    centre_new = world(affine, (np.array(image.shape) - 1) / 2)
    assert np.allclose(centre_old, centre_new)


def test_swin_pipeline_keeps_blood_in_place_through_resampling_crop_and_pad() -> None:
    ct, blood = head()
    case = SwinPreprocess(spacing=(1.5, 1.5, 2.0), min_shape=(32, 32, 16))(ct, blood)
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert case.label.shape == case.image.shape
    assert np.allclose(case.spacing, (1.5, 1.5, 2.0))
    shift = np.abs(centroid_mm(case.label > 0, case.affine) - centroid_mm(blood > 0, ct.affine))
    assert np.all(shift <= np.array([1.5, 1.5, 2.0]) / 2)


def test_ras_orientation_is_restored_for_a_flipped_volume() -> None:
    ct, blood = head()
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = ct.shape[0] - 1  # voxel i -> n-1-i
    lps = CTVolume(ct.array[::-1].copy(), ct.affine @ flip, ct.spacing, ct.source)
    a = SwinPreprocess(min_shape=None)(ct, blood)
    b = SwinPreprocess(min_shape=None)(lps, blood[::-1].copy())
    assert np.allclose(a.affine, b.affine)
    assert np.array_equal(a.label, b.label)
    assert np.allclose(a.image, b.image, atol=1e-5)


def test_center_crop_or_pad_offsets_keep_world_positions() -> None:
    affine = np.diag([0.5, 0.7, 3.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    array = np.zeros((9, 4, 5), dtype=np.float32)
    array[6, 2, 3] = 1.0
    out, offset = center_crop_or_pad(array, (5, 8, None), fill=-1.0)
    assert out.shape == (5, 8, 5)
    assert (out == -1.0).sum() == 5 * 4 * 5  # two columns of padding on each side in y
    new_affine = shift_affine(affine, offset)
    (hit,) = np.argwhere(out == 1.0)
    assert np.allclose(world(new_affine, hit), world(affine, [6, 2, 3]))


def test_foreground_box_keeps_all_foreground() -> None:
    rng = np.random.default_rng(1)
    mask = np.zeros((30, 20, 10), dtype=bool)
    mask[tuple(rng.integers([5, 3, 2], [25, 15, 8], size=(40, 3)).T)] = True
    box = foreground_box(mask)
    assert mask[box].sum() == mask.sum()
    assert all(
        mask[box].any(axis=tuple(a for a in range(3) if a != ax))[[0, -1]].all() for ax in range(3)
    )  # tight: first and last plane of each axis hold foreground
    assert foreground_box(np.zeros((3, 3, 3), dtype=bool)) is None
    grown = foreground_box(mask, margin=2)
    assert all(g.start <= b.start and g.stop >= b.stop for g, b in zip(grown, box, strict=True))


def test_swin_crop_keeps_every_head_and_blood_voxel() -> None:
    ct, blood = head()
    resampled, _ = resample_to_spacing(ct.array, ct.affine, (1.5, 1.5, 2.0), order=1)
    label, _ = resample_to_spacing(blood, ct.affine, (1.5, 1.5, 2.0), order=0)
    case = SwinPreprocess(min_shape=None)(ct, blood)
    assert (case.image != 0).sum() == (resampled >= -500).sum()
    assert case.label.sum() == label.sum()
    assert all(n < m for n, m in zip(case.shape, resampled.shape, strict=True))  # air cropped


# -- intensity ------------------------------------------------------------------------------


def test_nonzero_normalisation_matches_monai_and_leaves_zeros() -> None:
    from monai.transforms import NormalizeIntensity

    rng = np.random.default_rng(2)
    image = rng.normal(40.0, 12.0, size=(20, 18, 6)).astype(np.float32)
    image[rng.random(image.shape) < 0.4] = 0.0
    out = normalize_nonzero(image)
    nonzero = image != 0
    assert np.all(out[~nonzero] == 0)
    assert abs(out[nonzero].mean()) < 1e-5 and abs(out[nonzero].std() - 1) < 1e-5
    monai = NormalizeIntensity(nonzero=True, channel_wise=True)(torch.from_numpy(image)[None])
    assert np.allclose(out, np.asarray(monai[0]), atol=1e-5)


def test_swin_normalises_over_the_head_with_air_as_zero() -> None:
    ct, blood = head()
    case = SwinPreprocess(min_shape=(96, 96, 64))(ct, blood)
    inside = case.image != 0
    assert abs(case.image[inside].mean()) < 1e-4 and abs(case.image[inside].std() - 1) < 1e-4
    assert inside.mean() < 0.9  # the padding and the air around the head are background


def test_mortality_shape_clipping_and_standardising() -> None:
    ct, blood = head()
    pipeline = MortalityPreprocess(shape=(48, 40, 24), spacing=(3.0, 4.0, 5.0))
    case = pipeline(ct, blood)
    assert case.image.shape == case.label.shape == (48, 40, 24)
    assert np.allclose(case.spacing, (3.0, 4.0, 5.0))
    assert case.image.min() == 0.0 and case.image.max() == 1.0
    # Clipping: everything at or below 0 HU (air) and at or above 100 HU (bone) is saturated.
    no_resample = MortalityPreprocess(shape=ct.shape, spacing=None)(ct)
    assert np.all(no_resample.image[ct.array <= 0] == 0.0)
    assert np.all(no_resample.image[ct.array >= 100] == 1.0)
    assert np.allclose(no_resample.image[blood > 0], 0.7)
    zscore = MortalityPreprocess(shape=ct.shape, spacing=None, standardize="zscore")(ct)
    assert abs(zscore.image.mean()) < 1e-4 and abs(zscore.image.std() - 1) < 1e-4


def test_mortality_defaults_follow_aucmedi_axis_order() -> None:
    pipeline = MortalityPreprocess()
    assert pipeline.shape == (128, 128, 160)  # AUCMEDI (z, y, x) = (160, 128, 128)
    assert pipeline.spacing == (1.18, 1.58, 1.10)  # AUCMEDI (z, y, x) = (1.10, 1.58, 1.18)
    ct, _ = head(shape=(40, 40, 12))
    assert pipeline(ct).image.shape == (128, 128, 160)


def test_label_of_another_shape_is_a_data_error() -> None:
    ct, blood = head()
    with pytest.raises(DataError, match="label shape"):
        SwinPreprocess()(ct, blood[:-1])


# -- configs and fingerprints ---------------------------------------------------------------


def test_fingerprint_is_stable_and_changes_with_the_config() -> None:
    a = SwinPreprocess(spacing=(1.5, 1.5, 2))
    assert a.fingerprint() == SwinPreprocess(spacing=[1.5, 1.5, 2.0]).fingerprint()
    assert a.fingerprint() == build_preprocess("swin", spacing=[1.5, 1.5, 2.0]).fingerprint()
    assert a.fingerprint() != SwinPreprocess(spacing=(1.0, 1.0, 2.0)).fingerprint()
    assert a.fingerprint() != MortalityPreprocess().fingerprint()
    assert len({p.fingerprint() for p in (SwinPreprocess(), SwinPreprocess(clip_hu=(0, 100)))}) == 2


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: SwinPreprocess(spacing=(1.5, 0, 2.0)), "preprocess.spacing"),
        (lambda: SwinPreprocess(min_shape=(128, 128)), "preprocess.min_shape"),
        (lambda: MortalityPreprocess(clip_hu=(100, 0)), "preprocess.clip_hu"),
        (lambda: MortalityPreprocess(standardize="robust"), "preprocess.standardize"),
        (lambda: build_preprocess("unet"), "preprocess.name"),
        (lambda: build_preprocess("swin", spacingg=(1, 1, 1)), "preprocess.spacingg"),
    ],
)
def test_bad_config_names_its_key(make, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make()


# -- sampling -------------------------------------------------------------------------------


def test_pos_neg_patches_have_the_size_and_positive_fraction() -> None:
    ct, blood = head()
    case = SwinPreprocess(min_shape=None)(ct, blood)
    sampler = PosNegPatchSampler(case.image, case.label, (32, 32, 16), pos_fraction=0.3)
    rng = np.random.default_rng(5)
    patches = [sampler(rng) for _ in range(600)]
    assert all(p.image.shape == p.label.shape == (32, 32, 16) for p in patches)
    centre_in_label = np.array([p.label[p.centre] > 0 for p in patches])
    assert np.array_equal(centre_in_label, [p.positive for p in patches])
    assert abs(centre_in_label.mean() - 0.3) < 0.06
    negatives = [p for p in patches if not p.positive]
    assert all(p.image[p.centre] != 0 for p in negatives)  # background drawn inside the head
    for p in patches[:20]:  # the patch is the case's array at ``start``
        box = tuple(slice(s, s + n) for s, n in zip(p.start, (32, 32, 16), strict=True))
        assert np.array_equal(p.image, case.image[box])


def test_pos_neg_patches_pad_volumes_smaller_than_the_patch() -> None:
    image = np.ones((10, 12, 4), dtype=np.float32)
    label = np.zeros((10, 12, 4), dtype=np.uint8)
    label[4:6, 5:7, 1:3] = 1
    sampler = PosNegPatchSampler(image, label, (16, 16, 8), pos_fraction=1.0)
    patch = sampler(np.random.default_rng(0))
    assert patch.image.shape == (16, 16, 8) and patch.positive
    assert patch.label.sum() == label.sum() and patch.image.sum() == image.sum()
