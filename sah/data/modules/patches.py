"""LightningDataModule for 3D nets: random patches for training, whole volumes for validation.

Each case goes through the Swin UNETR study's deterministic preprocessing once
(``SwinPreprocess``: RAS, resampling, normalisation over the head, crop to the head, padding to
the patch size), stored by ``PreprocessCache`` under ``<cache dir>/preprocess`` and then held in
memory. Training draws patches centred on blood with probability ``pos_fraction``, else on the
head (MONAI ``RandCropByPosNegLabeld``), mirrored at random; validation and evaluation use the
whole preprocessed volumes, so every metric is computed in that grid.

Splits are by patient: ``n_folds`` folds stratified by hemorrhage-volume bin as for 2D nets,
the fold ``fold`` held out as the test set; ``selection_fraction`` of the training patients
form the selection set that picks the best checkpoint, so the test patients never influence
training. The study's 70/10/20 split is ``n_folds=5`` (20 % test) with
``selection_fraction=0.125`` (10 % of the cohort). Patients of ``external_sites`` (manifest
column ``site``) are left out of all folds: an external cohort.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sah.data.cohorts.folds import (
    check_selection_fraction,
    read_folds_file,
    site_split,
    split_with_selection,
)
from sah.data.modules.case import Case, FoldCases, Spacing, load_labelled_cases
from sah.data.preprocess.pipelines import Preprocess, build_preprocess
from sah.data.preprocess.sampling import PosNegPatchSampler
from sah.errors import ConfigError
from sah.metrics.aggregate import volume_bin

log = logging.getLogger(__name__)


def load_volume_cases(
    manifest: str | Path,
    pipeline: Preprocess,
    cache_root: str | Path | None = None,
    on_error: str = "raise",
) -> tuple[list[Case], list[str]]:
    """Every labelled case of a manifest, preprocessed (through the cache); with
    ``on_error='skip'`` bad cases are listed instead of stopping the run."""
    from sah.data.preprocess.cache import PreprocessCache

    cache = PreprocessCache(None if cache_root is None else Path(cache_root) / "preprocess")

    def load(image: str, label: str) -> tuple[np.ndarray, np.ndarray, Spacing]:
        case = cache.get_or_compute(image, label, pipeline)
        return case.image, cast(np.ndarray, case.label), case.spacing  # a label path: labelled

    def start(n_cases: int) -> None:
        cache.total = n_cases  # the progress bar's total

    cases, skipped = load_labelled_cases(manifest, on_error, load, start)
    log.info("preprocessed cases: %s", cache.stats)
    return cases, skipped


class RandomPatches(Dataset):
    """``patches_per_epoch`` random patches, spread evenly over the training cases.

    Item ``i`` comes from case ``i % n_cases``; where in it, and which axes of ``flip_axes``
    are mirrored (each with ``flip_prob``), is drawn anew at every access.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        patch_size: Sequence[int],
        patches_per_epoch: int,
        pos_fraction: float = 0.5,
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] = (0,),
        seed: int = 0,
    ) -> None:
        if not cases:
            raise ConfigError("data.fold", "no training patient left in this split")
        self.samplers = [
            PosNegPatchSampler(c.image, c.mask, patch_size, pos_fraction) for c in cases
        ]
        self.patches_per_epoch = int(patches_per_epoch)
        self.flip_prob = float(flip_prob)
        self.flip_axes = tuple(int(a) for a in flip_axes)
        self.seed = seed
        self._draws = 0

    def __len__(self) -> int:
        return self.patches_per_epoch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self._draws += 1  # distinct randomness for repeated draws of the same index
        rng = np.random.default_rng([self.seed, i, self._draws])
        patch = self.samplers[i % len(self.samplers)](rng)
        image, label = patch.image, patch.label
        flipped = [a for a in self.flip_axes if rng.random() < self.flip_prob]
        if flipped:
            # numpy's stubs take a tuple of axes; np.flip normalises any sequence of them
            image, label = np.flip(image, flipped), np.flip(label, flipped)  # type: ignore[call-overload]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
            "label": torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None],
            "positive": torch.tensor(patch.positive),  # centred on blood (pos_fraction's draw)
        }


class WholeVolumes(Dataset):
    """Whole preprocessed cases: ``image`` (1, x, y, z), ``label`` (x, y, z) uint8."""

    def __init__(self, cases: Sequence[Case]) -> None:
        self.cases = list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict[str, object]:
        case = self.cases[i]
        return {
            "patient_id": case.patient_id,
            "image": torch.from_numpy(np.ascontiguousarray(case.image))[None],
            "label": torch.from_numpy(np.ascontiguousarray(case.mask)),
            "spacing": torch.tensor(case.spacing, dtype=torch.float64),
        }


def collate_volume(batch: list[dict[str, object]]) -> dict[str, object]:
    """Volumes differ in shape, so a validation 'batch' is one case with a batch axis added."""
    if len(batch) != 1:
        raise ValueError("volume loaders take batch_size=1")
    item = dict(batch[0])
    item["image"] = item["image"][None]  # type: ignore[index]
    return item


class PatchDataModule(FoldCases):
    """Patients of one fold for a 3D net: random patches to train on, whole volumes to score.

    After ``setup``: ``train_cases``; ``val_cases`` (the selection set, validated every epoch
    to pick the best checkpoint); ``test_cases`` (the outer fold, scored once after training);
    ``external_cases``; ``split`` (the ids); ``skipped``. The contract is
    ``sah.data.modules.protocol.SegmentationData``. ``preprocess`` holds ``SwinPreprocess``
    fields; ``min_shape`` defaults to ``patch_size``.
    """

    spatial_dims = 3

    def __init__(
        self,
        manifest: str | Path,
        fold: int = 0,
        n_folds: int = 3,
        split_seed: int = 0,
        preprocess: Mapping[str, Any] | None = None,
        patch_size: Sequence[int] = (128, 128, 64),
        batch_size: int = 2,
        patches_per_epoch: int = 64,
        pos_fraction: float = 0.5,
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] = (0,),
        selection_fraction: float = 0.15,
        folds_file: str | None = None,
        external_sites: Sequence[str] = (),
        num_workers: int = 0,
        on_error: str = "raise",
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.manifest = Path(manifest)
        self.fold, self.n_folds, self.split_seed = fold, n_folds, split_seed
        self.patch_size = _patch_size(patch_size)
        settings = {"min_shape": self.patch_size, **dict(preprocess or {})}
        self.pipeline = build_preprocess("swin", **settings)
        self.batch_size = batch_size
        self.patches_per_epoch = patches_per_epoch
        self.pos_fraction = pos_fraction
        self.flip_prob = flip_prob
        self.flip_axes = tuple(flip_axes)
        self.selection_fraction = check_selection_fraction(selection_fraction)
        self.folds_file = folds_file
        self.external_sites = [str(s) for s in external_sites]
        self.num_workers = num_workers
        self.on_error = on_error
        self.cache_dir = cache_dir

    def setup(self, stage: str | None = None) -> None:
        if self.train_cases:
            return
        from sah.data.cache import cache_dir

        cases, self.skipped = load_volume_cases(
            self.manifest, self.pipeline, cache_dir(self.cache_dir), self.on_error
        )
        by_id = {c.patient_id: c for c in cases}
        internal = list(by_id)
        if self.external_sites:
            sites = {c.patient_id: c.site or "" for c in cases}
            internal, external = site_split(sites, self.external_sites)
            self.external_cases = [by_id[i] for i in external]
        self.split = split_with_selection(
            internal,
            self.fold,
            self.n_folds,
            self.split_seed,
            self.selection_fraction,
            strata=[volume_bin(by_id[i].blood_volume_ml, open_top=False) for i in internal],
            pinned=read_folds_file(self.folds_file),
        )
        self.train_cases = [by_id[i] for i in self.split.train]
        self.val_cases = [by_id[i] for i in self.split.selection]
        self.test_cases = [by_id[i] for i in self.split.test]

    def inference_spec(self) -> dict[str, object]:
        """How a trained net sees a volume: stored in checkpoints for sah-predict."""
        params = {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.pipeline.params().items()
        }
        return {
            "kind": "volume",
            "preprocess": {"name": self.pipeline.name, **params},
            "patch_size": list(self.patch_size),
        }

    def train_dataloader(self) -> DataLoader:
        dataset = RandomPatches(
            self.train_cases,
            self.patch_size,
            self.patches_per_epoch,
            self.pos_fraction,
            self.flip_prob,
            self.flip_axes,
            seed=self.split_seed,
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=len(dataset) >= self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            WholeVolumes(self.val_cases),
            batch_size=1,
            collate_fn=collate_volume,
            num_workers=self.num_workers,
        )


def _patch_size(value: Sequence[int]) -> tuple[int, int, int]:
    try:
        size = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ConfigError("data.patch_size", f"must be 3 positive integers, got {value!r}")
    return size  # type: ignore[return-value]
