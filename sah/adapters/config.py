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
    """One adapter setting: ``method`` and ``rank`` pick the update, ``targets`` the layers.

    ``alpha=None`` means ``alpha = rank`` (scale 1, or ``sqrt(rank)`` with ``rslora``).
    ``targets`` is a module-group name the model declares (``module_groups()``), ``"all"``, a
    regular expression searched in module names, or a list of these (their union).
    ``dropout`` drops the input of the update branch while training only.
    ``fold_norm``: an adapted conv applies the frozen BatchNorm that comes right after it
    in an ``nn.Sequential`` itself while unmerged (same outputs, a cheaper step; ``normfold``).
    For ``method`` ``"full"`` and ``"none"`` the rank is ignored: ``None``, or a positive
    integer like every other method's (a sweep over methods sets one for all of them).
    """

    method: str
    rank: int | None
    alpha: float | None = None
    rslora: bool = False
    targets: str | Sequence[str] = "all"
    train_norm: bool = False
    detach_norm: bool = True
    dropout: float = 0.0
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
            and not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha))
        ):
            raise AdapterError(f"adapter.alpha: must be a finite number, got {self.alpha!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise AdapterError(f"adapter.dropout: must be in [0, 1), got {self.dropout!r}")
        targets = [self.targets] if isinstance(self.targets, str) else list(self.targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise AdapterError(
                f"adapter.targets: expected a group name, a regex or a list of them, "
                f"got {self.targets!r}"
            )
        self.targets = targets[0] if len(targets) == 1 else tuple(targets)

    @property
    def target_list(self) -> list[str]:
        return [self.targets] if isinstance(self.targets, str) else list(self.targets)

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
        data["targets"] = self.target_list
        data["alpha"] = None if self.is_baseline else self.effective_alpha
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)
