"""task=segmentation for the run driver: 2D nets on slices, 3D nets on patches.

The network is built, pre-trained weights loaded and the adapter injected before the data is
read; the data module then splits the cohort into training patients, the selection set (``val``,
validated every epoch: it picks the checkpoint and feeds pruning) and the outer fold (``test``),
scored once with the selected weights.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sah.data.modules.protocol import SegmentationData, patient_sets
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
    plain,
)

if TYPE_CHECKING:
    from sah.data.modules.case import Case
    from sah.data.modules.slices import SliceDataModule

log = logging.getLogger("sah.train")

# Sets scored after training, in the order the per-patient CSV lists them.
SCORED_SETS = ("val", "test")


class SegmentationRunner(NetworkRunner):
    """Builds net, adapter, data module and trainer; fits; scores selection and test sets."""

    datamodule: SegmentationData

    def prepare(self) -> None:
        from sah.tasks.segmentation.output_prior import set_output_prior
        from sah.tasks.training.ddp_ranks import is_worker_rank
        from sah.tasks.training.network_setup import prepare_network

        cfg = self.cfg
        self.is_worker = is_worker_rank()
        # Model and task first: their config errors surface before data is generated or read.
        self.net = instantiate(cfg.model)
        init_from = init_checkpoint(cfg)
        prior = cfg.task.get("output_prior")
        if init_from is None and prior:
            set_output_prior(self.net, float(prior))
        self.adapted = prepare_network(self.net, init_from, adapter_config(cfg))
        self.module = instantiate(cfg.task.module)(net=self.net)
        self.datamodule = instantiate(cfg.data)
        self.spatial_dims = checked_spatial_dims(cfg, self.choices, self.datamodule, self.module)
        self.datamodule.setup("fit")
        self.trainer: Any = None

    def splits(self) -> dict[str, list[str]]:
        return patient_sets(self.datamodule)

    def tags(self) -> dict[str, str]:
        tags = adapter_tags(self.cfg, self.choices)
        tags["adapted_modules"] = str(len(self.adapted))
        return tags

    def params(self) -> dict[str, Any]:
        cfg = self.cfg
        data, module = cfg.data, cfg.task.module
        size_key = "patch_size" if self.spatial_dims == 3 else "slice_size"
        per_epoch = "patches_per_epoch" if self.spatial_dims == 3 else "slices_per_epoch"
        return {
            **adapter_params(cfg, self.choices),
            "lr": module.lr,
            "weight_decay": module.weight_decay,
            "loss": module.loss,
            "lr_schedule": module.get("lr_schedule", "constant"),
            "threshold": module.threshold,
            "epochs": cfg.trainer.get("max_epochs"),
            "batch_size": data.get("batch_size"),
            size_key: plain(data.get(size_key)),
            per_epoch: data.get(per_epoch),
            "cohort": cohort_name(cfg),
            "n_train": len(self.datamodule.train_cases),
            "n_val": len(self.datamodule.val_cases),
            "n_test": len(self.datamodule.test_cases),
            "precision": cfg.trainer.get("precision"),
        }

    def fit(self, run_id: str | None, checkpoint: str | None) -> None:

        from sah.tasks.segmentation.inference import InferenceSpecCallback
        from sah.tasks.training.ddp_ranks import ddp_ranks
        from sah.tasks.training.network_setup import ReattachNorms
        from sah.tasks.training.pruning import trial_callbacks

        cfg = self.cfg
        logger: Any = False
        if run_id is not None:
            experiment = cfg.tracking.experiment or cfg.task.experiment_name
            logger = instantiate(
                cfg.logger, experiment_name=experiment, run_name=self.run_name(), run_id=run_id
            )
        callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
        callbacks.append(InferenceSpecCallback(lambda: inference_spec(cfg, self.datamodule)))
        callbacks.append(ReattachNorms())
        callbacks += trial_callbacks(
            cfg.optuna.storage, cfg.optuna.study_name, cfg.optuna.trial_number, cfg.optimized_metric
        )
        with ddp_ranks(cfg):
            self.trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
            self.fit_and_select(self.trainer, callbacks, checkpoint)

    def evaluate(self) -> Evaluation:
        from sah.tasks.segmentation.evaluate import write_rows
        from sah.tasks.segmentation.overlay import save_overlays

        dm = self.datamodule
        device = self.trainer.strategy.root_device
        rows: list[dict[str, Any]] = []
        metrics: dict[str, float] = {}
        panels: list[tuple] = []
        window: tuple[float, float] = (0.0, 80.0)
        for name in SCORED_SETS:
            set_rows, set_panels, window = self.score(name, device)
            rows += [{"set": name, **row} for row in set_rows]
            metrics.update(summarise(set_rows, name))
            if name == "test":
                panels = set_panels
        out = self.out_dir
        artifacts: list[tuple[Path, str | None]] = [
            (write_rows(rows, out / "per_patient_metrics.csv"), None)
        ]
        if dm.external_cases:
            external_rows, _, _ = evaluate_3d(self.module, dm.external_cases, device)
            metrics.update(summarise(external_rows, "external"))
            rows = [{"set": "external", **row} for row in external_rows]
            artifacts.append((write_rows(rows, out / "external_per_patient_metrics.csv"), None))
        artifacts.append((save_overlays(panels, out / "test_overlays.png", window), None))
        best = best_checkpoint(self.trainer)
        if best is not None:
            artifacts.append((Path(best), "checkpoints"))
        if dm.skipped:
            skipped = out / "skipped_cases.txt"
            skipped.write_text("\n".join(dm.skipped) + "\n")
            artifacts.append((skipped, None))
        return Evaluation(metrics, artifacts, self.summary(metrics), self.trainer.global_step)

    def score(self, name: str, device: torch.device) -> tuple[list[dict[str, Any]], list, Any]:
        """Per-patient rows of set ``name`` (val or test), overlay panels, display window."""
        from sah.tasks.segmentation.evaluate import evaluate_patients

        dm = self.datamodule
        cases = dm.val_cases if name == "val" else dm.test_cases
        if self.spatial_dims == 3:
            return evaluate_3d(self.module, cases, device)
        slices = cast("SliceDataModule", dm)
        rows, masks = evaluate_patients(
            self.module.net, cases, slices.window, slices.slice_size, self.module.threshold
        )
        panels = [(p.patient_id, p.image, p.label, masks[p.patient_id]) for p in cases[:4]]
        return rows, panels, (0.0, 80.0)

    def summary(self, metrics: dict[str, float]) -> list[str]:
        cfg = self.cfg
        dm = self.datamodule
        return [
            f"[bold]test/dice[/bold] (outer fold {cfg.fold} of {cfg.data.get('n_folds', '?')}, "
            f"{len(dm.test_cases)} patients never used for choosing): "
            f"[bold green]{metrics['test/dice']:.3f}[/bold green] "
            f"± {metrics.get('test/dice_sd', math.nan):.3f}",
            f"val/dice (selection set, {len(dm.val_cases)} training-fold patients that chose "
            f"the checkpoint): {metrics['val/dice']:.3f}",
        ]


def checked_spatial_dims(
    cfg: DictConfig, choices: dict[str, str], datamodule: SegmentationData, module: Any
) -> int:
    """2 (slices) or 3 (patches and whole volumes), as the data gives; the model must agree."""
    data_dims = datamodule.spatial_dims
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
    module: Any, cases: list[Case], device: torch.device
) -> tuple[list[dict[str, Any]], list[tuple], tuple[float, float]]:
    """Per-patient rows on whole preprocessed volumes, overlay panels for the first four, and a
    display window for their normalised intensities."""
    from sah.tasks.segmentation.evaluate import evaluate_volumes
    from sah.tasks.segmentation.overlay import intensity_window

    net = module.net.to(device)
    rows, masks = evaluate_volumes(net, cases, module.sliding_window, module.threshold)
    panels = [(c.patient_id, c.image, c.label, masks[c.patient_id]) for c in cases[:4]]
    window = intensity_window(cases[0].image) if cases else (0.0, 1.0)
    return rows, panels, window


def inference_spec(cfg: DictConfig, datamodule: SegmentationData) -> dict[str, Any]:
    """What sah-predict needs to rebuild the net and preprocess a scan, as plain values."""
    adapter = cfg.get("adapter")
    roi = cfg.task.module.get("roi_size")
    return {
        **datamodule.inference_spec(),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "adapter": OmegaConf.to_container(adapter, resolve=True) if adapter else None,
        "threshold": float(cfg.task.module.get("threshold", 0.5)),
        "roi_size": OmegaConf.to_container(roi) if roi else None,
    }


def summarise(rows: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """Mean and SD over patients of every metric, named ``<prefix>/<metric>[_sd]``, and the Dice
    per volume bin; statistics that do not exist (an empty bin, the SD of one patient) are left
    out rather than logged as NaN."""
    from sah.metrics import aggregate

    agg = aggregate(rows)
    out: dict[str, float] = {}
    for name, stats in agg["overall"].items():
        out[f"{prefix}/{name}"] = float(stats["mean"])
        out[f"{prefix}/{name}_sd"] = float(stats["sd"])
    for bin_name, metrics in agg["by_volume_bin"].items():
        if "dice" in metrics:
            out[f"{prefix}/dice_bin_{bin_name}ml"] = float(metrics["dice"]["mean"])
        out[f"{prefix}/n_bin_{bin_name}ml"] = float(agg["n_by_volume_bin"][bin_name])
    return {k: v for k, v in out.items() if not math.isnan(v)}
