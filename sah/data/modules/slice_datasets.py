"""2D axial-slice datasets for 2D nets: balanced positive/negative training slices, whole
patients for validation (the volume is reassembled from its slices to score it in 3D)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from sah.data.preprocess.geometry import center_crop_or_pad_xy
from sah.data.preprocess.intensity import apply_window


@dataclass
class PatientVolume:
    """One patient's CT (HU) and blood label, axes (x, y, z) with z axial."""

    patient_id: str
    image_hu: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


class TrainingSlices(Dataset):
    """Axial slices of the training patients; which slice an index gets is up to the sampler.

    With ``window_jitter_hu > 0`` each slice's window ends move by up to that many HU and the
    sample's loss weight drops to ``1 - (|dlow| + |dhigh|) / (2 * jitter)``, as in the LoRA study.
    """

    def __init__(
        self,
        patients: Sequence[PatientVolume],
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
        self.index = [
            (p, z) for p, pv in enumerate(self.patients) for z in range(pv.label.shape[2])
        ]
        self.positive = np.array(
            [self.patients[p].label[:, :, z].any() for p, z in self.index], dtype=bool
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
        image = apply_window(pv.image_hu[:, :, z], low, high)
        label = pv.label[:, :, z].astype(np.float32)
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

    def __init__(
        self, patients: Sequence[PatientVolume], window: tuple[float, float], size: int
    ) -> None:
        self.patients = list(patients)
        self.window = window
        self.size = size

    def __len__(self) -> int:
        return len(self.patients)

    def __getitem__(self, i: int) -> dict[str, object]:
        pv = self.patients[i]
        image = center_crop_or_pad_xy(apply_window(pv.image_hu, *self.window), self.size, 0.0)
        label = center_crop_or_pad_xy(pv.label.astype(np.uint8), self.size, 0)
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
