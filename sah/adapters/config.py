"""What an adapter run asks for, validated once so every later step can trust it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


class AdapterError(ValueError):
    """A bad adapter request: unknown method, bad rank, a target or layer that cannot be adapted.

    Subclasses ``ValueError`` (not ``sah.errors.SahError``) so that ``sah.adapters`` stays
    importable on its own; the message names the config key or the layer.
    """


class AdapterWarning(UserWarning):
    """Something about an adapter request worth knowing that does not stop it."""


LORA_METHODS = ("lora_c", "conv_lora", "cp_lora")
DORA_METHODS = ("dora_c", "conv_dora", "cp_dora")
BASELINE_METHODS = ("full", "none")
METHODS = LORA_METHODS + DORA_METHODS + BASELINE_METHODS

# A DoRA method takes its update dW from the LoRA method with the same factorisation.
DORA_BASE = {"dora_c": "lora_c", "conv_dora": "conv_lora", "cp_dora": "cp_lora"}


@dataclass
class AdapterConfig:
    """One adapter setting: ``method`` and ``rank`` pick the update, ``target`` the layers.

    The same class is the ``adapter`` config group's schema (``sah.cli.schema`` registers it),
    so its fields are the config keys (``adapter.rank``, ``adapter.target``, ...) and its
    defaults every ``conf/adapter/*.yaml``'s; Hydra builds it and ``__post_init__`` checks it.
    ``alpha=None`` means ``alpha = rank`` (scale 1, or ``sqrt(rank)`` with ``rslora``).
    ``target`` is a module-group name the model declares (``module_groups()``), ``"all"``, a
    regular expression searched in module names, or a list of these (their union).
    ``dropout`` drops the input of the update branch while training only.
    ``fold_norm``: an adapted conv applies the frozen BatchNorm that comes right after it
    in an ``nn.Sequential`` itself while unmerged (same outputs, a cheaper step; ``normfold``).
    For ``method`` ``"full"`` and ``"none"`` the rank is ignored: ``None``, or a positive
    integer like every other method's (a sweep over methods sets one for all of them).

    ``alpha``, ``target`` and ``dropout`` are annotated ``Any`` for the config system only:
    a structured config would turn ``adapter.alpha=16`` into ``16.0`` (``float``) and cannot
    hold ``str | list[str]``; ``__post_init__`` checks them instead. Fields are in the order
    the config prints them.
    """

    method: str
    rank: int | None = 4
    alpha: Any = None  # float | None
    target: Any = "all"  # str | Sequence[str]
    rslora: bool = False
    train_norm: bool = False
    detach_norm: bool = True
    dropout: Any = 0.0  # float in [0, 1)
    fold_norm: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AdapterError(
                f"adapter.method: unknown method {self.method!r}; "
                f"choose one of {', '.join(METHODS)}"
            )
        # A baseline has no rank (``None``) or ignores the one a sweep sets; a rank given is
        # still checked, so that a typo is not tagged onto a run.
        no_rank = self.method in BASELINE_METHODS and self.rank is None
        if not no_rank and (
            isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0
        ):
            raise AdapterError(
                f"adapter.rank: must be a positive integer, got {self.rank!r}"
                + (f" ({self.method} ignores it)" if self.method in BASELINE_METHODS else "")
            )
        if (
            self.method not in BASELINE_METHODS
            and self.alpha is not None
            and not (
                isinstance(self.alpha, (int, float))
                and not isinstance(self.alpha, bool)
                and math.isfinite(self.alpha)
            )
        ):
            raise AdapterError(f"adapter.alpha: must be a finite number, got {self.alpha!r}")
        if not (
            isinstance(self.dropout, (int, float))
            and not isinstance(self.dropout, bool)
            and 0.0 <= self.dropout < 1.0
        ):
            raise AdapterError(f"adapter.dropout: must be in [0, 1), got {self.dropout!r}")
        targets = [self.target] if isinstance(self.target, str) else list(_sequence(self.target))
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise AdapterError(
                f"adapter.target: expected a group name, a regex or a list of them, "
                f"got {self.target!r}"
            )
        self.target = targets[0] if len(targets) == 1 else tuple(targets)

    @property
    def target_list(self) -> list[str]:
        return [self.target] if isinstance(self.target, str) else list(self.target)

    @property
    def layer_rank(self) -> int:
        """The rank of an adapted layer's update (only baselines may have no rank)."""
        if self.rank is None:
            raise AdapterError(f"adapter.rank: {self.method} needs a positive integer rank")
        return self.rank

    @property
    def is_dora(self) -> bool:
        return self.method in DORA_METHODS

    @property
    def is_baseline(self) -> bool:
        return self.method in BASELINE_METHODS

    @property
    def factorisation(self) -> str:
        """The LoRA method whose dW this method uses (``conv_dora`` -> ``conv_lora``)."""
        return DORA_BASE.get(self.method, self.method)

    @property
    def effective_alpha(self) -> float:
        return float((self.rank or 0) if self.alpha is None else self.alpha)

    @property
    def scale(self) -> float:
        """``s = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA)."""
        if self.is_baseline:
            return 0.0
        rank = self.rank or 1  # set: only baselines may have none
        root = math.sqrt(rank) if self.rslora else rank
        return self.effective_alpha / root

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = self.target_list
        data["alpha"] = None if self.is_baseline else self.effective_alpha
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """The inverse of ``to_dict``; also reads checkpoints written when the field was
        called ``targets``."""
        data = dict(data)
        if "targets" in data and "target" not in data:
            data["target"] = data.pop("targets")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _sequence(value: Any) -> Sequence[Any]:
    """A list or tuple of targets as it is; anything else as a one-item list (then refused)."""
    return value if isinstance(value, (list, tuple)) else [value]
