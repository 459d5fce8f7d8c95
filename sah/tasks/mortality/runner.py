"""task=mortality for the run driver: a 3D classifier on whole CT volumes, one fold.

The selection set (``val``, carved from the training patients, stratified by outcome) drives
early stopping, the learning-rate plateaus, the checkpoint and a Youden threshold; the outer fold
(``test``) and the optional fixed hold-out set (``holdout``) are scored once with those choices.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from sah.data.modules.protocol import OutcomeData, patient_sets
from sah.errors import ConfigError
from sah.tasks.driver import Evaluation
from sah.tasks.training.network_runner import (
    NetworkRunner,
    adapter_config,
    adapter_params,
    adapter_tags,
    best_checkpoint,
    cohort_name,
    init_checkpoint,
)

log = logging.getLogger("sah.train")

SCORED_SETS = ("val", "test", "holdout")


class MortalityRunner(NetworkRunner):
    datamodule: OutcomeData

    def prepare(self) -> None:
        from sah.tasks.training.network_setup import prepare_network

        cfg = self.cfg
        refuse_several_devices(cfg.trainer)
        self.datamodule = volume_datamodule(cfg.data, self.choices.get("data", "data"))
        self.datamodule.setup("fit")
        self.net = classifier_network(cfg.model, self.choices.get("model", "model"))
        load_initial_weights(cfg, self.net)
        self.adapted = prepare_network(self.net, None, adapter_config(cfg))
        setting = cfg.task.get("threshold", 0.5)
        self.threshold_setting = setting
        self.weights = class_weights(cfg.task.get("class_weights"), self.datamodule.train_labels())
        self.module = instantiate(cfg.task.module)(
            net=self.net,
            class_weights=self.weights,
            threshold=0.5 if isinstance(setting, str) else float(setting),
        )
        self.trainer: Any = None

    def splits(self) -> dict[str, list[str]]:
        return patient_sets(self.datamodule, holdout=self.datamodule.holdout_cases)

    def tags(self) -> dict[str, str]:
        return {
            **adapter_tags(self.cfg, self.choices),
            "task": "mortality",
            "outcome": str(self.datamodule.outcome),
            "adapted_modules": str(len(self.adapted)),
        }

    def params(self) -> dict[str, Any]:
        cfg, dm = self.cfg, self.datamodule
        module = cfg.task.module
        params: dict[str, Any] = {
            **adapter_params(cfg, self.choices),
            "outcome": dm.outcome,
            "lr": module.lr,
            "finetune_lr": module.get("finetune_lr"),
            "freeze_epochs": module.get("freeze_epochs"),
            "focal_gamma": module.get("focal_gamma"),
            "epochs": cfg.trainer.get("max_epochs"),
            "batch_size": cfg.data.get("batch_size"),
            "input_shape": list(cfg.data.preprocess.shape) if cfg.data.get("preprocess") else None,
            "threshold_rule": str(self.threshold_setting),
            "cohort": cohort_name(cfg),
            "holdout_fraction": cfg.data.get("holdout_fraction"),
        }
        for split in ("train", "val", "test"):
            n, events = dm.counts(split)
            params[f"n_{split}"] = f"{n} ({events} events)"
        if self.weights is not None:
            params["class_weights"] = ", ".join(f"{w:.3f}" for w in self.weights)
        return params

    def fit(self, run_id: str | None, checkpoint: str | None) -> None:
        from sah.tasks.training.pruning import trial_callbacks

        cfg = self.cfg
        experiment = cfg.tracking.experiment or cfg.task.experiment_name
        logger = instantiate(
            cfg.logger, experiment_name=experiment, run_name=self.run_name(), run_id=run_id
        )
        callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
        callbacks += trial_callbacks(
            cfg.optuna.storage, cfg.optuna.study_name, cfg.optuna.trial_number, cfg.optimized_metric
        )
        self.trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
        self.fit_and_select(self.trainer, callbacks, checkpoint)

    def evaluate(self) -> Evaluation:
        from sah.tasks.mortality.module import predict_probabilities
        from sah.tasks.mortality.report import Predictions, choose_threshold

        dm = self.datamodule
        self.module.net.to(evaluation_device(self.cfg.trainer))  # Lightning returns it on CPU
        sets = {
            name: Predictions(*predict_probabilities(self.module.net, dm.loader(name)))
            for name in SCORED_SETS
            if dm.counts(name)[0]
        }
        threshold = choose_threshold(self.threshold_setting, sets["val"])  # selection set only
        metrics = summarise(sets, threshold)
        artifacts: list[tuple[Path, str | None]] = [
            (p, None)
            for p in write_reports(self.cfg, sets, threshold, self.out_dir, self.run_name())
        ]
        best = best_checkpoint(self.trainer)
        if best is not None:
            artifacts.append((Path(best), "checkpoints"))
        lines = summary_lines(metrics, dm, self.cfg)
        return Evaluation(metrics, artifacts, lines, self.trainer.global_step)


def volume_datamodule(node: DictConfig, choice: str) -> OutcomeData:
    """The data group as a ``VolumeDataModule``; slice or tabular data is refused in one line."""
    from sah.data.modules.volumes import VolumeDataModule

    if node is None or node.get("_target_") != f"{VolumeDataModule.__module__}.VolumeDataModule":
        raise ConfigError(
            "data",
            f"{choice!r} is not whole-volume outcome data; task=mortality takes "
            "data=synthetic_mortality or data=mortality_manifest",
        )
    return instantiate(node)


def classifier_network(node: DictConfig, choice: str) -> torch.nn.Module:
    """The model group as a network with ``backbone`` and ``head`` module groups."""
    net: object = instantiate(node) if node is not None and node.get("_target_") else None
    groups = net.module_groups() if hasattr(net, "module_groups") else {}
    if not isinstance(net, torch.nn.Module) or not {"backbone", "head"} <= set(groups):
        raise ConfigError(
            "model",
            f"{choice!r} is not a classifier with backbone and head groups",
            "task=mortality takes model=densenet121",
        )
    return net


def evaluation_device(trainer: DictConfig) -> torch.device:
    wants_gpu = str(trainer.get("accelerator", "cpu")) in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def refuse_several_devices(trainer: DictConfig) -> None:
    """The epoch metrics (AUC over the whole selection set) assume one process sees it all."""
    devices = trainer.get("devices", 1)
    if str(trainer.get("strategy", "")) == "ddp" or devices not in (1, "1", "auto"):
        raise ConfigError(
            "trainer",
            f"task=mortality trains on one device (got strategy={trainer.get('strategy')}, "
            f"devices={devices})",
            "use trainer=gpu or trainer=cpu; run folds in parallel with -m fold=0,1,2 and "
            "hydra/launcher=gpus",
        )


def load_initial_weights(cfg: DictConfig, net: torch.nn.Module) -> None:
    """``init_from`` into the network as ``task.transfer`` says; warn when freezing a random
    backbone, which only trains the head on random features."""
    from sah.tasks.mortality.backbone_weights import load_pretrained

    path = init_checkpoint(cfg)
    transfer = cfg.task.get("transfer") or {}
    if path is not None:
        load_pretrained(net, path, str(transfer.get("load", "backbone")), transfer.get("prefix"))
    elif int(cfg.task.module.freeze_epochs) > 0:
        log.warning(
            "no init_from: the first %d epochs train the head on a frozen, randomly initialised "
            "backbone (task.module.freeze_epochs=0 trains everything from the start)",
            cfg.task.module.freeze_epochs,
        )


def class_weights(setting: str | None, train_labels: list[int]) -> list[float] | None:
    from sah.tasks.mortality.focal_loss import balanced_class_weights

    if setting in (None, "none", "null"):
        return None
    if setting != "balanced":
        raise ConfigError("task.class_weights", f"balanced or null, got {setting!r}")
    return balanced_class_weights(train_labels)


def summarise(sets: dict, threshold: float) -> dict[str, float]:
    """``<set>/<metric>`` for every set with both outcomes, plus counts and the threshold (chosen
    on the selection set, hence ``val/threshold``)."""
    from sah.tasks.mortality.module import classification_metrics

    summary: dict[str, float] = {"val/threshold": threshold}
    for split, preds in sets.items():
        summary[f"{split}/n"] = float(len(preds.y))
        summary[f"{split}/n_events"] = float(preds.y.sum())
        if preds.has_both_classes:
            for name, value in classification_metrics(preds.y, preds.prob, threshold).items():
                summary[f"{split}/{name}"] = value
    return summary


def write_reports(
    cfg: DictConfig, sets: dict, threshold: float, out_dir: Path, title: str
) -> list[Path]:
    from sah.tasks.mortality.report import (
        save_calibration_figure,
        save_roc_figure,
        write_predictions,
    )

    return [
        write_predictions(sets, threshold, int(cfg.fold), out_dir / "per_patient_predictions.csv"),
        save_roc_figure(sets, threshold, out_dir / "roc.png", title),
        save_calibration_figure(sets, out_dir / "calibration.png", title),
    ]


def summary_lines(summary: dict[str, float], datamodule: OutcomeData, cfg: DictConfig) -> list[str]:
    where = {
        "test": f"outer fold {cfg.fold} of {datamodule.n_folds}",
        "val": "selection set, chose epoch and threshold",
        "holdout": "fixed hold-out set",
    }
    lines = []
    for split in ("test", "val", "holdout"):
        if f"{split}/auc" not in summary:
            continue
        n, events = int(summary[f"{split}/n"]), int(summary[f"{split}/n_events"])
        lines.append(
            f"[bold]{split}[/bold] ({where[split]}, {events}/{n} {datamodule.outcome}): "
            f"AUC [bold green]{summary[f'{split}/auc']:.3f}[/bold green]  "
            f"accuracy {summary[f'{split}/accuracy']:.3f}  F1 {summary[f'{split}/f1']:.3f}  "
            f"balanced accuracy {summary[f'{split}/balanced_accuracy']:.3f}  "
            f"sensitivity {summary[f'{split}/sensitivity']:.3f}  "
            f"specificity {summary[f'{split}/specificity']:.3f}  "
            f"Brier {summary[f'{split}/brier']:.3f}  (threshold {summary['val/threshold']:.2f})"
        )
    return lines
