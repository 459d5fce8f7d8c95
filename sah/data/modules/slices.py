"""2D nets on a manifest cohort: the LightningDataModule and its axial-slice datasets.

Training slices are drawn balanced between positive and negative; the selection set (``val``)
and the outer fold (``test``) are whole patients, whose volume is reassembled from its slices to
score it in 3D. Folds are by patient, stratified by hemorrhage-volume bin.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from sah.data.cohorts.folds import (
    check_selection_fraction,
    read_folds_file,
    split_with_selection,
)
from sah.data.modules.case import Case, FoldCases, Spacing, load_labelled_cases
from sah.data.preprocess.geometry import center_crop_or_pad_xy
from sah.data.preprocess.intensity import apply_window
from sah.metrics.aggregate import volume_bin

log = logging.getLogger(__name__)


class TrainingSlices(Dataset):
    """Axial slices of the training patients; which slice an index gets is up to the sampler.

    With ``window_jitter_hu > 0`` each slice's window ends move by up to that many HU and the
    sample's loss weight drops to ``1 - (|dlow| + |dhigh|) / (2 * jitter)``, as in the LoRA study.
    """

    def __init__(
        self,
        patients: Sequence[Case],
        window: tuple[float, float],
        size: int,
        flip_prob: float = 0.5,
        window_jitter_hu: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.patients = list(patients)
        self.window = window
        self.size = size
        self.flip_prob = flip_prob
        self.jitter = window_jitter_hu
        self.seed = seed
        self.index = [(p, z) for p, pv in enumerate(self.patients) for z in range(pv.mask.shape[2])]
        self.positive = np.array(
            [self.patients[p].mask[:, :, z].any() for p, z in self.index], dtype=bool
        )
        self._draws = 0

    def __len__(self) -> int:
        return len(self.index)

    def sampling_weights(self, positive_fraction: float) -> torch.Tensor:
        """Per-slice weights so that a weighted sampler draws positives at ``positive_fraction``."""
        n_pos = int(self.positive.sum())
        n_neg = len(self.positive) - n_pos
        if n_pos == 0 or n_neg == 0:
            return torch.ones(len(self.positive), dtype=torch.double)
        w = np.where(self.positive, positive_fraction / n_pos, (1 - positive_fraction) / n_neg)
        return torch.as_tensor(w, dtype=torch.double)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p, z = self.index[i]
        pv = self.patients[p]
        rng = np.random.default_rng([self.seed, i, self._next_draw()])
        low, high = self.window
        weight = 1.0
        if self.jitter > 0:
            dlow, dhigh = rng.uniform(-self.jitter, self.jitter, size=2)
            low, high = low + dlow, high + dhigh
            weight = 1.0 - (abs(dlow) + abs(dhigh)) / (2 * self.jitter)
        image = apply_window(pv.image[:, :, z], low, high)
        label = pv.mask[:, :, z].astype(np.float32)
        image = center_crop_or_pad_xy(image, self.size, 0.0)
        label = center_crop_or_pad_xy(label, self.size, 0.0)
        if rng.random() < self.flip_prob:
            # Axis 0 is x (left-right in RAS): a horizontal flip of the axial slice.
            image, label = image[::-1], label[::-1]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image))[None],
            "label": torch.from_numpy(np.ascontiguousarray(label))[None],
            "weight": torch.tensor(weight, dtype=torch.float32),
        }

    def _next_draw(self) -> int:
        # Distinct randomness for repeated draws of the same slice within a worker.
        self._draws += 1
        return self._draws


class PatientSlices(Dataset):
    """Whole patients, each as a stack of windowed slices (z, 1, size, size) with its label."""

    def __init__(self, patients: Sequence[Case], window: tuple[float, float], size: int) -> None:
        self.patients = list(patients)
        self.window = window
        self.size = size

    def __len__(self) -> int:
        return len(self.patients)

    def __getitem__(self, i: int) -> dict[str, object]:
        pv = self.patients[i]
        image = center_crop_or_pad_xy(apply_window(pv.image, *self.window), self.size, 0.0)
        label = center_crop_or_pad_xy(pv.mask.astype(np.uint8), self.size, 0)
        return {
            "patient_id": pv.patient_id,
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[:, None],
            "label": torch.from_numpy(np.ascontiguousarray(label.transpose(2, 0, 1))),
            "spacing": torch.tensor(pv.spacing, dtype=torch.float64),
        }


def collate_patient(batch: list[dict[str, object]]) -> dict[str, object]:
    """Validation loaders use batch size 1: a 'batch' is one patient's slice stack."""
    if len(batch) != 1:
        raise ValueError("patient loaders take batch_size=1")
    return batch[0]


def load_patients(manifest: str | Path, on_error: str = "raise") -> tuple[list[Case], list[str]]:
    """Every labelled case of a manifest in HU, in its own grid; with ``on_error='skip'`` bad
    cases are listed instead of stopping the run."""
    from sah.data.readers.ct import load_ct, load_label

    def load(image: str, label: str) -> tuple[np.ndarray, np.ndarray, Spacing]:
        ct = load_ct(image)
        spacing = cast("Spacing", tuple(float(s) for s in ct.spacing))
        return ct.array, load_label(label, like=ct), spacing

    return load_labelled_cases(manifest, on_error, load)


class SliceDataModule(FoldCases):
    """Patients of one fold: training slices drawn balanced; the selection set (``val``, carved
    from the training patients) and the outer fold (``test``) as whole patients.

    After ``setup``: ``train_cases``, ``val_cases`` (validated every epoch: they choose the
    checkpoint), ``test_cases`` (scored once after training), ``split`` (their ids); no
    ``external_cases``. The contract is ``sah.data.modules.protocol.SegmentationData``.
    """

    spatial_dims = 2

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

    def setup(self, stage: str | None = None) -> None:
        if self.train_cases:
            return
        patients, self.skipped = load_patients(self.manifest, self.on_error)
        by_id = {p.patient_id: p for p in patients}
        volumes = [p.blood_volume_ml for p in by_id.values()]
        self.split = split_with_selection(
            list(by_id),
            self.fold,
            self.n_folds,
            self.split_seed,
            self.selection_fraction,
            strata=[volume_bin(v, open_top=False) for v in volumes],
            pinned=read_folds_file(self.folds_file),
        )
        self.train_cases = [by_id[i] for i in self.split.train]
        self.val_cases = [by_id[i] for i in self.split.selection]
        self.test_cases = [by_id[i] for i in self.split.test]

    def inference_spec(self) -> dict[str, object]:
        """How a trained net sees a volume: stored in checkpoints for sah-predict."""
        spec: dict[str, object] = {
            "kind": "slices",
            "window": list(self.window),
            "slice_size": self.slice_size,
        }
        if self.train_cases:  # the pixel size the net learnt blood at (median in-plane)
            pixels = [float(np.mean(p.spacing[:2])) for p in self.train_cases]
            spec["pixel_mm"] = round(float(np.median(pixels)), 4)
        return spec

    def train_dataloader(self) -> DataLoader:
        dataset = TrainingSlices(
            self.train_cases,
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
            PatientSlices(self.val_cases, self.window, self.slice_size),
            batch_size=1,
            collate_fn=collate_patient,
            num_workers=self.num_workers,
        )
