"""What a finished sweep leaves behind: best trial or Pareto front, all trials, in files and on
the MLflow parent run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.sah_optuna_sweeper._study import INTERRUPTED_ATTR, REUSED_ATTR
from sah.tracking.studies import display_url
from sah.tracking.sweep_runs import format_values

log = logging.getLogger("sah.sweep")
# Trial user attrs worth a column of trials.csv; the others (liveness marks, the overrides with
# the storage URL, the sweeping process) are the sweeper's own bookkeeping.
PUBLIC_ATTRS = {
    "mlflow_run_id": "mlflow_run_id",
    REUSED_ATTR: "reused_from_trial",
    "sah.retry_of": "retry_of_trial",
    INTERRUPTED_ATTR: "interrupted",
}


def metric_names(study: optuna.Study) -> list[str]:
    """The names of the study's values (``val/dice``), ``objective <i>`` where none was set."""
    names = study.metric_names
    return list(names) if names else [f"objective {i}" for i in range(len(study.directions))]


def _trial_record(trial: FrozenTrial, names: list[str]) -> dict[str, Any]:
    return {
        "number": trial.number,
        "values": dict(zip(names, trial.values or [], strict=False)),
        "params": dict(trial.params),
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
    }


def summary(study: optuna.Study, storage_url: str) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    names = metric_names(study)
    out: dict[str, Any] = {
        "name": study.study_name,
        "storage": display_url(storage_url),
        "metrics": names,
        "directions": [d.name.lower() for d in study.directions],
        "n_trials": len(trials),
        "trials_by_state": {k: v for k, v in counts.items() if v},
    }
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return out
    if len(study.directions) == 1:
        best = study.best_trial
        out.update(
            best_trial=best.number,
            best_metric=names[0],
            best_value=best.value,
            best_params=dict(best.params),
            best_mlflow_run_id=best.user_attrs.get("mlflow_run_id"),
        )
    else:
        out["pareto_front"] = [_trial_record(t, names) for t in study.best_trials]
    return out


def pareto_table(study: optuna.Study, path: Path) -> Path:
    import pandas as pd

    names = metric_names(study)
    rows = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        row: dict[str, Any] = {"number": trial.number}
        row.update(dict(zip(names, trial.values, strict=False)))
        row.update(trial.params)
        row["mlflow_run_id"] = trial.user_attrs.get("mlflow_run_id")
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def trials_table(study: optuna.Study, path: Path) -> Path:
    """Every trial: number, state, one column per metric and per parameter, times, its MLflow
    run, and whether it was a retry or reused an earlier trial's values."""
    import pandas as pd

    names = metric_names(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
        row.update(dict(zip(names, trial.values or [None] * len(names), strict=False)))
        row.update(trial.params)
        row["datetime_start"] = trial.datetime_start
        row["datetime_complete"] = trial.datetime_complete
        if trial.datetime_start and trial.datetime_complete:
            row["duration_s"] = (trial.datetime_complete - trial.datetime_start).total_seconds()
        else:
            row["duration_s"] = None
        for attr, column in PUBLIC_ATTRS.items():
            row[column] = trial.user_attrs.get(attr)
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("reused_from_trial", "retry_of_trial"):  # trial numbers, not 0.0
        table[column] = table[column].astype("Int64")
    table.to_csv(path, index=False)
    return path


def pareto_plot(study: optuna.Study, path: Path, names: list[str] | None = None) -> Path | None:
    """Objective 0 against objective 1 of every complete trial, the front highlighted."""
    if len(study.directions) != 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    names = names or ["objective 0", "objective 1"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([t.values[1] for t in done], [t.values[0] for t in done], c="0.6", label="trials")
    ax.plot(
        [t.values[1] for t in front],
        [t.values[0] for t in front],
        "o-",
        c="C3",
        label="Pareto front",
    )
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    if all(t.values[1] > 0 for t in done):
        ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(study: optuna.Study, sweep_dir: Path, storage_url: str, parent: Any) -> None:
    """optimization_results.yaml, trials.csv and (multi-objective) pareto_front.csv/.png in the
    sweep folder, all logged to the parent run with the best trial as tags."""
    info = summary(study, storage_url)
    files = [sweep_dir / "optimization_results.yaml"]
    files[0].write_text(yaml.safe_dump(info, sort_keys=False))
    files.append(trials_table(study, sweep_dir / "trials.csv"))
    if len(study.directions) > 1 and "pareto_front" in info:
        files.append(pareto_table(study, sweep_dir / "pareto_front.csv"))
        plot = pareto_plot(study, sweep_dir / "pareto_front.png", metric_names(study))
        if plot is not None:
            files.append(plot)
    if "best_trial" in info:
        sampled = " ".join(f"{k}={v}" for k, v in info["best_params"].items())
        shown = format_values(info["metrics"], [info["best_value"]])
        log.info("best trial %d: %s -> %s", info["best_trial"], sampled, shown)
    elif "pareto_front" in info:
        log.info("Pareto front: trials %s", [t["number"] for t in info["pareto_front"]])
    if parent is None:
        return
    from sah.tracking import get_client
    from sah.tracking.sweep_runs import log_files

    try:
        log_files(parent.uri, parent.run_id, files)
        client = get_client(parent.uri)
        client.set_tag(parent.run_id, "optuna.n_trials", str(info["n_trials"]))
        if "best_trial" in info:
            client.set_tag(parent.run_id, "optuna.best_trial", str(info["best_trial"]))
            client.set_tag(parent.run_id, "optuna.best_params", str(info["best_params"]))
            client.log_metric(parent.run_id, "best_value", float(info["best_value"]))
            # Named by its metric too, e.g. best/val/dice, so the runs table says what it is.
            client.log_metric(parent.run_id, f"best/{info['best_metric']}", info["best_value"])
            client.set_tag(parent.run_id, "optuna.best_metric", info["best_metric"])
            if info.get("best_mlflow_run_id"):
                client.set_tag(parent.run_id, "optuna.best_run_id", info["best_mlflow_run_id"])
        if "pareto_front" in info:
            numbers = ",".join(str(t["number"]) for t in info["pareto_front"])
            client.set_tag(parent.run_id, "optuna.pareto_trials", numbers)
    except Exception as err:
        log.warning("could not log the sweep's results to MLflow: %s", err)
