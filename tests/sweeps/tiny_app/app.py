"""A tiny Hydra app shaped like sah-train, to test sweeps without training a network.

Like sah-train it logs one MLflow run per job (nested under ``tracking.parent_run_id``, tagged
with the Optuna trial number) and returns ``optimized_metric`` (or ``optimized_metrics``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sah.tracking import get_client, resolve_experiment


def score(x: float, y: int) -> float:
    return 1.0 - (x - 0.3) ** 2 - 0.01 * y


@hydra.main(version_base="1.3", config_path="conf", config_name="tiny")
def main(cfg: DictConfig) -> float | list[float]:
    started = time.time()
    if cfg.sleep_s:
        time.sleep(float(cfg.sleep_s))
    if cfg.record_dir:
        record = {
            "pid": os.getpid(),
            "start": started,
            "end": time.time(),
            "x": cfg.x,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "trial": cfg.optuna.trial_number,
        }
        Path(cfg.record_dir).mkdir(parents=True, exist_ok=True)
        Path(cfg.record_dir, f"{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(record))
    if cfg.fail_when is not None and float(cfg.x) >= float(cfg.fail_when):
        raise RuntimeError(f"injected failure at x={cfg.x}")
    client = get_client(cfg.tracking.uri)
    experiment_id = resolve_experiment(
        client, cfg.tracking.experiment, cfg.tracking.artifact_location
    )
    tags = {"method": "tiny", "rank": str(cfg.y), "target": "all", "fold": "0"}
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = str(cfg.tracking.parent_run_id)
    if cfg.optuna.trial_number is not None:
        tags["optuna.trial_number"] = str(cfg.optuna.trial_number)
        tags["optuna.study_name"] = str(cfg.optuna.study_name)
    # As sah-train names its runs: what differs, then -t<trial> for an Optuna trial.
    name = f"tiny-x{cfg.x}-y{cfg.y}"
    if cfg.optuna.trial_number is not None:
        name += f"-t{cfg.optuna.trial_number}"
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    value = score(float(cfg.x), int(cfg.y))
    client.log_metric(run.info.run_id, "val/score", value)
    client.log_param(run.info.run_id, "trainable_params", int(cfg.y) * 100)
    client.set_terminated(run.info.run_id)
    if cfg.optimized_metrics:
        return [value, float(cfg.y) * 100]
    return value


def broken_search_space(cfg: DictConfig, trial: object) -> None:
    """A custom search space with a bug: it crashes the sweep itself (not one trial)."""
    raise RuntimeError("bug in the custom search space")


if __name__ == "__main__":
    main()
