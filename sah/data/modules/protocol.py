"""``TaskData``: what every data module gives the task runner, so runners read typed attributes.

A runner instantiates ``cfg.data``, calls ``setup`` (every data error surfaces there, before a
tracked run exists) and then reads only what these protocols name. A new data module for an
existing task is a class with these members and a YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from torch.utils.data import DataLoader

from sah.data.modules.case import Case


class TaskData(Protocol):
    """Any data module after ``setup``: the cohort, one fold's patients and the input rank."""

    manifest: Path
    n_folds: int
    spatial_dims: int  # 2: axial slices, 3: volumes or patches; the model must agree
    skipped: list[str]  # manifest cases left out (``on_error='skip'``), as "id: reason"

    @property
    def train_cases(self) -> list[Case]: ...

    @property
    def val_cases(self) -> list[Case]:
        """The selection set: the only patients that choose (checkpoint, threshold, sweeps)."""
        ...

    @property
    def test_cases(self) -> list[Case]:
        """The outer fold: scored once after training, never chooses."""
        ...

    @property
    def external_cases(self) -> list[Case]:
        """Patients outside every fold (e.g. other sites), scored apart; often none."""
        ...

    def setup(self, stage: str | None = None) -> None: ...


class SegmentationData(TaskData, Protocol):
    """task=segmentation: cases carry ``label``; checkpoints carry how the net sees a volume."""

    def inference_spec(self) -> dict[str, object]: ...


class OutcomeData(TaskData, Protocol):
    """task=mortality: cases carry ``y``, and a fixed hold-out set may sit outside the folds."""

    outcome: str

    @property
    def holdout_cases(self) -> list[Case]: ...

    def counts(self, split: str) -> tuple[int, int]: ...

    def train_labels(self) -> list[int]: ...

    def loader(self, split: str) -> DataLoader: ...


def patient_sets(data: TaskData, **more: list[Case]) -> dict[str, list[str]]:
    """Patient ids per set, as the run logs them: train, val, test, then ``external`` and any
    of ``more`` (e.g. ``holdout``) that hold patients."""
    sets = {"train": data.train_cases, "val": data.val_cases, "test": data.test_cases}
    extra = {"external": data.external_cases, **more}
    sets.update({name: cases for name, cases in extra.items() if cases})
    return {name: [c.patient_id for c in cases] for name, cases in sets.items()}


if TYPE_CHECKING:  # mypy holds each data module to its contract
    from sah.data.modules.patches import PatchDataModule
    from sah.data.modules.slices import SliceDataModule
    from sah.data.modules.volumes import VolumeDataModule

    _slices: type[SegmentationData] = SliceDataModule
    _patches: type[SegmentationData] = PatchDataModule
    _volumes: type[OutcomeData] = VolumeDataModule
