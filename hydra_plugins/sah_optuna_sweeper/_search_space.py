"""Hydra's sweep syntax turned into Optuna distributions.

``choice(a, b, ...)``      categorical over the listed values
``glob(*)``                categorical over a config group's options
``range(start, stop[, step])``  the values the basic sweeper would run: ``stop`` is **excluded**,
                           as in Python's ``range`` (``range(1, 5)`` is 1, 2, 3, 4); ints give
                           an IntDistribution, any float a stepped FloatDistribution. (The
                           official plugin includes ``stop``; sah keeps one meaning for both
                           sweepers.) ``shuffle(range(...))`` is categorical.
``interval(low, high)``    continuous FloatDistribution with **both bounds included**
``int(interval(low, high))``  IntDistribution, both bounds included
``tag(log, interval(...))``   sampled on a log scale (also ``tag(log, int(interval(...)))`` and
                           ``tag(log, range(a, b))`` with step 1)
anything else              a fixed value passed to every trial
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    Glob,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sah.errors import ConfigError


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep varies (name -> distribution) and what it passes unchanged to every trial."""

    distributions: dict[str, BaseDistribution]
    # Override prefix per searched name: "" for `key`, "+" or "++" to add a key.
    prefixes: dict[str, str]
    fixed: list[str]
    # The config key to name in errors: hydra.sweeper.params.<name>, or <name> when the sweep
    # came from the command line.
    origins: dict[str, str] = field(default_factory=dict)

    def where(self, name: str) -> str:
        return self.origins.get(name, f"hydra.sweeper.params.{name}")

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """Hydra overrides for one trial: the fixed ones, then each sampled value."""
        sampled = [
            f"{self.prefixes.get(name, '')}{name}={format_value(value)}"
            for name, value in params.items()
        ]
        return [*self.fixed, *sampled]


def format_value(value: Any) -> str:
    """A sampled value as Hydra override text (categorical strings arrive already encoded)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _where(key: str, source: str) -> str:
    return f"hydra.sweeper.params.{key}" if source == "params" else key


def distribution(override: Override, source: str = "params") -> BaseDistribution | None:
    """The distribution of a sweep override, or None when it is a plain value."""
    if not override.is_sweep_override():
        return None
    key = override.get_key_element().lstrip("+~")
    value = override.value()
    where = _where(key, source)
    if isinstance(value, ChoiceSweep | Glob) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise ConfigError(where, f"{override.input_line!r} has no values", "list some")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        return _range(value, where)
    if isinstance(value, IntervalSweep):
        return _interval(value, where)
    raise ConfigError(where, f"{override.input_line!r} is not a sweep the Optuna sweeper knows")


def _range(value: RangeSweep, where: str) -> BaseDistribution:
    start, stop, step = value.start, value.stop, value.step
    if step == 0 or start is None or stop is None:
        raise ConfigError(where, "range needs a start, a stop and a non-zero step")
    count = math.ceil((stop - start) / step)
    if count <= 0:
        raise ConfigError(
            where, f"range({start}, {stop}, {step}) is empty (stop is excluded)", "widen it"
        )
    last = start + step * (count - 1)
    low, high, step = (start, last, step) if step > 0 else (last, start, -step)
    log = "log" in value.tags
    if all(isinstance(v, int) for v in (start, stop, value.step)):
        if log and step != 1:
            raise ConfigError(where, "tag(log, range(...)) needs step 1", "use int(interval(...))")
        return IntDistribution(int(low), int(high), step=1 if log else int(step), log=log)
    if log:
        raise ConfigError(where, "a float range cannot be log-scaled", "use tag(log, interval())")
    high = round(low + step * round((high - low) / step), 12)
    return FloatDistribution(float(low), float(high), step=float(step))


def _interval(value: IntervalSweep, where: str) -> BaseDistribution:
    low, high = value.start, value.end
    if low is None or high is None or low > high:
        raise ConfigError(where, f"interval({low}, {high}) needs low <= high")
    log = "log" in value.tags
    if log and low <= 0:
        raise ConfigError(where, f"tag(log, interval({low}, {high})) needs low > 0")
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def build_search_space(
    params: dict[str, str] | None, arguments: list[str], parser: OverridesParser
) -> SearchSpace:
    """Merge ``hydra.sweeper.params`` with the command line's overrides (which win)."""
    by_key: dict[str, tuple[Override, str]] = {}
    for key, text in (params or {}).items():
        line = f"{key}={text}"
        try:
            (override,) = parser.parse_overrides([line])
        except Exception as err:
            raise ConfigError(
                f"hydra.sweeper.params.{key}", f"cannot parse {text!r}: {err}"
            ) from err
        by_key[override.get_key_element()] = (override, "params")
    for override in parser.parse_overrides(arguments):
        by_key[override.get_key_element()] = (override, "command line")

    distributions: dict[str, BaseDistribution] = {}
    prefixes: dict[str, str] = {}
    fixed: list[str] = []
    origins: dict[str, str] = {}
    for key_element, (override, source) in by_key.items():
        dist = distribution(override, source)
        if dist is None:
            fixed.append(override.input_line or f"{key_element}={override.value()}")
            continue
        if key_element.startswith("~"):
            raise ConfigError(_where(key_element, source), "a deletion cannot be swept")
        name = key_element.lstrip("+")
        prefixes[name] = key_element[: len(key_element) - len(name)]
        distributions[name] = dist
        origins[name] = _where(name, source)
    return SearchSpace(distributions, prefixes, fixed, origins)


def probe_values(dist: BaseDistribution, is_group: bool) -> list[Any]:
    """Values worth composing once to validate a searched key: every option of a config group
    (a misspelt option fails only when chosen), else the low end."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices) if is_group else list(dist.choices[:1])
    if isinstance(dist, IntDistribution | FloatDistribution):
        return [dist.low]
    return []
