"""trainer=ddp synchronises BatchNorm on CUDA GPUs only; CPU DDP (gloo) needs no override, and
an explicit sync_batchnorm=true without a GPU is refused naming the key."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sah.cli.schema import register_schema
from sah.cli.train import CONFIG_DIR
from sah.errors import ConfigError
from sah.tasks.training.ddp_ranks import check_sync_batchnorm


def ddp_trainer(*overrides: str):
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["trainer=ddp", *overrides]).trainer


@pytest.mark.parametrize(
    ("accelerator", "expected"),
    [("cpu", False), ("gpu", True), ("cuda", True), ("auto", torch.cuda.is_available())],
)
def test_sync_batchnorm_follows_the_accelerator(accelerator: str, expected: bool) -> None:
    trainer = ddp_trainer(f"trainer.accelerator={accelerator}")
    assert trainer.sync_batchnorm is expected
    check_sync_batchnorm(trainer)  # the default is never refused


def test_an_explicit_choice_wins_on_a_gpu() -> None:
    assert (
        ddp_trainer("trainer.accelerator=gpu", "trainer.sync_batchnorm=false").sync_batchnorm
        is False
    )


def test_sync_batchnorm_on_cpu_is_refused_naming_the_key() -> None:
    trainer = ddp_trainer("trainer.accelerator=cpu", "trainer.sync_batchnorm=true")
    with pytest.raises(ConfigError, match=r"trainer\.sync_batchnorm.*CUDA GPUs only.*false"):
        check_sync_batchnorm(trainer)


def test_the_lightning_trainer_accepts_the_cpu_default() -> None:
    """What failed before: a CPU DDP Trainer built from trainer=ddp's own values."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import DDPStrategy

    cfg = ddp_trainer("trainer.accelerator=cpu", "trainer.devices=2")
    trainer = Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        sync_batchnorm=cfg.sync_batchnorm,
        logger=False,
        enable_checkpointing=False,
    )
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy._layer_sync is None
