"""Whole-volume classification data: a manifest, a binary outcome column, one fold.

Each CT goes through the mortality study's deterministic preprocessing once
(``MortalityPreprocess``, cached on disk by ``PreprocessCache``) and stays in memory; training
volumes are then augmented per draw. Splits come from ``sah.data.cohorts.mortality_split``:
the outer fold (test), a selection set carved from the training patients (val), and an optional
fixed hold-out set, all stratified by outcome.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from sah.data.cohorts.folds import check_selection_fraction, read_folds_file
from sah.data.cohorts.mortality_split import OutcomeSplit, read_outcome_cohort, split_outcome_cohort
from sah.data.modules.case import Case
from sah.data.preprocess.augment_3d import VolumeAugmentation
from sah.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "holdout")


class VolumeDataset(Dataset):
    """Yields ``{"image": (1, x, y, z), "label": class index, "patient_id": str}``."""

    def __init__(self, volumes: list[Case], transform: Any = None) -> None:
        self.volumes = volumes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        volume = self.volumes[index]
        image = torch.from_numpy(volume.image)[None]
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image.float().contiguous(),
            "label": torch.tensor(volume.outcome, dtype=torch.long),
            "patient_id": volume.patient_id,
        }


class VolumeDataModule(L.LightningDataModule):
    """One fold of a manifest cohort with a binary outcome, for 3D classification.

    ``outcomes`` is an optional CSV holding ``outcome`` per ``patient_id`` when the manifest
    does not; ``preprocess`` are ``MortalityPreprocess`` fields (shape, spacing, clip_hu,
    standardize); ``augment`` are ``VolumeAugmentation`` fields (empty: none).
    After ``setup``: ``cases`` per set (train, val, test, holdout) and ``split`` (their ids);
    the contract is ``sah.data.modules.protocol.OutcomeData``.
    """

    spatial_dims = 3

    def __init__(
        self,
        manifest: str | Path,
        outcome: str = "mortality_3m",
        outcomes: str | Path | None = None,
        fold: int = 0,
        n_folds: int = 3,
        split_seed: int = 0,
        holdout_fraction: float = 0.0,
        stratify: bool = True,
        selection_fraction: float = 0.25,
        folds_file: str | None = None,
        preprocess: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        cache_root: str | Path | None = None,
    ) -> None:
        super().__init__()
        from sah.data.preprocess import build_preprocess

        if batch_size < 1:
            raise ConfigError("data.batch_size", f"must be at least 1, got {batch_size}")
        self.manifest = Path(manifest)
        self.outcome = outcome
        self.outcomes = None if outcomes in (None, "") else Path(outcomes)
        self.fold, self.n_folds, self.split_seed = fold, n_folds, split_seed
        self.holdout_fraction, self.stratify = float(holdout_fraction), bool(stratify)
        self.selection_fraction = check_selection_fraction(selection_fraction)
        self.folds_file = folds_file
        self.pipeline = build_preprocess("mortality", **(preprocess or {}))
        self.augmentation = VolumeAugmentation.from_config(augment)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.cache_root = cache_root
        self.split: OutcomeSplit | None = None
        self.cases: dict[str, list[Case]] = {name: [] for name in SPLITS}
        self.skipped: list[str] = []  # a mortality cohort is read whole: nothing is skipped
        self.external_cases: list[Case] = []

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        from sah.data.cache import cache_dir
        from sah.data.preprocess.cache import PreprocessCache

        cohort = read_outcome_cohort(self.manifest, self.outcome, self.outcomes)
        self.split = split_outcome_cohort(
            cohort["patient_id"].tolist(),
            cohort["y"].tolist(),
            self.outcome,
            self.fold,
            self.n_folds,
            self.split_seed,
            self.holdout_fraction,
            self.stratify,
            self.selection_fraction,
            read_folds_file(self.folds_file),
        )
        total = sum(len(getattr(self.split, name)) for name in SPLITS)
        cache = PreprocessCache(cache_dir(self.cache_root) / "preprocess", total=total)
        rows = cohort.set_index("patient_id")
        for name in SPLITS:
            for pid in getattr(self.split, name):
                case = cache.get_or_compute(rows.at[pid, "image"], None, self.pipeline)
                self.cases[name].append(
                    Case(pid, case.image, spacing=case.spacing, y=int(rows.at[pid, "y"]))
                )
        counts = {name: self.counts(name) for name in SPLITS}
        log.info(
            "%s events: %s; preprocessing cache %d hits, %d computed",
            self.outcome,
            ", ".join(f"{name} {events}/{n}" for name, (n, events) in counts.items()),
            cache.stats.hits,
            cache.stats.misses + cache.stats.rebuilt,
        )

    @property
    def train_cases(self) -> list[Case]:
        return self.cases["train"]

    @property
    def val_cases(self) -> list[Case]:
        return self.cases["val"]

    @property
    def test_cases(self) -> list[Case]:
        return self.cases["test"]

    @property
    def holdout_cases(self) -> list[Case]:
        return self.cases["holdout"]

    def counts(self, split: str) -> tuple[int, int]:
        """(patients, events) of a split."""
        cases = self.cases[split]
        return len(cases), sum(c.outcome for c in cases)

    def train_labels(self) -> list[int]:
        return [c.outcome for c in self.cases["train"]]

    def train_dataloader(self) -> DataLoader:
        train = self.cases["train"]
        transform = None
        if self.augmentation is not None:
            transform = self.augmentation.build(seed=self.split_seed)
        return DataLoader(
            VolumeDataset(train, transform),
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            worker_init_fn=_seed_monai_worker if self.num_workers else None,
            # A last batch of one volume would reach batch norm at 1x1x1 with a single value.
            drop_last=len(train) >= self.batch_size,
            generator=torch.Generator().manual_seed(self.split_seed),
        )

    def val_dataloader(self) -> DataLoader:
        return self._plain_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._plain_loader("test")

    def loader(self, split: str) -> DataLoader:
        """The patients of ``split`` (train, val, test, holdout) in order, not augmented."""
        return self._plain_loader(split)

    def _plain_loader(self, split: str) -> DataLoader:
        return DataLoader(
            VolumeDataset(self.cases[split]),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )


def _seed_monai_worker(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream (MONAI's own worker seeding)."""
    from monai.data.utils import worker_init_fn

    worker_init_fn(worker_id)
