"""Hydra sweep syntax -> Optuna distributions, bounds as documented in _search_space."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.sah_optuna_sweeper._core import grid_space, interpret
from hydra_plugins.sah_optuna_sweeper._search_space import build_search_space
from hydra_plugins.sah_optuna_sweeper._study import parse_directions
from sah.errors import ConfigError

PARSER = OverridesParser.create()


def space(**params: str):
    return build_search_space(params, [], PARSER)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("choice(1, 2, 4)", CategoricalDistribution([1, 2, 4])),
        ("choice(all, decoder)", CategoricalDistribution(["all", "decoder"])),
        # stop excluded, as under the basic sweeper
        ("range(1, 5)", IntDistribution(1, 4)),
        ("range(0, 10, 3)", IntDistribution(0, 9, step=3)),
        ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        # interval bounds included
        ("interval(0.0, 1.0)", FloatDistribution(0.0, 1.0)),
        ("int(interval(1, 64))", IntDistribution(1, 64)),
        ("tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("tag(log, int(interval(1, 64)))", IntDistribution(1, 64, log=True)),
        ("tag(log, range(1, 65))", IntDistribution(1, 64, log=True)),
        ("shuffle(range(1, 4))", None),
    ],
)
def test_distribution_of_each_sweep(text: str, expected) -> None:
    dist = space(a=text).distributions["a"]
    if expected is None:
        assert isinstance(dist, CategoricalDistribution)
        assert sorted(dist.choices) == [1, 2, 3]
    else:
        assert dist == expected


def test_plain_values_are_fixed_and_command_line_wins() -> None:
    result = build_search_space(
        {"a": "choice(1, 2)", "b": "7"}, ["a=interval(0.0, 1.0)", "c=x", "+d=choice(p, q)"], PARSER
    )
    assert result.distributions["a"] == FloatDistribution(0.0, 1.0)
    assert result.distributions["d"] == CategoricalDistribution(["p", "q"])
    assert result.prefixes["d"] == "+"
    assert result.fixed == ["b=7", "c=x"]
    assert result.overrides({"a": 0.5, "d": "q"}) == ["b=7", "c=x", "a=0.5", "+d=q"]


@pytest.mark.parametrize(
    "text", ["range(5, 1)", "interval(2.0, 1.0)", "tag(log, interval(0.0, 1.0))", "choice()"]
)
def test_bad_sweeps_name_their_key(text: str) -> None:
    with pytest.raises((ConfigError, Exception)) as err:
        space(**{"adapter.rank": text})
    assert "adapter.rank" in str(err.value) or "choice" in str(err.value)


def test_grid_from_choices_and_ranges() -> None:
    grid = grid_space(space(a="choice(x, y)", b="range(1, 4)", c="range(0.5, 1.0, 0.25)"))
    assert grid == {"a": ["x", "y"], "b": [1, 2, 3], "c": [0.5, 0.75]}
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.params\.d"):
        grid_space(space(d="interval(0.0, 1.0)"))


def test_directions() -> None:
    assert parse_directions("maximize") == ["maximize"]
    assert parse_directions(["maximize", "minimize"]) == ["maximize", "minimize"]
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.direction"):
        parse_directions("up")


def test_job_outcomes() -> None:
    import optuna
    from hydra.core.utils import JobReturn, JobStatus
    from optuna.trial import TrialState

    done = JobReturn(status=JobStatus.COMPLETED, _return_value=0.5)
    assert interpret(done, 1) == (TrialState.COMPLETE, [0.5], None)
    pair = JobReturn(status=JobStatus.COMPLETED, _return_value=[0.5, 1200.0])
    assert interpret(pair, 2)[:2] == (TrialState.COMPLETE, [0.5, 1200.0])
    assert interpret(done, 2)[0] == TrialState.FAIL  # one value for a two-objective study
    pruned = JobReturn(status=JobStatus.FAILED, _return_value=optuna.TrialPruned("epoch 1"))
    assert interpret(pruned, 1)[0] == TrialState.PRUNED
    crashed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("CUDA out of memory"))
    state, _, problem = interpret(crashed, 1)
    assert state == TrialState.FAIL and "out of memory" in problem
    nan = JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan"))
    assert interpret(nan, 1)[0] == TrialState.FAIL
