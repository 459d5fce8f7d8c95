"""``Case``: one patient as every data module holds it, whatever the task; and reading the
labelled cases of a manifest, which the segmentation modules share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np

from sah.data.cohorts.folds import FoldSplit
from sah.errors import ConfigError, DataError, SahError

log = logging.getLogger(__name__)

Spacing = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Case:
    """One patient's volume, axes (x, y, z) with z axial, ``spacing`` in mm per axis.

    ``image`` is HU for 2D nets (windowed per draw) and the preprocessed grid for 3D nets;
    ``label`` is the uint8 blood mask (segmentation), ``y`` the binary outcome (mortality);
    ``site`` comes from the manifest's ``site`` column (None if absent).
    """

    patient_id: str
    image: np.ndarray
    label: np.ndarray | None = None
    spacing: Spacing = (1.0, 1.0, 1.0)
    site: str | None = None
    y: int | None = None

    @property
    def mask(self) -> np.ndarray:
        """The blood label; a case without one is a programming error here, not a user's."""
        if self.label is None:
            raise ValueError(f"case {self.patient_id} has no label")
        return self.label

    @property
    def blood_volume_ml(self) -> float:
        """Labelled blood in mL: the folds' stratum (``sah.metrics.volume_bin``)."""
        return float(self.mask.astype(bool).sum()) * float(np.prod(self.spacing)) / 1000.0

    @property
    def outcome(self) -> int:
        """The binary outcome ``y``; as ``mask``, missing only through a programming error."""
        if self.y is None:
            raise ValueError(f"case {self.patient_id} has no outcome")
        return self.y


def load_labelled_cases(
    manifest: str | Path,
    on_error: str,
    load: Callable[[str, str], tuple[np.ndarray, np.ndarray, Spacing]],
    start: Callable[[int], None] | None = None,
) -> tuple[list[Case], list[str]]:
    """Every labelled case of a manifest, ``load(image, label)`` giving its arrays and spacing;
    with ``on_error='skip'`` bad cases are listed ("id: reason") instead of stopping the run.
    ``start(n)`` hears the number of cases before the first is loaded (a progress total)."""
    from sah.data.cohorts.manifest import read_manifest

    if on_error not in ("raise", "skip"):
        raise ConfigError("data.on_error", f"must be 'raise' or 'skip', got {on_error!r}")
    # With skip, missing files are found per case below instead of failing the whole manifest.
    table = read_manifest(manifest, check_files=on_error == "raise")
    if "label" not in table.columns:
        raise ConfigError(
            "data.manifest",
            f"{manifest} has no 'label' column; segmentation training needs a label per patient",
        )
    if start is not None:
        start(len(table))
    has_site = "site" in table.columns
    cases: list[Case] = []
    skipped: list[str] = []
    for row in table.itertuples(index=False):
        try:
            if row.label is None:
                raise DataError(manifest, f"patient {row.patient_id} has no label", "add one")
            image, label, spacing = load(row.image, row.label)
        except SahError as err:
            if on_error == "raise":
                raise
            log.warning("skipping patient %s: %s", row.patient_id, err)
            skipped.append(f"{row.patient_id}: {err}")
            continue
        site = row.site if has_site else None
        cases.append(Case(str(row.patient_id), image, (label > 0).astype(np.uint8), spacing, site))
    if not cases:
        raise ConfigError("data.manifest", f"no usable patient in {manifest}")
    return cases, skipped


class FoldCases(L.LightningDataModule):
    """A segmentation data module's sets of one fold, empty until ``setup`` fills them from
    the manifest and the fold split (``TaskData`` in ``protocol.py`` says what each holds)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[str] = []
        self.split: FoldSplit | None = None
        self.train_cases: list[Case] = []
        self.val_cases: list[Case] = []
        self.test_cases: list[Case] = []
        self.external_cases: list[Case] = []
