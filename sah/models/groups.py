"""Resolve a model's named module groups to parameters (for freezing and for tests)."""

from __future__ import annotations

from typing import Protocol, cast

from torch import nn

from sah.errors import ConfigError


class GroupedModel(Protocol):
    """A model that names its module groups (docs/CONVENTIONS.md)."""

    def module_groups(self) -> dict[str, list[str]]: ...


def group_parameter_names(model: nn.Module, group: str) -> set[str]:
    """Names of the parameters under the modules of ``group`` (``all``: every parameter)."""
    if group == "all":
        return {name for name, _ in model.named_parameters()}
    groups = cast(GroupedModel, model).module_groups() if hasattr(model, "module_groups") else {}
    if group not in groups:
        raise ConfigError(
            "adapter.target",
            f"{type(model).__name__} has no module group '{group}'",
            f"use one of {sorted({*groups, 'all'})}",
        )
    prefixes = tuple(f"{module}." for module in groups[group])
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}
