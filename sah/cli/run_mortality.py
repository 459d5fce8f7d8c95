"""task=mortality: build data, network and task from the config, train one fold, evaluate the
best checkpoint on the validation fold (and the held-out test set), log it all to MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sah.cli.run_task import (
    adapter_settings,
    best_checkpoint,
    init_checkpoint,
    metric_entities,
    objective_values,
    restore_best,
    resume_point,
    run_name,
    run_tags,
)
from sah.errors import ConfigError
from sah.tracking import flatten, get_client, log_artifact, log_params, resolve_experiment

log = logging.getLogger("sah.train")


def run_mortality(cfg: DictConfig, choices: dict[str, str]) -> float | list[float]:
    from sah.tasks.classification import predict_probabilities
    from sah.tasks.classification_report import Predictions, choose_threshold
    from sah.tasks.pruning import raise_if_pruned, trial_callbacks
    from sah.tasks.transfer import prepare_network

    refuse_several_devices(cfg.trainer)
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule = volume_datamodule(cfg.data, choices.get("data", "data"))
    datamodule.setup("fit")

    net = classifier_network(cfg.model, choices.get("model", "model"))
    load_initial_weights(cfg, net)
    adapted = prepare_network(net, None, adapter_settings(cfg))
    threshold_setting = cfg.task.get("threshold", 0.5)
    weights = class_weights(cfg.task.get("class_weights"), datamodule.train_labels())
    module = instantiate(cfg.task.module)(
        net=net,
        class_weights=weights,
        threshold=0.5 if isinstance(threshold_setting, str) else float(threshold_setting),
    )
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)

    experiment = cfg.tracking.experiment or cfg.task.experiment_name
    client = get_client(cfg.tracking.uri)
    resume = resume_point(cfg, client, experiment, choices)
    tags = {**run_tags(cfg, choices), "task": "mortality", "outcome": str(datamodule.outcome)}
    logger = instantiate(
        cfg.logger,
        experiment_name=experiment,
        run_name=run_name(cfg, choices),
        tags=tags,
        run_id=resume.run_id if resume else cfg.tracking.run_id,
    )
    resolve_experiment(client, experiment, cfg.tracking.artifact_location)
    run_id = logger.run_id
    log_params(client, run_id, flatten(OmegaConf.to_container(cfg, resolve=True)))  # type: ignore[arg-type]
    log_params(client, run_id, {"trainable_params": trainable, **split_params(datamodule)})
    if weights is not None:
        log_params(client, run_id, {"class_weights": ", ".join(f"{w:.3f}" for w in weights)})
    client.set_tag(run_id, "adapted_modules", str(len(adapted)))
    client.set_tag(run_id, "sah.output_dir", str(out_dir))

    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks += trial_callbacks(
        cfg.optuna.storage, cfg.optuna.study_name, cfg.optuna.trial_number, cfg.optimized_metric
    )
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    if trainable > 0 and cfg.trainer.max_epochs > 0:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume.checkpoint if resume else None)
        raise_if_pruned(callbacks)
        restore_best(trainer, module)
    else:
        log.info(
            "nothing to train (trainable parameters: %d): evaluating the net as it is", trainable
        )

    module.net.to(evaluation_device(cfg.trainer))  # Lightning hands the net back on the CPU
    sets = {"val": Predictions(*predict_probabilities(module.net, datamodule.val_dataloader()))}
    if datamodule.counts("test")[0]:
        sets["test"] = Predictions(*predict_probabilities(module.net, datamodule.test_dataloader()))
    threshold = choose_threshold(threshold_setting, sets["val"])
    summary = summarise(sets, threshold)
    client.log_batch(run_id, metrics=metric_entities(summary, step=trainer.global_step))
    for path in write_reports(cfg, sets, threshold, out_dir, run_name(cfg, choices)):
        log_artifact(client, run_id, path)
    best = best_checkpoint(trainer)
    if best is not None:
        log_artifact(client, run_id, best, "checkpoints")

    value = objective_values(cfg, {**summary, "trainable_params": float(trainable)})
    client.set_terminated(run_id, "FINISHED")  # also when there was nothing to fit
    print_summary(summary, datamodule, run_id, experiment, cfg)
    return value


def volume_datamodule(node: DictConfig, choice: str):
    """The data group as a ``VolumeDataModule``; slice or tabular data is refused in one line."""
    from sah.data.volumes import VolumeDataModule

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
    """The epoch metrics (AUC over the whole validation fold) assume one process sees it all."""
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
    from sah.tasks.backbone_transfer import load_pretrained

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
    from sah.tasks.focal_loss import balanced_class_weights

    if setting in (None, "none", "null"):
        return None
    if setting != "balanced":
        raise ConfigError("task.class_weights", f"balanced or null, got {setting!r}")
    return balanced_class_weights(train_labels)


def split_params(datamodule) -> dict[str, int]:
    out = {}
    for split in ("train", "val", "test"):
        n, events = datamodule.counts(split)
        out[f"n_{split}"], out[f"events_{split}"] = n, events
    return out


def summarise(sets: dict, threshold: float) -> dict[str, float]:
    """``<split>/<metric>`` for every set with both outcomes, plus counts and the threshold."""
    from sah.tasks.classification import classification_metrics

    summary: dict[str, float] = {"val/threshold": threshold}
    for split, preds in sets.items():
        summary[f"{split}/n"] = float(len(preds.y))
        summary[f"{split}/n_events"] = float(preds.y.sum())
        if preds.has_both_classes:
            for name, value in classification_metrics(preds.y, preds.prob, threshold).items():
                summary[f"{split}/{name}"] = value
    return summary


def write_reports(cfg: DictConfig, sets: dict, threshold: float, out_dir: Path, title: str):
    from sah.tasks.classification_report import (
        save_calibration_figure,
        save_roc_figure,
        write_predictions,
    )

    config_file = out_dir / "resolved_config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return [
        write_predictions(sets, threshold, int(cfg.fold), out_dir / "per_patient_predictions.csv"),
        save_roc_figure(sets, threshold, out_dir / "roc.png", title),
        save_calibration_figure(sets, out_dir / "calibration.png", title),
        config_file,
    ]


def print_summary(
    summary: dict[str, float], datamodule, run_id: str, experiment: str, cfg: DictConfig
) -> None:
    from rich.console import Console

    from sah.tracking import ui_command

    console = Console(soft_wrap=True)  # paths must stay on one line to copy them
    for split in ("val", "test"):
        if f"{split}/auc" not in summary:
            continue
        n, events = int(summary[f"{split}/n"]), int(summary[f"{split}/n_events"])
        where = f"fold {cfg.fold} of {datamodule.n_folds}" if split == "val" else "held out"
        console.print(
            f"[bold]{split}[/bold] ({where}, {events}/{n} {datamodule.outcome}): "
            f"AUC [bold green]{summary[f'{split}/auc']:.3f}[/bold green]  "
            f"accuracy {summary[f'{split}/accuracy']:.3f}  F1 {summary[f'{split}/f1']:.3f}  "
            f"balanced accuracy {summary[f'{split}/balanced_accuracy']:.3f}  "
            f"sensitivity {summary[f'{split}/sensitivity']:.3f}  "
            f"specificity {summary[f'{split}/specificity']:.3f}  "
            f"Brier {summary[f'{split}/brier']:.3f}  (threshold {summary['val/threshold']:.2f})"
        )
    console.print(f"MLflow run id: [bold]{run_id}[/bold]  (experiment '{experiment}')")
    console.print(f"Open the UI:   {ui_command(cfg.tracking.uri)}")
