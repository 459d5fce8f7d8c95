"""The sah_optuna sweeper end to end on a tiny Hydra app (no training): trials, MLflow parent
and child runs, shared storages, failures, resumption, and bad input stopped before any trial."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from sweep_helpers import (
    TINY_APP,
    children_and_parents,
    clean_env,
    mlflow_runs,
    optuna_trials,
    tail,
)

SWEEP = ["-m", "hydra/sweeper=sah_optuna"]


def storage_of(workdir: Path, name: str = "optuna.db") -> str:
    return f"sqlite:///{workdir / name}"


def test_three_trials_three_child_runs_under_one_parent(run_app, workdir: Path) -> None:
    result = run_app(*SWEEP, "hydra.sweeper.n_trials=3", "x=interval(0,1)", "y=choice(1,2,3)")
    assert result.returncode == 0, tail(result)

    trials = optuna_trials(storage_of(workdir, "multirun/optuna.db"), "app")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    children, parents = children_and_parents(mlflow_runs(workdir, "tiny"))
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["optuna.trial_number"] for c in children) == ["0", "1", "2"]
    assert {c.data.tags["optuna.state"] for c in children} == {"COMPLETE"}
    for child in children:  # each trial's run named uniquely, -t<trial>
        assert child.info.run_name.endswith(f"-t{child.data.tags['optuna.trial_number']}")
    # The trial links to its run; the parent names the best trial and its run.
    best = max(trials, key=lambda t: t.value)
    assert parent.data.tags["optuna.best_trial"] == str(best.number)
    assert parent.data.tags["optuna.best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.params["sweep.n_trials"] == "3"
    assert parent.data.metrics["best/val/score"] == pytest.approx(best.value)
    results = yaml.safe_load((workdir / "multirun" / "optimization_results.yaml").read_text())
    assert results["best_trial"] == best.number
    # Progress is shown with the metric's name; the study carries it (optuna-dashboard).
    assert f"trial 2 COMPLETE: val/score={trials[2].value:.4g}" in result.stderr
    study = optuna.load_study(study_name="app", storage=storage_of(workdir, "multirun/optuna.db"))
    assert study.metric_names == ["val/score"]
    columns = (workdir / "multirun" / "trials.csv").read_text().splitlines()[0].split(",")
    assert columns[:5] == ["number", "state", "val/score", "x", "y"]
    assert not [c for c in columns if c.startswith(("user_attrs", "system_attrs", "sah."))]


def test_a_failing_trial_fails_alone(run_app, workdir: Path) -> None:
    result = run_app(
        *SWEEP,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=3",
        "x=choice(0.1,0.9,0.2)",
        "fail_when=0.5",
    )
    assert result.returncode == 0, tail(result)
    trials = optuna_trials(storage_of(workdir, "multirun/optuna.db"), "app")
    states = {t.params["x"]: t.state for t in trials}
    assert states == {0.1: TrialState.COMPLETE, 0.2: TrialState.COMPLETE, 0.9: TrialState.FAIL}
    assert "injected failure at x=0.9" in result.stdout + result.stderr


@pytest.mark.slow
def test_two_processes_share_one_study(workdir: Path) -> None:
    storage = storage_of(workdir)
    args = [
        sys.executable,
        str(TINY_APP),
        *SWEEP,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=6",
        "x=interval(0,1)",
        "sleep_s=2",
    ]
    procs = [
        subprocess.Popen(
            [*args, f"hydra.sweep.dir=multirun/p{i}"],
            cwd=workdir,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    trials = optuna_trials(storage, "shared")
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    by_process: dict[str, int] = {}
    for trial in trials:
        by_process[trial.user_attrs["sah.sweeper"]] = (
            by_process.get(trial.user_attrs["sah.sweeper"], 0) + 1
        )
    assert len(by_process) == 2, by_process  # both processes ran trials, 6 in all
    children, parents = children_and_parents(mlflow_runs(workdir, "tiny"))
    assert len(parents) == 1 and len(children) == 6  # one study, one parent run


@pytest.mark.slow
def test_a_study_resumes_where_it_stopped(run_app, workdir: Path) -> None:
    common = [*SWEEP, f"hydra.sweeper.storage={storage_of(workdir)}", "x=interval(0,1)"]
    first = run_app(*common, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, tail(first)
    second = run_app(*common, "hydra.sweeper.n_trials=4")
    assert second.returncode == 0, tail(second)
    assert "2 of 4 trials done before this run" in second.stdout + second.stderr

    trials = optuna_trials(storage_of(workdir), "app")
    assert [t.number for t in trials] == [0, 1, 2, 3]
    children, parents = children_and_parents(mlflow_runs(workdir, "tiny"))
    assert len(parents) == 1 and len(children) == 4  # the resumed study kept its parent run


@pytest.mark.slow
def test_an_interrupted_sweep_retries_its_lost_trial(workdir: Path, run_app) -> None:
    storage = storage_of(workdir)
    common = [
        *SWEEP,
        f"hydra.sweeper.storage={storage}",
        "x=interval(0,1)",
        "hydra.sweeper.n_trials=2",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(TINY_APP), *common, "hydra.sweeper.heartbeat_s=1", "sleep_s=60"],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (workdir / "optuna.db").exists():
                trials = optuna_trials(storage, "app") if _has_study(storage) else []
                if any(t.state == TrialState.RUNNING for t in trials):
                    break
            time.sleep(1)
        else:
            raise AssertionError("the sweep never started a trial")
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: only the heartbeat tells
        proc.wait()
    lost = optuna_trials(storage, "app")[0]
    time.sleep(6)  # 5 missed heartbeats of 1 s
    result = run_app(*common, "hydra.sweeper.heartbeat_s=1", "sleep_s=0")
    assert result.returncode == 0, tail(result)

    trials = optuna_trials(storage, "app")
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["sah.interrupted"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2  # the interrupted trial does not use up the budget ...
    assert complete[0].params == lost.params  # ... and its parameters are tried again
    assert complete[0].user_attrs["sah.retry_of"] == 0


def _has_study(storage: str) -> bool:
    import optuna

    try:
        return bool(optuna.get_all_study_names(storage))
    except Exception:
        return False


def test_multi_objective_saves_the_pareto_front(run_app, workdir: Path) -> None:
    result = run_app(
        *SWEEP,
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.direction=[maximize,minimize]",
        "optimized_metrics=[val/score,trainable_params]",
        "x=interval(0,1)",
        "y=choice(1,2,3)",
    )
    assert result.returncode == 0, tail(result)
    sweep = workdir / "multirun"
    assert (sweep / "pareto_front.png").is_file()
    header = (sweep / "pareto_front.csv").read_text().splitlines()[0]
    assert header == "number,val/score,trainable_params,x,y,mlflow_run_id"
    assert "COMPLETE: val/score=" in result.stderr and ", trainable_params=" in result.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["directions"] == ["maximize", "minimize"] and results["pareto_front"]
    _, parents = children_and_parents(mlflow_runs(workdir, "tiny"))
    assert parents[0].data.tags["optuna.pareto_trials"]


def test_basic_multirun_gets_a_parent_run(run_app, workdir: Path) -> None:
    result = run_app("-m", "x=0.1,0.2")
    assert result.returncode == 0, tail(result)
    children, parents = children_and_parents(mlflow_runs(workdir, "tiny"))
    assert len(parents) == 1 and parents[0].data.tags["sah.sweeper"] == "basic"
    assert parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len(children) == 2


@pytest.mark.slow
def test_parallel_trials_each_get_their_own_gpu(run_app, workdir: Path) -> None:
    """hydra/launcher=gpus: two trials at once, each in a fresh process seeing one GPU (the
    GPU ids are stand-ins on this CPU machine; only CUDA_VISIBLE_DEVICES is checked)."""
    result = run_app(
        *SWEEP,
        "hydra/launcher=sah_gpus",
        "hydra.launcher.gpus=[0,1]",
        f"hydra.launcher.lock_dir={workdir / 'locks'}",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "x=interval(0,1)",
        "sleep_s=4",
        f"record_dir={workdir / 'jobs'}",
    )
    assert result.returncode == 0, tail(result)
    jobs = [json.loads(p.read_text()) for p in (workdir / "jobs").glob("*.json")]
    assert len(jobs) == 4 and len({j["pid"] for j in jobs}) == 4  # a fresh process per job
    overlapping = [
        (a, b)
        for a in jobs
        for b in jobs
        if a["trial"] < b["trial"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, "no two trials ran at the same time"
    for a, b in overlapping:
        assert a["cuda_visible_devices"] != b["cuda_visible_devices"]
    assert {j["cuda_visible_devices"] for j in jobs} == {"0", "1"}
    trials = optuna_trials(storage_of(workdir, "multirun/optuna.db"), "app")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)


def test_a_completed_configuration_is_not_run_again(run_app, workdir: Path) -> None:
    """The sampler proposing a configuration the study completed gets its values back without
    a job; once every configuration of a finite space is complete, the sweep stops."""
    storage = storage_of(workdir)
    study = optuna.create_study(storage=storage, study_name="app", direction="maximize")
    space = {"y": CategoricalDistribution([1, 2])}
    study.add_trial(create_trial(params={"y": 1}, distributions=space, value=0.25))
    study.enqueue_trial({"y": 1})  # the next trial proposes the configuration of trial 0
    result = run_app(
        *SWEEP,
        f"hydra.sweeper.storage={storage}",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=20",
        "y=choice(1,2)",
    )
    assert result.returncode == 0, tail(result)

    trials = optuna_trials(storage, "app")
    assert trials[1].user_attrs["sah.reused_from"] == 0 and trials[1].value == 0.25
    assert "trial 1: y=1 was completed by trial 0; its values reused, no job run" in result.stderr
    ran = [t for t in trials if "sah.reused_from" not in t.user_attrs and t.number > 0]
    assert [t.params["y"] for t in ran] == [2]  # the one configuration not done yet, run once
    assert all(t.params["y"] == 1 for t in trials[1:] if t not in ran)
    assert "all 2 configurations of the search space are complete" in result.stderr
    children, _ = children_and_parents(mlflow_runs(workdir, "tiny"))
    assert [c.data.tags["optuna.trial_number"] for c in children] == [str(ran[0].number)]
