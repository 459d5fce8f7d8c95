"""The sweep recipes and launcher configs compose with sah-train's root config."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sah.cli.schema import register_schema
from sah.cli.train import CONFIG_DIR


def compose_hydra(overrides: list[str]):
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_rank_search_recipe() -> None:
    cfg = compose_hydra(["hparams_search=rank_search", "adapter=cp_lora"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("SahOptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    assert set(sweeper.params) == {"adapter.rank", "adapter.alpha", "task.module.lr"}
    assert sweeper.study_name == "rank_search-cp_lora"
    assert cfg.optimized_metric == "val/dice" and cfg.optimized_metrics is None


def test_rank_pareto_recipe() -> None:
    cfg = compose_hydra(["hparams_search=rank_pareto"])
    assert list(cfg.hydra.sweeper.direction) == ["maximize", "minimize"]
    assert list(cfg.optimized_metrics) == ["val/dice", "trainable_params"]
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.NSGAIISampler"


def test_launchers_and_ddp_trainer() -> None:
    gpus = compose_hydra(["hydra/launcher=gpus"]).hydra.launcher
    assert gpus._target_.endswith("GpuLauncher") and gpus.gpus_per_job == 1
    slurm = compose_hydra(["hydra/launcher=slurm"]).hydra.launcher
    assert slurm._target_.endswith("sah_slurm_launcher.slurm_launcher.SahSlurmLauncher")
    # GPUs only where asked; CPUs from the data loader's workers (null); modest memory.
    assert (slurm.gpus_per_node, slurm.tasks_per_node, slurm.nodes) == (0, 1, 1)
    assert slurm.cpus_per_task is None and slurm.mem_gb == 8
    trainer = compose_hydra(["trainer=ddp"]).trainer
    assert (trainer.strategy, trainer.devices) == ("ddp", 2)


def test_every_multirun_gets_the_parent_run_callback() -> None:
    callbacks = compose_hydra([]).hydra.callbacks
    assert callbacks.mlflow_parent_run._target_ == "sah.cli.sweep_callback.MlflowParentRun"
