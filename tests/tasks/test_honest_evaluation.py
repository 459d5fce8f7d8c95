"""The test patients of a run never choose anything.

Each task is trained twice with the same seed and the same (pinned) outer folds; the second
time the test fold's labels are altered (masks emptied, outcomes flipped). Everything the
selection set decides must come out identical: every ``val/*`` value, the epoch the checkpoint
comes from, the selected weights, and the value handed to a sweeper. The ``test/*`` values must
change, since they are computed on the altered labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from sah.cli.schema import register_schema
from sah.cli.train import CONFIG_DIR
from sah.tasks.driver import run

N_FOLDS = 3


@dataclass
class Outcome:
    returned: float
    val: dict[str, float]
    val_history: list[tuple[int, float]]
    test: dict[str, float]
    epoch: int
    weights: dict[str, torch.Tensor]


def train(workdir: Path, overrides: list[str], choices: dict[str, str]) -> Outcome:
    """One in-process run through the driver; what it chose and what it reported."""
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.root_dir={workdir}",
                f"paths.output_dir={workdir}/out",
                f"tracking.uri=sqlite:///{workdir}/mlflow.db",
                "callbacks.progress=null",
                *overrides,
            ],
        )
    returned = run(cfg, choices)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    metrics = found.data.metrics
    history = client.get_metric_history(found.info.run_id, cfg.optimized_metric)
    checkpoint = torch.load(workdir / "out" / "checkpoints" / "best.ckpt", weights_only=True)
    return Outcome(
        float(returned),  # type: ignore[arg-type]
        {k: v for k, v in metrics.items() if k.startswith("val/")},
        sorted((m.step, m.value) for m in history),
        {k: v for k, v in metrics.items() if k.startswith("test/")},
        int(checkpoint["epoch"]),
        checkpoint["state_dict"],
    )


def train_twice(
    tmp_path: Path, common: list[str], choices: dict[str, str], manifests: tuple[Path, Path]
) -> list[Outcome]:
    """The same run on the original and on the altered cohort, each in its own folder."""
    runs = []
    for name, manifest in zip("ab", manifests, strict=True):
        workdir = tmp_path / name
        workdir.mkdir()
        runs.append(train(workdir, [*common, f"data.manifest={manifest}"], choices))
    return runs


def assert_isolated(original: Outcome, altered: Outcome, changed_metric: str) -> None:
    assert altered.returned == original.returned
    assert altered.val == original.val
    assert altered.val_history == original.val_history
    assert altered.epoch == original.epoch
    assert altered.weights.keys() == original.weights.keys()
    for name, tensor in original.weights.items():
        assert torch.equal(altered.weights[name], tensor), name
    assert altered.test[changed_metric] != original.test[changed_metric]


def pin_folds(patient_ids: list[str], path: Path, folds: dict[str, int] | None = None):
    """A fixed outer split (by default patient i -> fold i mod 3), the same for both runs."""
    folds = folds or {pid: i % N_FOLDS for i, pid in enumerate(sorted(patient_ids))}
    pd.DataFrame({"patient_id": list(folds), "fold": list(folds.values())}).to_csv(
        path, index=False
    )
    return folds


def copy_with_test_masks_emptied(manifest: Path, folds: dict[str, int], out: Path) -> Path:
    """The cohort again, with the label of every fold-0 (test) patient replaced by zeros."""
    table = pd.read_csv(manifest, dtype={"patient_id": str})
    out.mkdir()
    for column in ("image", "label"):
        table[column] = [str((manifest.parent / p).resolve()) for p in table[column]]
    for i, row in table.iterrows():
        if folds[row["patient_id"]] == 0:
            label = nib.load(row["label"])
            empty = np.zeros(label.shape, dtype=np.uint8)
            target = out / f"{row['patient_id']}_empty.nii.gz"
            nib.save(nib.Nifti1Image(empty, label.affine), target)
            table.loc[i, "label"] = str(target)
    table.to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv"


def segmentation_case(tmp_path: Path, tiny_manifest: Path) -> tuple[Path, Path, Path]:
    ids = pd.read_csv(tiny_manifest, dtype={"patient_id": str})["patient_id"].tolist()
    folds_file = tmp_path / "folds.csv"
    folds = pin_folds(ids, folds_file)
    original = tmp_path / "original"
    original.mkdir()
    table = pd.read_csv(tiny_manifest)
    for column in ("image", "label"):
        table[column] = [str((tiny_manifest.parent / p).resolve()) for p in table[column]]
    table.to_csv(original / "manifest.csv", index=False)
    altered = copy_with_test_masks_emptied(tiny_manifest, folds, tmp_path / "altered")
    return original / "manifest.csv", altered, folds_file


def test_2d_segmentation_test_masks_choose_nothing(tmp_path: Path, tiny_manifest: Path) -> None:
    original, altered, folds_file = segmentation_case(tmp_path, tiny_manifest)
    common = [
        "data=manifest",
        f"data.folds_file={folds_file}",
        "data.slice_size=64",
        "data.batch_size=4",
        "data.slices_per_epoch=8",
        "trainer.max_epochs=3",
    ]
    choices = {"model": "unet2d", "data": "manifest", "adapter": "full"}
    runs = train_twice(tmp_path, common, choices, (original, altered))
    assert len(runs[0].val_history) == 4  # the selection set scored each epoch, then at the end
    assert_isolated(*runs, "test/volume_true_ml")
    assert runs[1].test["test/volume_true_ml"] == 0.0


def test_3d_segmentation_test_masks_choose_nothing(tmp_path: Path, tiny_manifest: Path) -> None:
    original, altered, folds_file = segmentation_case(tmp_path, tiny_manifest)
    common = [
        "model=unet3d",
        "model.channels=[4,8]",
        "model.strides=[2]",
        "data=manifest_3d",
        f"data.folds_file={folds_file}",
        f"data.cache_dir={tmp_path}/cache",
        "data.preprocess.spacing=[6.0,6.0,6.0]",
        "data.patch_size=[16,16,16]",
        "data.patches_per_epoch=2",
        "trainer.max_epochs=2",
    ]
    choices = {"model": "unet3d", "data": "manifest_3d", "adapter": "full"}
    runs = train_twice(tmp_path, common, choices, (original, altered))
    assert_isolated(*runs, "test/volume_true_ml")


@pytest.fixture(scope="module")
def outcome_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve small NIfTI heads (m0..m11); the six with ``death=1`` carry a 70 HU clot."""
    from outcome_heads import write_heads

    return write_heads(tmp_path_factory.mktemp("outcome-cohort"), 12, "m")


def test_mortality_test_outcomes_choose_nothing(tmp_path: Path, outcome_manifest: Path) -> None:
    table = pd.read_csv(outcome_manifest, dtype={"patient_id": str})
    # Deaths are the odd ids. The test fold holds 3 deaths and 1 survivor, so flipping its
    # outcomes changes its event count; the training folds keep both outcomes.
    groups = [["m1", "m3", "m5", "m0"], ["m7", "m9", "m2", "m4"]]
    pinned = {pid: f for f, ids in enumerate(groups) for pid in ids}
    pinned.update({pid: 2 for pid in table["patient_id"] if pid not in pinned})
    folds = pin_folds(table["patient_id"].tolist(), tmp_path / "folds.csv", pinned)
    flipped = table.copy()
    flipped["image"] = [str(outcome_manifest.parent / p) for p in flipped["image"]]
    in_test = flipped["patient_id"].map(folds) == 0
    flipped.loc[in_test, "death"] = 1 - flipped.loc[in_test, "death"]
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    common = [
        "task=mortality",
        "data=mortality_manifest",
        "data.outcome=death",
        f"data.folds_file={tmp_path / 'folds.csv'}",
        "data.selection_fraction=0.4",
        "data.preprocess.shape=[32,32,32]",
        "data.preprocess.spacing=[5.0,5.0,4.0]",
        "data.batch_size=2",
        f"paths.cache_dir={tmp_path}/cache",
        "task.module.freeze_epochs=1",
        "task.threshold=youden",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "callbacks.early_stopping=null",
    ]
    choices = {"model": "densenet121", "data": "mortality_manifest", "adapter": "full"}
    runs = train_twice(tmp_path, common, choices, (outcome_manifest, tmp_path / "flipped.csv"))
    assert runs[0].val["val/threshold"] == runs[1].val["val/threshold"]
    assert_isolated(*runs, "test/n_events")
    assert (runs[0].test["test/n_events"], runs[1].test["test/n_events"]) == (3.0, 1.0)
    # The same predictions scored against flipped outcomes: the test AUC becomes 1 - AUC.
    assert runs[1].test["test/auc"] == pytest.approx(1.0 - runs[0].test["test/auc"])
