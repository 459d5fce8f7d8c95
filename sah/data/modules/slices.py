"""LightningDataModule for 2D slice training on a manifest cohort with patient-level folds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, WeightedRandomSampler

from sah.data.cohorts.folds import (
    FoldSplit,
    check_selection_fraction,
    read_folds_file,
    split_with_selection,
)
from sah.data.modules.slice_datasets import (
    PatientSlices,
    PatientVolume,
    TrainingSlices,
    collate_patient,
)
from sah.errors import ConfigError, DataError, SahError
from sah.metrics.aggregate import volume_bin

log = logging.getLogger(__name__)


def load_patients(
    manifest: str | Path, on_error: str = "raise"
) -> tuple[list[PatientVolume], list[str]]:
    """Read every labelled case of a manifest; with ``on_error='skip'`` list bad cases instead."""
    from sah.data.cohorts.manifest import read_manifest
    from sah.data.readers.ct import load_ct, load_label

    if on_error not in ("raise", "skip"):
        raise ConfigError("data.on_error", f"must be 'raise' or 'skip', got {on_error!r}")
    # With skip, missing files are found per case below instead of failing the whole manifest.
    table = read_manifest(manifest, check_files=on_error == "raise")
    if "label" not in table.columns:
        raise ConfigError(
            "data.manifest",
            f"{manifest} has no 'label' column; segmentation training needs a label per patient",
        )
    patients: list[PatientVolume] = []
    skipped: list[str] = []
    for row in table.itertuples(index=False):
        try:
            if row.label is None:
                raise DataError(manifest, f"patient {row.patient_id} has no label", "add one")
            ct = load_ct(row.image)
            label = load_label(row.label, like=ct)
        except SahError as err:
            if on_error == "raise":
                raise
            log.warning("skipping patient %s: %s", row.patient_id, err)
            skipped.append(f"{row.patient_id}: {err}")
            continue
        patients.append(
            PatientVolume(
                str(row.patient_id),
                ct.array,
                (label > 0).astype(np.uint8),
                cast("tuple[float, float, float]", tuple(float(s) for s in ct.spacing)),
            )
        )
    if not patients:
        raise ConfigError("data.manifest", f"no usable patient in {manifest}")
    return patients, skipped


class SliceDataModule(L.LightningDataModule):
    """Patients of one fold: training slices drawn balanced; the selection set (``val``, carved
    from the training patients) and the outer fold (``test``) as whole patients.

    After ``setup``: ``train_patients``, ``val_patients`` (validated every epoch: they choose
    the checkpoint), ``test_patients`` (scored once after training), ``split`` (their ids).
    """

    def __init__(
        self,
        manifest: str | Path,
        fold: int = 0,
        n_folds: int = 3,
        split_seed: int = 0,
        window: tuple[float, float] = (0.0, 140.0),
        slice_size: int = 128,
        batch_size: int = 16,
        slices_per_epoch: int = 640,
        positive_fraction: float = 0.5,
        window_jitter_hu: float = 0.0,
        flip_prob: float = 0.5,
        num_workers: int = 0,
        on_error: str = "raise",
        selection_fraction: float = 0.15,
        folds_file: str | None = None,
        root: str | None = None,
        labels: str | None = None,
    ) -> None:
        """``root`` and ``labels`` name where a public layout's manifest came from (`data=bhsd
        data.root=...`); they are recorded with the run's config, the manifest is what is read."""
        super().__init__()
        self.manifest = Path(manifest)
        self.fold, self.n_folds, self.split_seed = fold, n_folds, split_seed
        self.window = (float(window[0]), float(window[1]))
        self.slice_size = slice_size
        self.batch_size = batch_size
        self.slices_per_epoch = slices_per_epoch
        self.positive_fraction = positive_fraction
        self.window_jitter_hu = window_jitter_hu
        self.flip_prob = flip_prob
        self.num_workers = num_workers
        self.on_error = on_error
        self.selection_fraction = check_selection_fraction(selection_fraction)
        self.folds_file = folds_file
        self.skipped: list[str] = []
        self.split: FoldSplit | None = None
        self.train_patients: list[PatientVolume] = []
        self.val_patients: list[PatientVolume] = []
        self.test_patients: list[PatientVolume] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_patients:
            return
        patients, self.skipped = load_patients(self.manifest, self.on_error)
        by_id = {p.patient_id: p for p in patients}
        volumes = [
            float(p.label.sum()) * float(np.prod(p.spacing)) / 1000.0 for p in by_id.values()
        ]
        self.split = split_with_selection(
            list(by_id),
            self.fold,
            self.n_folds,
            self.split_seed,
            self.selection_fraction,
            strata=[volume_bin(v, open_top=False) for v in volumes],
            pinned=read_folds_file(self.folds_file),
        )
        self.train_patients = [by_id[i] for i in self.split.train]
        self.val_patients = [by_id[i] for i in self.split.selection]
        self.test_patients = [by_id[i] for i in self.split.test]

    def inference_spec(self) -> dict[str, object]:
        """How a trained net sees a volume: stored in checkpoints for sah-predict."""
        spec: dict[str, object] = {
            "kind": "slices",
            "window": list(self.window),
            "slice_size": self.slice_size,
        }
        if self.train_patients:  # the pixel size the net learnt blood at (median in-plane)
            pixels = [float(np.mean(p.spacing[:2])) for p in self.train_patients]
            spec["pixel_mm"] = round(float(np.median(pixels)), 4)
        return spec

    def train_dataloader(self) -> DataLoader:
        dataset = TrainingSlices(
            self.train_patients,
            self.window,
            self.slice_size,
            flip_prob=self.flip_prob,
            window_jitter_hu=self.window_jitter_hu,
            seed=self.split_seed,
        )
        sampler = WeightedRandomSampler(
            # torch annotates Sequence[float] but takes a tensor (torch.as_tensor)
            dataset.sampling_weights(self.positive_fraction),  # type: ignore[arg-type]
            num_samples=self.slices_per_epoch,
            replacement=True,
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            PatientSlices(self.val_patients, self.window, self.slice_size),
            batch_size=1,
            collate_fn=collate_patient,
            num_workers=self.num_workers,
        )
