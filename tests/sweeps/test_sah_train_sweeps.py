"""Sweeps of the real `sah-train` on a tiny synthetic cohort and a tiny UNet.

The first test (an Optuna sweep of three trials, then `sah-report` on it) is in the default
suite; the others (Pareto search, pruning, DDP, resume after a kill, basic multirun) train
more and are marked slow.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sweep_helpers import (
    TINY_TRAIN,
    children_and_parents,
    clean_env,
    mlflow_runs,
    optuna_trials,
    tail,
)

SAH_TRAIN = [sys.executable, "-m", "sah.cli.train"]
EXPERIMENT = "sah-segmentation"
TINY = TINY_TRAIN


def sah_train(run_app, sah_cache: Path, *args: str, timeout: float = 600):
    return run_app(*args, command=SAH_TRAIN, timeout=timeout, SAH_CACHE_DIR=str(sah_cache))


def sweep_dir(workdir: Path) -> Path:
    (found,) = workdir.glob("multirun/*/*")
    return found


def test_optuna_sweep_of_sah_train_then_its_report(run_app, workdir: Path, sah_cache: Path):
    result = sah_train(
        run_app,
        sah_cache,
        "-m",
        "hydra/sweeper=sah_optuna",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=3",
        "adapter.rank=choice(2,4,8)",
        *TINY,
    )
    assert result.returncode == 0, tail(result)
    folder = sweep_dir(workdir)
    trials = optuna_trials(f"sqlite:///{folder / 'optuna.db'}", "train")
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    children, parents = children_and_parents(mlflow_runs(workdir, EXPERIMENT))
    assert len(parents) == 1 and len(children) == 3
    parent_id = parents[0].info.run_id
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["method"] == "lora_c" and tags["target"] == "all" and tags["fold"] == "0"
        trial = trials[int(tags["optuna.trial_number"])]
        assert tags["rank"] == str(trial.params["adapter.rank"])
        assert child.data.metrics["val/dice"] == pytest.approx(trial.value)
        assert int(child.data.params["trainable_params"]) > 0

    from sah.cli.report import main as sah_report

    out = workdir / "report"
    sah_report(
        [
            "--tracking-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--parent-run",
            parent_id,
            "--baseline",
            "method=lora_c,rank=2",
            "--out",
            str(out),
        ]
    )
    table = (out / "study_table.csv").read_text().splitlines()
    assert len(table) == 4  # header + ranks 2, 4, 8
    assert (out / "wilcoxon.csv").is_file()
    logged = {
        a.path
        for a in MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").list_artifacts(
            parent_id, "report"
        )
    }
    assert {"report/report.md", "report/dice_vs_trainable_params.png"} <= logged


@pytest.mark.slow
def test_pareto_search_returns_dice_and_size(run_app, workdir: Path, sah_cache: Path):
    result = sah_train(
        run_app,
        sah_cache,
        "-m",
        "hparams_search=rank_pareto",
        "hydra.sweeper.n_trials=3",
        *TINY,
    )
    assert result.returncode == 0, tail(result)
    trials = optuna_trials(f"sqlite:///{workdir / 'optuna.db'}", "rank_pareto-lora_c")
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    children, _ = children_and_parents(mlflow_runs(workdir, EXPERIMENT))
    size = {
        int(c.data.tags["optuna.trial_number"]): int(c.data.params["trainable_params"])
        for c in children
    }
    for trial in trials:
        assert trial.values[1] == size[trial.number]
    assert (sweep_dir(workdir) / "pareto_front.csv").is_file()


@pytest.mark.slow
def test_pruned_trials_stop_early(run_app, workdir: Path, sah_cache: Path):
    result = sah_train(
        run_app,
        sah_cache,
        "-m",
        "hydra/sweeper=sah_optuna",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=0.99",  # no tiny model reaches this Dice: prune at once
        "hydra.sweeper.n_trials=2",
        "adapter.rank=choice(2,4)",
        *TINY,
        "trainer.max_epochs=3",
    )
    assert result.returncode == 0, tail(result)
    trials = optuna_trials(f"sqlite:///{sweep_dir(workdir) / 'optuna.db'}", "train")
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in trials)
    children, _ = children_and_parents(mlflow_runs(workdir, EXPERIMENT))
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for child in children:
        assert child.data.tags["optuna.state"] == "PRUNED"
        assert len(client.get_metric_history(child.info.run_id, "val/dice")) == 1  # 1 of 3 epochs


@pytest.mark.slow
def test_ddp_trial_on_two_cpu_processes(run_app, workdir: Path, sah_cache: Path):
    result = sah_train(
        run_app,
        sah_cache,
        "-m",
        "hydra/sweeper=sah_optuna",
        "hydra.sweeper.n_trials=1",
        "adapter.rank=choice(2,4)",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        *TINY,
    )
    assert result.returncode == 0, tail(result)
    output = result.stdout + result.stderr
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output  # two ranks joined
    (trial,) = optuna_trials(f"sqlite:///{sweep_dir(workdir) / 'optuna.db'}", "train")
    assert trial.state == TrialState.COMPLETE
    # Rank 1 got this trial's sampled value as an override: sampled once, not per rank.
    command = (sweep_dir(workdir) / "0" / "ddp_rank_command.txt").read_text()
    assert f"adapter.rank={trial.params['adapter.rank']}" in command
    assert "optuna.trial_number=0" in command
    children, _ = children_and_parents(mlflow_runs(workdir, EXPERIMENT))
    assert len(children) == 1  # only rank 0 tracks


@pytest.mark.slow
def test_a_killed_run_resumes_in_the_same_mlflow_run(workdir: Path, sah_cache: Path, run_app):
    args = [*TINY, "trainer.max_epochs=4", "data.slices_per_epoch=96", "fold=1"]
    proc = subprocess.Popen(
        [*SAH_TRAIN, *args],
        cwd=workdir,
        env=clean_env(SAH_CACHE_DIR=str(sah_cache)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 400
        while not list(workdir.glob("outputs/*/*/checkpoints/last.ckpt")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-way through epoch 1
        proc.wait()
    (killed,) = mlflow_runs(workdir, EXPERIMENT)
    assert killed.info.status == "RUNNING"

    result = sah_train(run_app, sah_cache, *args, "resume=true")
    assert result.returncode == 0, tail(result)
    (run,) = mlflow_runs(workdir, EXPERIMENT)  # no second run
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    epochs = [int(m.value) for m in client.get_metric_history(run.info.run_id, "epoch")]
    assert sorted(set(epochs)) == [0, 1, 2, 3]  # contiguous, none lost
    per_epoch = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(per_epoch) == 4  # one per epoch, none twice
    steps = [m.step for m in sorted(per_epoch, key=lambda m: m.timestamp)]
    assert steps == sorted(steps) and len(set(steps)) == 4


@pytest.mark.slow
def test_basic_multirun_of_sah_train_has_a_parent(run_app, workdir: Path, sah_cache: Path):
    result = sah_train(
        run_app, sah_cache, "-m", *TINY, "adapter=lora_c,cp_lora", "trainer.max_epochs=1"
    )
    assert result.returncode == 0, tail(result)
    children, parents = children_and_parents(mlflow_runs(workdir, EXPERIMENT))
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["method"] for c in children} == {"lora_c", "cp_lora"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert parents[0].info.status == "FINISHED"
    # The terminal says which job runs, with which overrides, and what it returned.
    assert f"MLflow parent run of this sweep: {parents[0].info.run_id}" in result.stderr
    for number, method in enumerate(["lora_c", "cp_lora"]):
        assert f"job {number}: " in result.stderr and f"adapter={method}" in result.stderr
        dice = next(c for c in children if c.data.tags["method"] == method).data.metrics
        assert f"job {number} COMPLETED: val/dice={dice['val/dice']:.4g}" in result.stderr
