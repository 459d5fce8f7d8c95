"""Bad sweep input fails before any trial starts, with one line naming the key."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import create_trial
from sweep_helpers import mlflow_runs, tail

from hydra_plugins.sah_optuna_sweeper._study import SPACE_ATTR, check_matches, space_json
from sah.errors import ConfigError

SAH_TRAIN = [sys.executable, "-m", "sah.cli.train"]
SWEEP = ["-m", "hydra/sweeper=sah_optuna", "hydra.sweeper.n_trials=2"]


def assert_stopped_before_any_trial(result, workdir: Path, *needles: str) -> None:
    assert result.returncode == 2, tail(result)
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("sah-train: config "), tail(result)
    for needle in needles:
        assert needle in message, message
    assert not list(workdir.glob("multirun/*/*/0")), "a trial started"
    assert not [
        r for r in mlflow_runs(workdir, "sah-segmentation") if "optuna.trial_number" in r.data.tags
    ]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("adapter.rnak=choice(2,4)", "'adapter.rnak'"),
        pytest.param(
            "hydra.sweeper.params={adapter.rnak:'choice(2,4)'}",
            "'hydra.sweeper.params.adapter.rnak'",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "adapter=choice(lora_c,no_such_method)",
            "group 'adapter' has no option 'no_such_method'",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_key_the_config_lacks(run_app, workdir: Path, override: str, key: str) -> None:
    result = run_app(*SWEEP, override, command=SAH_TRAIN)
    assert_stopped_before_any_trial(result, workdir, key)


@pytest.mark.parametrize(
    "storage",
    [
        "sqlite:////no/such/folder/optuna.db",
        pytest.param("postgresql://nobody@127.0.0.1:9/none", marks=pytest.mark.slow),
    ],
)
def test_a_storage_that_cannot_be_reached(run_app, workdir: Path, storage: str) -> None:
    result = run_app(
        *SWEEP, f"hydra.sweeper.storage={storage}", "adapter.rank=choice(2,4)", command=SAH_TRAIN
    )
    assert_stopped_before_any_trial(result, workdir, "'hydra.sweeper.storage'", "cannot open")


def test_a_study_with_other_distributions(run_app, workdir: Path) -> None:
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="ranks", direction="maximize")
    study.add_trial(
        create_trial(
            params={"adapter.rank": 8},
            distributions={"adapter.rank": IntDistribution(1, 64)},
            value=0.5,
        )
    )
    result = run_app(
        *SWEEP,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=ranks",
        "adapter.rank=choice(2,4)",
        command=SAH_TRAIN,
    )
    assert_stopped_before_any_trial(
        result, workdir, "'hydra.sweeper.params'", "other parameter distributions"
    )
    assert len(study.get_trials()) == 1


def test_a_recorded_search_space_must_match() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(SPACE_ATTR, space_json({"a": IntDistribution(1, 4)}))
    check_matches(study, {"a": IntDistribution(1, 4)}, ["maximize"])
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.params"):
        check_matches(study, {"a": IntDistribution(1, 8)}, ["maximize"])
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.direction"):
        check_matches(study, {"a": IntDistribution(1, 4)}, ["minimize"])


@pytest.mark.parametrize("sweeper", ["sah_optuna", pytest.param("basic", marks=pytest.mark.slow)])
def test_a_parent_run_that_does_not_exist(run_app, workdir: Path, sweeper: str) -> None:
    args = [*SWEEP, "adapter.rank=choice(2,4)"] if sweeper == "sah_optuna" else ["-m", "fold=0,1"]
    result = run_app(*args, "tracking.parent_run_id=0123456789abcdef", command=SAH_TRAIN)
    assert_stopped_before_any_trial(result, workdir, "'tracking.parent_run_id'", "0123456789abcdef")


@pytest.mark.slow
def test_two_objectives_need_two_returned_values(run_app, workdir: Path) -> None:
    result = run_app(
        *SWEEP,
        "hydra.sweeper.direction=[maximize,minimize]",
        "adapter.rank=choice(2,4)",
        command=SAH_TRAIN,
    )
    assert_stopped_before_any_trial(result, workdir, "optimized_metrics")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimized_metric=test/dice", "'optimized_metric'"),
        pytest.param(
            "optimized_metrics=[val/dice,test/dice]", "'optimized_metrics'", marks=pytest.mark.slow
        ),
    ],
)
def test_a_test_metric_cannot_choose(run_app, workdir: Path, override: str, key: str) -> None:
    """Only val/* (and trainable_params) may be returned to a sweeper: test patients never
    choose anything."""
    direction = ["hydra.sweeper.direction=[maximize,maximize]"] if "metrics" in override else []
    result = run_app(*SWEEP, *direction, override, "adapter.rank=choice(2,4)", command=SAH_TRAIN)
    assert_stopped_before_any_trial(result, workdir, key, "'test/dice'", "test patients")
