"""The one case type and the per-set patient ids every runner logs (sah.data.modules)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from sah.data.modules.case import Case
from sah.data.modules.protocol import patient_sets


def test_blood_volume_is_labelled_voxels_times_voxel_volume() -> None:
    label = np.zeros((4, 4, 4), dtype=np.uint8)
    label[:2, :2, :2] = 1  # 8 voxels of 2 x 2 x 2.5 mm = 80 mm3
    case = Case("p", np.zeros((4, 4, 4), np.float32), label, (2.0, 2.0, 2.5))
    assert case.blood_volume_ml == pytest.approx(0.08)
    assert case.mask is label


def test_a_missing_label_or_outcome_is_named() -> None:
    case = Case("p7", np.zeros((2, 2, 2), np.float32), y=1)
    assert case.outcome == 1
    with pytest.raises(ValueError, match="p7 has no label"):
        _ = case.blood_volume_ml
    with pytest.raises(ValueError, match="p8 has no outcome"):
        _ = Case("p8", case.image).outcome


@dataclass
class FakeData:
    train_cases: list[Case]
    val_cases: list[Case]
    test_cases: list[Case]
    external_cases: list[Case] = field(default_factory=list)


def cases(*ids: str) -> list[Case]:
    return [Case(i, np.zeros((1, 1, 1), np.float32)) for i in ids]


def test_patient_sets_list_empty_extras_not_at_all() -> None:
    data = FakeData(cases("a", "b"), cases("c"), cases("d"))
    sets = patient_sets(data, holdout=[])  # type: ignore[arg-type]
    assert sets == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    data.external_cases = cases("e")
    sets = patient_sets(data, holdout=cases("f"))  # type: ignore[arg-type]
    assert list(sets) == ["train", "val", "test", "external", "holdout"]
    assert sets["external"] == ["e"] and sets["holdout"] == ["f"]
