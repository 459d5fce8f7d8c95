"""Turn a composed config into objects and run the chosen task (segmentation for now)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sah.cli.ddp_ranks import ddp_ranks, is_worker_rank
from sah.errors import ConfigError
from sah.tracking import flatten, get_client, log_artifact, log_params, resolve_experiment
from sah.tracking.sweep_runs import require_run

log = logging.getLogger("sah.train")


def run_task(cfg: DictConfig, choices: dict[str, str]) -> float | list[float] | None:
    task = cfg.task.name
    if task == "segmentation":
        return run_segmentation(cfg, choices)
    if task == "outcome":
        from sah.cli.run_outcome import run_outcome

        return run_outcome(cfg, choices)
    if task == "mortality":
        from sah.cli.run_mortality import run_mortality

        return run_mortality(cfg, choices)
    raise ConfigError("task", f"unknown task {task!r}")


def run_name(cfg: DictConfig, choices: dict[str, str]) -> str:
    """Names a run by what differs between runs of a study: model, method, rank, target, fold."""
    parts = [choices.get("model", "model")]
    method = choices.get("adapter", "none")
    if method not in ("none", "null"):
        parts.append(method)
        if cfg.get("adapter") and cfg.adapter.get("rank") and method != "full":
            parts.append(f"r{cfg.adapter.rank}")
        if cfg.get("adapter") and cfg.adapter.get("target"):
            parts.append(str(cfg.adapter.target))
    parts.append(f"fold{cfg.fold}")
    return "-".join(parts)


def run_tags(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    adapter = cfg.get("adapter") or {}
    tags = {
        "model": choices.get("model", ""),
        "data": choices.get("data", ""),
        "method": choices.get("adapter", "none"),
        "rank": str(adapter.get("rank", "")),
        "target": str(adapter.get("target", "")),
        "fold": str(cfg.fold),
        # From-scratch training and fine-tuning of a pre-trained net are different baselines.
        "init": "pretrained" if cfg.get("init_from") else "scratch",
    }
    return {**tags, **sweep_tags(cfg)}


def sweep_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags that place a run in its sweep: the parent run, and the Optuna trial it reports to."""
    tags: dict[str, str] = {}
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = str(cfg.tracking.parent_run_id)
    if cfg.optuna.trial_number is not None:
        tags["optuna.trial_number"] = str(cfg.optuna.trial_number)
        tags["optuna.study_name"] = str(cfg.optuna.study_name)
    return tags


def run_segmentation(cfg: DictConfig, choices: dict[str, str]) -> float | list[float] | None:
    from sah.tasks.evaluate import evaluate_patients, write_rows
    from sah.tasks.inference import InferenceSpecCallback
    from sah.tasks.output_prior import set_output_prior
    from sah.tasks.overlay import save_overlays
    from sah.tasks.pruning import raise_if_pruned, trial_callbacks
    from sah.tasks.transfer import ReattachNorms, prepare_network

    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    # Model and task first: their config errors surface before data is generated or read.
    net = instantiate(cfg.model)
    adapter = adapter_settings(cfg)
    init_from = init_checkpoint(cfg)
    prior = cfg.task.get("output_prior")
    if init_from is None and prior:
        set_output_prior(net, float(prior))
    adapted = prepare_network(net, init_from, adapter)
    module = instantiate(cfg.task.module)(net=net)
    datamodule = instantiate(cfg.data)
    spatial_dims = checked_spatial_dims(cfg, choices, datamodule, module)

    experiment = cfg.tracking.experiment or cfg.task.experiment_name
    client = get_client(cfg.tracking.uri)
    # A DDP rank other than 0 only trains: tracking and evaluation are rank 0's.
    worker = is_worker_rank()
    if cfg.tracking.parent_run_id and not worker:
        require_run(cfg.tracking.uri, str(cfg.tracking.parent_run_id))
    resume = None if worker else resume_point(cfg, client, experiment, choices)
    logger = instantiate(
        cfg.logger,
        experiment_name=experiment,
        run_name=run_name(cfg, choices),
        tags=run_tags(cfg, choices),
        run_id=resume.run_id if resume else cfg.tracking.run_id,
    )
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if not worker:
        resolve_experiment(client, experiment, cfg.tracking.artifact_location)
        run_id = logger.run_id
        resolved = OmegaConf.to_container(cfg, resolve=True)
        log_params(client, run_id, flatten(resolved))  # type: ignore[arg-type]
        log_params(client, run_id, {"trainable_params": trainable})
        client.set_tag(run_id, "adapted_modules", str(len(adapted)))
        client.set_tag(run_id, "sah.output_dir", str(out_dir))

    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks.append(InferenceSpecCallback(lambda: inference_spec(cfg, datamodule)))
    callbacks.append(ReattachNorms())
    callbacks += trial_callbacks(
        cfg.optuna.storage, cfg.optuna.study_name, cfg.optuna.trial_number, cfg.optimized_metric
    )
    with ddp_ranks(cfg):
        trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
        datamodule.setup("fit")
        if trainable > 0 and cfg.trainer.max_epochs > 0:
            ckpt_path = resume.checkpoint if resume else None
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            if worker:
                return None
            raise_if_pruned(callbacks)
            restore_best(trainer, module)
        else:
            log.info(
                "nothing to train (trainable parameters: %d): evaluating the net as it is",
                trainable,
            )
    if worker:
        return None

    device = trainer.strategy.root_device  # 3D: whole-volume inference where training ran
    if spatial_dims == 3:
        rows, panels, window = evaluate_3d(module, datamodule.val_cases, device)
    else:
        rows, masks = evaluate_patients(
            module.net, datamodule.val_patients, datamodule.window, datamodule.slice_size
        )
        panels = [
            (pv.patient_id, pv.image_hu, pv.label, masks[pv.patient_id])
            for pv in datamodule.val_patients[:4]
        ]
        window = (0.0, 80.0)
    per_patient = write_rows(rows, out_dir / "per_patient_metrics.csv")
    summary = summarise(rows)
    reports = [per_patient]
    if getattr(datamodule, "external_cases", None):
        external_rows, _, _ = evaluate_3d(module, datamodule.external_cases, device)
        reports.append(write_rows(external_rows, out_dir / "external_per_patient_metrics.csv"))
        external = summarise(external_rows)
        summary.update({"external/" + k.removeprefix("val/"): v for k, v in external.items()})
    client.log_batch(run_id, metrics=metric_entities(summary, step=trainer.global_step))
    figure = save_overlays(panels, out_dir / "validation_overlays.png", window)
    config_file = out_dir / "resolved_config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    for path in (*reports, figure, config_file):
        log_artifact(client, run_id, path)
    best = best_checkpoint(trainer)
    if best is not None:
        log_artifact(client, run_id, best, "checkpoints")
    if datamodule.skipped:
        skipped = out_dir / "skipped_cases.txt"
        skipped.write_text("\n".join(datamodule.skipped) + "\n")
        log_artifact(client, run_id, skipped)

    value = objective_values(cfg, {**summary, "trainable_params": float(trainable)})
    # Lightning ends the run after fit; a run with nothing to train has no fit to end it.
    client.set_terminated(run_id, "FINISHED")
    print_summary(summary, run_id, experiment, cfg)
    return value


def checked_spatial_dims(cfg: DictConfig, choices: dict[str, str], datamodule, module) -> int:
    """2 (slices) or 3 (patches and whole volumes), as the data gives; the model must agree."""
    data_dims = int(getattr(datamodule, "spatial_dims", 2))
    model_dims = int(cfg.model.get("spatial_dims", 2))
    if data_dims != model_dims:
        fix = "data=synthetic_sah_3d or data=manifest_3d" if model_dims == 3 else "a 2D data option"
        raise ConfigError(
            "data",
            f"model {choices.get('model', '?')!r} is {model_dims}D but data "
            f"{choices.get('data', '?')!r} gives {data_dims}D inputs",
            f"use {fix}",
        )
    if data_dims == 3 and getattr(module, "sliding_window", None) is None:
        raise ConfigError(
            "task.module.roi_size", "3D data needs a sliding-window ROI", "e.g. [128, 128, 64]"
        )
    return data_dims


def evaluate_3d(
    module, cases, device: torch.device
) -> tuple[list[dict[str, Any]], list[tuple], tuple[float, float]]:
    """Per-patient rows on whole preprocessed volumes, overlay panels for the first four, and a
    display window for their normalised intensities."""
    from sah.tasks.evaluate import evaluate_volumes
    from sah.tasks.overlay import intensity_window

    net = module.net.to(device)
    rows, masks = evaluate_volumes(net, cases, module.sliding_window, module.threshold)
    panels = [(c.patient_id, c.image, c.label, masks[c.patient_id]) for c in cases[:4]]
    window = intensity_window(cases[0].image) if cases else (0.0, 1.0)
    return rows, panels, window


def objective_values(cfg: DictConfig, outcomes: dict[str, float]) -> float | list[float]:
    """What a sweeper gets back: ``optimized_metric``, or one value per name in
    ``optimized_metrics`` for a multi-objective study (e.g. val/dice and trainable_params)."""
    names = [str(n) for n in (cfg.get("optimized_metrics") or [])]
    key = "optimized_metrics" if names else "optimized_metric"
    names = names or [str(cfg.optimized_metric)]
    missing = [name for name in names if outcomes.get(name) is None]
    if missing:
        raise ConfigError(
            key,
            f"{', '.join(map(repr, missing))} was not computed",
            f"use one of {sorted(outcomes)}",
        )
    values = [float(outcomes[name]) for name in names]
    return values if key == "optimized_metrics" else values[0]


def resume_point(cfg: DictConfig, client, experiment: str, choices: dict[str, str]):
    """With ``resume=true``: the run to continue and its last checkpoint (sah.tracking.resume)."""
    if not cfg.get("resume"):
        return None
    from sah.tracking.resume import find_resume_point

    experiment_id = resolve_experiment(client, experiment, cfg.tracking.artifact_location)
    return find_resume_point(
        client, experiment_id, run_name(cfg, choices), run_id=cfg.tracking.run_id
    )


def inference_spec(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """What sah-predict needs to rebuild the net and preprocess a scan, as plain values."""
    adapter = cfg.get("adapter")
    return {
        **datamodule.inference_spec(),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "adapter": OmegaConf.to_container(adapter, resolve=True) if adapter else None,
        "threshold": float(cfg.task.module.get("threshold", 0.5)),
        "roi_size": OmegaConf.to_container(roi)
        if (roi := cfg.task.module.get("roi_size"))
        else None,
    }


def adapter_settings(cfg: DictConfig):
    from sah.tasks.transfer import AdapterSettings

    node = cfg.get("adapter")
    if node is None:
        return None
    return AdapterSettings(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]


def init_checkpoint(cfg: DictConfig) -> Path | None:
    """``init_from`` as a local file: a path, or ``mlflow:<run_id>`` for a run's best checkpoint."""
    source = cfg.get("init_from")
    if not source:
        return None
    source = str(source)
    if source.startswith("mlflow:"):
        from sah.tracking.checkpoints import download_best_checkpoint

        return download_best_checkpoint(cfg.tracking.uri, source.removeprefix("mlflow:"))
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(
            "init_from", f"no checkpoint file at {path}", "give a path or mlflow:<run_id>"
        )
    return path


def best_checkpoint(trainer: L.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    if cb is None:
        return None
    path = getattr(cb, "best_model_path", "") or getattr(cb, "last_model_path", "")
    return path or None


def restore_best(trainer: L.Trainer, module: L.LightningModule) -> None:
    """Load the best epoch's weights into ``module``: evaluation scores the checkpoint the run
    logs, not whatever the last epoch left."""
    best = best_checkpoint(trainer)
    if best is not None:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and SD over patients of every metric, named ``val/<metric>[_sd]``, and the Dice per
    volume bin; statistics that do not exist (an empty bin, the SD of one patient) are left out
    rather than logged as NaN."""
    import math

    from sah.metrics import aggregate

    agg = aggregate(rows)
    out: dict[str, float] = {}
    for name, stats in agg["overall"].items():
        out[f"val/{name}"] = float(stats["mean"])
        out[f"val/{name}_sd"] = float(stats["sd"])
    for bin_name, metrics in agg["by_volume_bin"].items():
        if "dice" in metrics:
            out[f"val/dice_bin_{bin_name}ml"] = float(metrics["dice"]["mean"])
        out[f"val/n_bin_{bin_name}ml"] = float(agg["n_by_volume_bin"][bin_name])
    return {k: v for k, v in out.items() if not math.isnan(v)}


def metric_entities(values: dict[str, float], step: int):
    """Final metrics at the last training step, so they are what the run shows as latest."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(metric_name(k), v, now, step) for k, v in values.items()]


def metric_name(name: str) -> str:
    """MLflow allows only alphanumerics and _-. :/ in metric names ("225+" -> "225plus")."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("+", "plus"))


def print_summary(summary: dict[str, float], run_id: str, experiment: str, cfg: DictConfig) -> None:
    from rich.console import Console

    from sah.tracking import ui_command

    console = Console(soft_wrap=True)  # paths must stay on one line to copy them
    console.print(
        f"[bold]val/dice[/bold] (mean over {cfg.data.get('n_folds', '?')}-fold CV fold {cfg.fold} "
        f"patients): [bold green]{summary['val/dice']:.3f}[/bold green] "
        f"± {summary.get('val/dice_sd', float('nan')):.3f}"
    )
    console.print(f"MLflow run id: [bold]{run_id}[/bold]  (experiment '{experiment}')")
    console.print(f"Open the UI:   {ui_command(cfg.tracking.uri)}")
