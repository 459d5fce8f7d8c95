"""task=mortality: focal loss, the freeze schedule, outcome splits and their errors, backbone
transfer, and one real `sah-train task=mortality` run on a tiny synthetic cohort."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from sah.data.cohorts.folds import assign_folds
from sah.data.cohorts.mortality_split import read_outcome_cohort, split_outcome_cohort
from sah.errors import ConfigError, DataError
from sah.tasks.mortality.focal_loss import balanced_class_weights, focal_loss
from sah.tasks.mortality.module import ClassificationTask

ROOT = Path(__file__).resolve().parents[2]
TINY_COHORT = {"kind": "sah", "n_patients": 10, "seed": 0, "matrix": 64, "spacing_mm": 3.6}


# -- focal loss -----------------------------------------------------------------------------


def test_focal_loss_matches_an_independent_computation() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (7, 2))
    target = np.array([0, 1, 1, 0, 0, 1, 0])
    alpha, gamma = np.array([0.7, 2.3]), 2.0
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p_true = prob[np.arange(7), target]
    expected = np.mean(-alpha[target] * (1 - p_true) ** gamma * np.log(p_true))
    got = focal_loss(
        torch.tensor(logits), torch.tensor(target), torch.tensor(alpha), gamma=gamma
    ).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_focal_loss_without_focus_or_weights_is_cross_entropy() -> None:
    logits, target = torch.randn(5, 2), torch.tensor([0, 1, 0, 0, 1])
    expected = nn.functional.cross_entropy(logits, target).item()
    assert focal_loss(logits, target, None, gamma=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_balanced_class_weights_and_a_missing_class() -> None:
    assert balanced_class_weights([0, 0, 0, 1]) == pytest.approx([4 / 6, 2.0])
    with pytest.raises(ConfigError, match="every one of 2 classes"):
        balanced_class_weights([0, 0, 0])


# -- the freeze schedule ------------------------------------------------------------------------


class TinyClassifier(nn.Module):
    """A 3D conv backbone with batch norm and a linear head, grouped like DenseNet121Classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(conv=nn.Conv3d(1, 4, 3, padding=1), norm=nn.BatchNorm3d(4), relu=nn.ReLU())
        )
        self.class_layers = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(1), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_layers(self.features(x))

    def module_groups(self) -> dict[str, list[str]]:
        return {"backbone": ["features"], "head": ["class_layers"]}


def tiny_loader(n: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 1, 6, 6, 6, generator=generator)
    labels = torch.tensor([0, 1] * (n // 2))
    images[labels == 1] += 0.5
    rows = [{"image": images[i], "label": labels[i], "patient_id": f"p{i}"} for i in range(n)]
    return DataLoader(rows, batch_size=4, shuffle=False)


class Snapshots(L.Callback):
    """State of the net and optimiser at the end of every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.requires_grad: list[dict[str, bool]] = []
        self.lrs: list[float] = []
        self.backbone_training: list[bool] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: ClassificationTask) -> None:
        self.states.append({k: v.detach().clone() for k, v in module.net.state_dict().items()})
        self.requires_grad.append({n: p.requires_grad for n, p in module.net.named_parameters()})
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.backbone_training.append(module.net.features.training)


def fit_tiny(net: nn.Module, make_trainer, epochs: int = 2, freeze_epochs: int = 1) -> Snapshots:
    torch.manual_seed(0)
    module = ClassificationTask(
        net, class_weights=[1.0, 1.0], lr=1e-2, finetune_lr=1e-3, freeze_epochs=freeze_epochs
    )
    snapshots = Snapshots()
    make_trainer(epochs, [snapshots]).fit(module, tiny_loader(), tiny_loader())
    return snapshots


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str):
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_freeze_phase_freezes_the_backbone_then_fine_tunes_everything(quiet_trainer) -> None:
    net = TinyClassifier()
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    snap = fit_tiny(net, quiet_trainer)

    # Epoch 0: no gradient into the backbone, its weights and batch-norm statistics untouched.
    assert not any(g for n, g in snap.requires_grad[0].items() if n.startswith("features."))
    assert all(g for n, g in snap.requires_grad[0].items() if n.startswith("class_layers."))
    assert changed(initial, snap.states[0], "features.") == set()
    assert changed(initial, snap.states[0], "class_layers.")
    assert snap.backbone_training[0] is False and snap.lrs[0] == pytest.approx(1e-2)
    # Epoch 1: everything trains at the fine-tuning rate.
    assert all(snap.requires_grad[1].values())
    assert changed(snap.states[0], snap.states[1], "features.") >= {
        "features.conv.weight",
        "features.norm.running_mean",
    }
    assert snap.backbone_training[1] is True and snap.lrs[1] == pytest.approx(1e-3)


def test_adapters_replace_full_fine_tuning_after_the_freeze(quiet_trainer) -> None:
    from sah.adapters import AdapterConfig, inject

    net = TinyClassifier()
    inject(net, AdapterConfig("lora_c", rank=2, target="backbone"))
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    snap = fit_tiny(net, quiet_trainer)
    after_freeze, final = snap.states
    assert changed(initial, after_freeze, "features.") == set()
    # Then only the low-rank factors move: the pre-trained convolution and norm stay as they were.
    moved = changed(after_freeze, final, "features.")
    assert "features.conv.factors.B" in moved
    assert moved <= {"features.conv.factors.A", "features.conv.factors.B"}
    assert changed(after_freeze, final, "class_layers.")


# -- outcome column and splits ----------------------------------------------------------------


def write_manifest(tmp_path: Path, outcome: list[object] | None) -> Path:
    rows = []
    for i in range(len(outcome or [0] * 6)):
        image = tmp_path / f"p{i}.nii.gz"
        image.write_bytes(b"")
        rows.append({"patient_id": f"p{i}", "image": image.name})
    table = pd.DataFrame(rows)
    if outcome is not None:
        table["death"] = outcome
    path = tmp_path / "manifest.csv"
    table.to_csv(path, index=False)
    return path


def test_manifest_without_the_outcome_column_names_it(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, None)
    with pytest.raises(ConfigError, match=r"data\.outcome.*no column 'mortality_3m'"):
        read_outcome_cohort(manifest, "mortality_3m")


def test_outcome_table_without_the_column_names_it(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, None)
    table = tmp_path / "clinical.csv"
    pd.DataFrame({"patient_id": [f"p{i}" for i in range(6)], "dci": 0}).to_csv(table, index=False)
    with pytest.raises(DataError, match=r"clinical\.csv.*lacks column\(s\) 'mortality_3m'"):
        read_outcome_cohort(manifest, "mortality_3m", table)


def test_non_binary_outcome_names_column_and_patient(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [0, 1, 2, 0, 1, 0])
    with pytest.raises(DataError, match="'death' must hold 0/1; patient 'p2'"):
        read_outcome_cohort(manifest, "death")


def test_outcome_from_the_manifest_itself(tmp_path: Path) -> None:
    cohort = read_outcome_cohort(write_manifest(tmp_path, [0, 1, 1, 0, 1, 0]), "death")
    assert cohort["y"].tolist() == [0, 1, 1, 0, 1, 0]
    assert Path(cohort["image"][0]).is_absolute()


IDS = [f"p{i:02d}" for i in range(20)]
LABELS = [1] * 6 + [0] * 14


def test_folds_selection_and_holdout_are_stratified_and_the_holdout_fixed() -> None:
    ids, labels = [f"p{i:02d}" for i in range(40)], [1] * 12 + [0] * 28
    splits = [
        split_outcome_cohort(ids, labels, "death", fold, 3, seed=1, holdout_fraction=0.2)
        for fold in range(3)
    ]
    label = dict(zip(ids, labels, strict=True))
    assert all(s.holdout == splits[0].holdout for s in splits)
    assert sorted(label[p] for p in splits[0].holdout) == [0] * 6 + [1] * 2  # 20 % of each
    tests = [set(s.test) for s in splits]
    assert set().union(*tests) == set(ids) - set(splits[0].holdout)  # the outer folds
    for s in splits:
        parts = [set(s.train), set(s.val), set(s.test), set(s.holdout)]
        assert sum(map(len, parts)) == len(ids) and len(set().union(*parts)) == len(ids)
        # The selection set comes from the training folds and holds both outcomes.
        assert {label[p] for p in s.val} == {0, 1} and {label[p] for p in s.test} == {0, 1}


def test_too_few_events_for_the_folds_names_key_and_column() -> None:
    with pytest.raises(ConfigError, match=r"data\.n_folds.*'death'.*2 with death=1"):
        split_outcome_cohort(IDS, [1, 1] + [0] * 18, "death", 0, 3)


def test_single_outcome_class_overall_names_the_column() -> None:
    with pytest.raises(DataError, match="column 'death' is 0 for all 20 patients"):
        split_outcome_cohort(IDS, [0] * 20, "death", 0, 3)


def test_a_fold_with_one_outcome_class_names_the_fold() -> None:
    labels = [1, 1] + [0] * 18
    # Unstratified folds: find a seed that puts both events into one fold.
    seed = next(
        s for s in range(200) if len({assign_folds(IDS, 2, s)[p] for p in ("p00", "p01")}) == 1
    )
    fold = 1 - assign_folds(IDS, 2, seed)["p00"]  # its test set is the other fold
    with pytest.raises(ConfigError, match=f"fold {fold}'s test set have death=0"):
        split_outcome_cohort(IDS, labels, "death", fold, 2, seed=seed, stratify=False)


# -- transfer ---------------------------------------------------------------------------------


def densenet(spatial_dims: int = 2, in_channels: int = 1):
    from sah.models.densenet import build_densenet121

    return build_densenet121(spatial_dims=spatial_dims, in_channels=in_channels)


def test_backbone_transfers_and_the_head_starts_fresh(tmp_path: Path) -> None:
    from sah.tasks.mortality.backbone_weights import load_pretrained

    source, target = densenet(), densenet()
    path = tmp_path / "ckpt.pt"
    # A Lightning-style checkpoint of this task: the network sits under "net.".
    state = {f"net.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "pytorch-lightning_version": "2"}, path)
    loaded = load_pretrained(target, path, "backbone")
    assert loaded and all(k.startswith("features.") for k in loaded)
    assert torch.equal(target.features.conv0.weight, source.features.conv0.weight)
    assert not torch.equal(target.class_layers.out.weight, source.class_layers.out.weight)


def test_three_channel_stem_is_summed_into_grey(tmp_path: Path) -> None:
    from sah.tasks.mortality.backbone_weights import load_pretrained

    source, target = densenet(in_channels=3), densenet(in_channels=1)
    torch.save(source.state_dict(), tmp_path / "rgb.pt")
    load_pretrained(target, tmp_path / "rgb.pt", "backbone")
    expected = source.features.conv0.weight.sum(1, keepdim=True)
    assert torch.allclose(target.features.conv0.weight, expected)


def test_partial_backbone_is_refused(tmp_path: Path) -> None:
    from sah.tasks.mortality.backbone_weights import load_pretrained

    state = densenet().state_dict()
    del state["features.denseblock4.denselayer16.layers.conv2.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(DataError, match=r"whole backbone.*1 missing: features\.denseblock4"):
        load_pretrained(densenet(), tmp_path / "partial.pt", "backbone")


def test_2d_segmentation_encoder_into_3d_densenet_says_why_not(tmp_path: Path) -> None:
    from sah.models.mv_unet import MVUnet
    from sah.tasks.mortality.backbone_weights import load_pretrained

    torch.save(MVUnet().state_dict(), tmp_path / "tbi_mv_unet.pt")
    with pytest.raises(
        DataError, match=r"a 2D network.*not a DenseNet-121 backbone.*init_from=null"
    ):
        load_pretrained(densenet(spatial_dims=3), tmp_path / "tbi_mv_unet.pt", "backbone")


# -- end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mortality-cache")


@pytest.fixture(scope="module")
def synthetic_manifest(cache: Path) -> Path:
    from sah.data.synthetic import SynthConfig, ensure_cohort

    config = SynthConfig(**TINY_COHORT, slice_mm=(5.0, 5.0))
    return ensure_cohort(config, cache, workers=1)


def tiny_overrides(tmp_path: Path, cache: Path) -> list[str]:
    return [
        f"paths.root_dir={tmp_path}",
        f"paths.cache_dir={cache}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_location={tmp_path}/mlartifacts",
        "data.preprocess.shape=[32,32,32]",
        "data.preprocess.spacing=[5.0,6.5,5.5]",
        "data.batch_size=2",
        "data.n_folds=2",
        "task.module.freeze_epochs=1",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "callbacks.progress=null",
    ]


@pytest.mark.slow  # generates a synthetic cohort (about 20 s on an idle 2-core machine)
def test_synthetic_data_config_joins_the_clinical_outcome(
    tmp_path: Path, cache: Path, synthetic_manifest: Path
) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from sah.cli.schema import register_schema
    from sah.cli.train import CONFIG_DIR

    register_schema()
    cohort = [f"++data.manifest.config.{k}={v}" for k, v in TINY_COHORT.items()]
    overrides = ["task=mortality", *tiny_overrides(tmp_path, cache), *cohort]
    overrides += ["++data.manifest.config.slice_mm=[5.0,5.0]", f"paths.output_dir={tmp_path}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert Path(datamodule.manifest) == synthetic_manifest
    clinical = pd.read_csv(synthetic_manifest.parent / "clinical.csv", dtype={"patient_id": str})
    outcome = dict(zip(clinical.patient_id, clinical.mortality_3m, strict=True))
    for split in ("train", "val"):
        for volume in datamodule.cases[split]:
            assert volume.y == outcome[volume.patient_id]
            assert volume.image.shape == (32, 32, 32)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 1, 32, 32, 32)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten small NIfTI heads; the five with ``death=1`` carry a 70 HU clot."""
    from outcome_heads import write_heads

    return write_heads(tmp_path_factory.mktemp("tiny-cohort"), 10, "t")


def test_sah_train_task_mortality_logs_metrics_plots_and_predictions(
    tmp_path: Path, tiny_manifest: Path
) -> None:
    from mlflow import MlflowClient

    manifest, cache = tiny_manifest, tmp_path / "cache"
    command = [
        sys.executable,
        "-m",
        "sah.cli.train",
        "task=mortality",
        "data=mortality_manifest",
        f"data.manifest={manifest}",
        "data.outcome=death",
        "data.holdout_fraction=0.2",
        "data.selection_fraction=0.4",
        "data.augment.elastic_prob=1.0",
        "task.threshold=youden",
        *tiny_overrides(tmp_path, cache),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, env={**os.environ}, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "AUC" in done.stdout

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("sah-mortality")
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    for split in ("val", "test", "holdout"):
        for name in ("auc", "accuracy", "f1", "balanced_accuracy", "sensitivity", "specificity"):
            assert 0.0 <= metrics[f"{split}/{name}"] <= 1.0
        assert f"{split}/brier" in metrics
    # 10 patients: 2 held out of every fold, 4 in the test fold, 2 of the other 4 selecting.
    assert (metrics["val/n"], metrics["test/n"], metrics["holdout/n"]) == (2.0, 4.0, 2.0)
    frozen = client.get_metric_history(run.info.run_id, "train/backbone_frozen")
    assert [m.value for m in sorted(frozen, key=lambda m: m.step)] == [1.0, 0.0]
    assert run.data.params["outcome"] == "death"
    assert run.info.status == "FINISHED"
    assert run.data.tags["task"] == "mortality"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"roc.png", "calibration.png", "per_patient_predictions.csv"} <= artifacts
    predictions = pd.read_csv(next(tmp_path.glob("outputs/*/*/per_patient_predictions.csv")))
    assert sorted(predictions["split"].unique()) == ["holdout", "test", "val"]
    assert predictions["prob"].between(0, 1).all()
