"""What the runners of network tasks (segmentation, mortality) share: the net's size, resuming
from checkpoints, the cohort's manifest, run names and tags from the adapter group, pre-trained
weights in and the selected checkpoint back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from sah.data.modules.protocol import TaskData
from sah.errors import ConfigError
from sah.tasks.driver import TaskRunner

if TYPE_CHECKING:
    from sah.adapters import AdapterConfig

log = logging.getLogger("sah.train")


class NetworkRunner(TaskRunner):
    """A task that trains ``self.net`` on ``self.datamodule`` with Lightning."""

    net: torch.nn.Module
    module: Any
    datamodule: TaskData

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def can_resume(self) -> bool:
        return True

    def cohort(self) -> tuple[Path, str] | None:
        manifest = Path(self.datamodule.manifest)
        return manifest, cohort_name(self.cfg) or manifest.parent.name

    def run_name(self) -> str:
        return run_name(self.cfg, self.choices)

    def fit_and_select(self, trainer: Any, callbacks: list, checkpoint: str | None) -> None:
        """Train when there is something to train, then load the checkpoint the selection set
        chose (a DDP rank other than 0 stops after training); else score the net as it is."""
        from sah.tasks.training.pruning import raise_if_pruned

        if self.trainable_params() == 0 or not (self.cfg.trainer.max_epochs or 0) > 0:
            log.info(
                "nothing to train (trainable parameters: %d): scoring the net as it is",
                self.trainable_params(),
            )
            return
        trainer.fit(self.module, datamodule=self.datamodule, ckpt_path=checkpoint)
        if not self.is_worker:
            raise_if_pruned(callbacks)
            restore_best(trainer, self.module)


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def adapter_method(choices: dict[str, str]) -> str:
    return choices.get("adapter", "none")


def has_rank(method: str) -> bool:
    """Full fine-tuning, no fine-tuning and no adapter group have no rank to report."""
    return method not in ("none", "null", "full")


def run_name(cfg: DictConfig, choices: dict[str, str]) -> str:
    """What differs between runs of a study: model, method, rank, target, fold, Optuna trial."""
    parts = [choices.get("model", "model")]
    method = adapter_method(choices)
    adapter = cfg.get("adapter")
    if method not in ("none", "null"):
        parts.append(method)
        if adapter and adapter.get("rank") and has_rank(method):
            parts.append(f"r{adapter.rank}")
        if adapter and adapter.get("target"):
            parts.append(str(adapter.target))
    parts.append(f"fold{cfg.fold}")
    if cfg.optuna.trial_number is not None:
        parts.append(f"t{cfg.optuna.trial_number}")
    return "-".join(parts)


def adapter_tags(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    """The tags sah-report groups and filters by."""
    adapter = cfg.get("adapter") or {}
    method = adapter_method(choices)
    return {
        "model": choices.get("model", ""),
        "data": choices.get("data", ""),
        "method": method,
        "rank": str(adapter.get("rank", "")) if has_rank(method) else "",
        "target": str(adapter.get("target", "")),
        "fold": str(cfg.fold),
        "seed": str(cfg.seed),
        # From-scratch training and fine-tuning of a pre-trained net are different baselines.
        "init": "pretrained" if cfg.get("init_from") else "scratch",
    }


def adapter_params(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    adapter = cfg.get("adapter") or {}
    method = adapter_method(choices)
    ranked = has_rank(method)
    return {
        "adapter.method": method,
        "adapter.rank": adapter.get("rank") if ranked else None,
        "adapter.alpha": adapter.get("alpha") if ranked else None,
        "adapter.target": adapter.get("target"),
        "adapter.dropout": adapter.get("dropout") if ranked else None,
    }


def cohort_name(cfg: DictConfig) -> str:
    """A short name of the cohort a run read: the synthetic generator's settings or the
    manifest's file name."""
    manifest = cfg.data.get("manifest")
    if isinstance(manifest, DictConfig) and manifest.get("config") is not None:
        c = manifest.config
        parts = [f"synthetic {c.get('kind', '?')}", f"n={c.get('n_patients', '?')}"]
        if c.get("matrix") is not None:
            parts.append(f"{c.matrix}px@{c.get('spacing_mm', '?')}mm")
        parts.append(f"seed={c.get('seed', 0)}")
        return " ".join(parts)
    return Path(str(manifest)).name if manifest else ""


def adapter_config(cfg: DictConfig) -> AdapterConfig | None:
    """The ``adapter`` group as the ``AdapterConfig`` it is the schema of (checked on creation)."""
    from sah.adapters import AdapterConfig

    node = cfg.get("adapter")
    if node is None:
        return None
    if OmegaConf.get_type(node) is AdapterConfig:
        return OmegaConf.to_object(node)  # type: ignore[return-value]
    # A config composed without sah's schema (a hand-built DictConfig).
    return AdapterConfig(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]


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


def best_checkpoint(trainer: Any) -> str | None:
    """The checkpoint the selection set chose (or the last one when nothing was monitored)."""
    cb = trainer.checkpoint_callback if trainer is not None else None
    if cb is None:
        return None
    path = getattr(cb, "best_model_path", "") or getattr(cb, "last_model_path", "")
    return path or None


def restore_best(trainer: Any, module: Any) -> None:
    """Load the selected epoch's weights into ``module``: the test set scores the checkpoint
    the run logs, not whatever the last epoch left."""
    best = best_checkpoint(trainer)
    if best is not None:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
