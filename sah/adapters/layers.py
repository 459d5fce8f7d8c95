"""``AdapterLayer``: a frozen base layer plus a trainable update, computing the layer with W'.

LoRA family: ``W' = W0 + s dW``; DoRA family: ``W' = m V / ||V||`` with ``V = W0 + s dW``
(docs/ADAPTERS.md). One class serves ``nn.Linear``, ``nn.Conv{1,2,3}d`` and
``nn.ConvTranspose{1,2,3}d``: the ``Geometry`` of the base layer carries what differs.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from .config import AdapterConfig, AdapterError
from .factors import Factorisation, factorisation_class
from .geometry import Geometry, geometry_of
from .lowrank import LowRankConv, LowRankPlan, group_mix
from .normfold import (
    FoldedBatchNorm1d,
    FoldedBatchNorm2d,
    FoldedBatchNorm3d,
    fold,
    norm_affine,
    unfold,
)
from .pathcost import choose_path, input_ratio, taps_apply

COMPUTE_PATHS = ("auto", "weight", "lowrank", "lowrank_taps")


class AdapterLayer(nn.Module):
    """Wraps ``base_layer`` (kept, frozen, under that name) with the update of ``config``.

    ``compute_path`` picks how a training step is evaluated: ``"weight"`` builds W' and runs
    one op under plain autograd; ``"lowrank"`` runs the same op forward but takes the
    factors' gradients from thin activations (``lowrank.LowRankConv``), ``"lowrank_taps"``
    the same with the thin convolutions done per kernel tap (``taps``); ``"auto"``
    (default) chooses per layer with the cost model of ``pathcost``. All compute the same
    outputs and gradients; inference and merged layers always run the single op with W'.
    """

    # Set through ``__dict__`` (see ``__init__``), so declared here for the type checker.
    folded_norm: FoldedBatchNorm1d | FoldedBatchNorm2d | FoldedBatchNorm3d | None

    def __init__(self, base_layer: nn.Module, name: str, config: AdapterConfig) -> None:
        super().__init__()
        geometry = geometry_of(base_layer, name)
        if config.is_baseline:
            raise AdapterError(f"method {config.method!r} adds no adapter layer")
        # geometry_of admits exactly nn.Linear, nn.ConvNd and nn.ConvTransposeNd.
        self.base_layer = cast("nn.Linear | _ConvNd", base_layer)
        self.geometry: Geometry = geometry
        self.layer_name = name
        self.method = config.method
        self.rank = config.layer_rank
        self.scale = config.scale
        self.detach_norm = config.detach_norm
        weight = self.base_layer.weight
        cls = factorisation_class(config.factorisation, geometry)
        self.factors: Factorisation = cls(
            geometry, config.layer_rank, dtype=weight.dtype, device=weight.device
        )
        if config.is_dora:
            self.magnitude = nn.Parameter(geometry.channel_norm(weight.detach()).clone())
        else:
            self.register_parameter("magnitude", None)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.merged = False
        self._merged_backup: torch.Tensor | None = None
        self.compute_path = "auto"
        # The frozen BatchNorm right after this layer, applied here while unmerged (normfold);
        # a plain attribute, not a submodule: the norm stays where it is in the model.
        self.__dict__["folded_norm"] = None

    # -- the update --------------------------------------------------------------------------
    @property
    def is_dora(self) -> bool:
        return self.magnitude is not None

    def num_adapter_parameters(self) -> int:
        """The docs/ADAPTERS.md count: factors, plus one magnitude per output channel for DoRA."""
        count = type(self.factors).count(self.geometry, self.rank)
        return count + (self.geometry.c_out if self.is_dora else 0)

    def adapter_parameters(self) -> list[nn.Parameter]:
        params = list(self.factors.parameters())
        return params + ([self.magnitude] if self.is_dora else [])

    def get_delta_weight(self) -> torch.Tensor:
        """``s dW`` in the base weight's layout."""
        return self.geometry.from_canonical(self.factors.delta()) * self.scale

    def _base_weight(self) -> torch.Tensor:
        if self.merged:
            assert self._merged_backup is not None
            return self._merged_backup
        return self.base_layer.weight

    def _channel_scale(self, direction: torch.Tensor) -> torch.Tensor:
        """``m / ||V||`` per output channel; the norm is a constant unless ``detach_norm=False``."""
        norm = self.geometry.channel_norm(direction)
        if self.detach_norm:
            norm = norm.detach()
        # A zero output channel (V = 0 there) gives a zero row instead of 0/0.
        norm = torch.where(norm == 0, torch.ones_like(norm), norm)
        return self.magnitude / norm

    def effective_weight(self) -> torch.Tensor:
        """``W'`` (differentiable in the adapter parameters)."""
        direction = self._base_weight() + self.get_delta_weight()
        if not self.is_dora:
            return direction
        return self.geometry.scale_channels(direction, self._channel_scale(direction))

    # -- merge -------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (zero inference overhead); keeps W0 to unmerge."""
        if self.merged:
            return
        merged = self.effective_weight()
        self._merged_backup = self.base_layer.weight.detach().clone()
        self.base_layer.weight.copy_(merged)
        self.merged = True
        self._sync_norm()

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore W0 bit for bit."""
        if not self.merged:
            return
        assert self._merged_backup is not None
        self.base_layer.weight.copy_(self._merged_backup)
        self._merged_backup = None
        self.merged = False
        self._sync_norm()

    # -- a folded norm -----------------------------------------------------------------------
    def fold_norm(self, norm: nn.Module) -> None:
        """Apply ``norm``, the frozen BatchNorm after this layer, here while unmerged."""
        fold(norm)
        self.__dict__["folded_norm"] = norm
        self._sync_norm()

    def unfold_norm(self) -> None:
        """Give the folded norm back its own forward and class."""
        norm = self.folded_norm
        if norm is not None:
            unfold(norm)
            self.__dict__["folded_norm"] = None

    def _sync_norm(self) -> None:
        if self.folded_norm is not None:
            self.folded_norm.folded = not self.merged

    def _output_affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The folded norm's per-channel ``(a, b)``, for the unmerged forward."""
        return None if self.folded_norm is None else norm_affine(self.folded_norm)

    def _fold_affine(self, weight, bias, affine):
        """Weight and bias of ``a * op(x, weight, bias) + b``."""
        a, b = affine
        weight = self.geometry.scale_channels(weight, a)
        return weight, b if bias is None else torch.addcmul(b, a, bias)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        output_padding = self._call_output_padding(x, args, kwargs)
        affine = self._output_affine()
        if self.training and not isinstance(self.dropout, nn.Identity):
            out = self._forward_dropout(x, output_padding)
            if affine is None:
                return out
            shape = (-1,) + (1,) * self.geometry.dims
            return torch.addcmul(affine[1].reshape(shape), out, affine[0].reshape(shape))
        path = self._training_path(x)
        if path != "weight":
            return self._forward_lowrank(x, output_padding, path == "lowrank_taps", affine)
        weight, bias = self.effective_weight(), self.base_layer.bias
        if affine is not None:
            weight, bias = self._fold_affine(weight, bias, affine)
        return self._base_op(x, weight, output_padding, bias)

    def _call_output_padding(self, x, args, kwargs) -> tuple[int, ...] | None:
        geo = self.geometry
        if not geo.transposed:
            if args or kwargs:
                raise TypeError(f"{type(self.base_layer).__name__} takes only the input")
            return None
        output_size = kwargs.pop("output_size", args[0] if args else None)
        if output_size is None:
            return None
        base = cast(_ConvTransposeNd, self.base_layer)
        # torch annotates these list[int] (for TorchScript); its own forward passes the same
        # tuples and ignores the same errors
        return tuple(
            base._output_padding(
                x,
                output_size,
                base.stride,  # type: ignore[arg-type]
                base.padding,  # type: ignore[arg-type]
                base.kernel_size,  # type: ignore[arg-type]
                geo.dims,
                base.dilation,  # type: ignore[arg-type]
            )
        )

    def _base_op(self, x, weight, output_padding, bias) -> torch.Tensor:
        """The base layer's own computation with another weight and bias."""
        base = cast(_ConvNd, self.base_layer)  # only the convolutions below use it
        geo = self.geometry
        if geo.kind == "linear":
            return F.linear(x, weight, bias)
        if not geo.transposed:
            return base._conv_forward(x, weight, bias)
        conv_transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[geo.dims - 1]
        return conv_transpose(
            x,
            weight,
            bias,
            base.stride,
            cast("tuple[int, ...]", base.padding),  # never a string on a transposed conv
            base.output_padding if output_padding is None else output_padding,
            base.groups,
            base.dilation,
        )

    def _training_path(self, x: torch.Tensor) -> str:
        """``weight``, ``lowrank`` or ``lowrank_taps`` for a step that needs factor gradients."""
        if not torch.is_grad_enabled() or self.base_layer.weight.requires_grad:
            return "weight"
        if not any(p.requires_grad for p in self.adapter_parameters()):
            return "weight"
        if self.compute_path == "auto":
            positions = x.numel() // max(self.geometry.c_in, 1)
            if self.geometry.kind != "linear":  # output positions
                positions = round(positions / input_ratio(self))
            return choose_path(self, positions)
        if self.compute_path == "lowrank_taps" and not taps_apply(self):
            return "lowrank"
        return self.compute_path

    def _to_batched(self, x: torch.Tensor):
        """Flatten a linear layer's leading dims; add the batch axis of an unbatched conv input."""
        geo = self.geometry
        if geo.kind == "linear":
            lead = x.shape[:-1]
            return x.reshape(-1, geo.c_in), lambda y: y.reshape(*lead, geo.c_out)
        if x.dim() == geo.dims + 1:
            return x.unsqueeze(0), lambda y: y.squeeze(0)
        return x, lambda y: y

    def _forward_lowrank(self, x, output_padding, taps: bool, affine) -> torch.Tensor:
        geo = self.geometry
        x, restore = self._to_batched(x)
        padded = geo.pad_input(x)
        with torch.no_grad():
            direction = self.base_layer.weight + self.get_delta_weight()
        channel_scale = None
        if self.is_dora:
            source = direction
            if not self.detach_norm:  # the exact norm gradient flows through the factors
                source = self.base_layer.weight + self.get_delta_weight()
            channel_scale = self._channel_scale(source)
        bias = self.base_layer.bias
        if affine is not None:
            with torch.no_grad():
                direction, bias = self._fold_affine(direction, bias, affine)
        out_scale = None if affine is None else affine[0]
        plan = LowRankPlan(geo, self.factors, self.scale, output_padding, taps, out_scale)
        out = LowRankConv.apply(
            padded,
            direction,
            bias,
            channel_scale,
            self.factors.out_factor(),
            plan,
            *self.factors.in_stage_params(),
        )
        return restore(out)

    def _forward_dropout(self, x, output_padding) -> torch.Tensor:
        """Training with dropout: the update branch sees ``dropout(x)``, the base branch ``x``."""
        geo = self.geometry
        base = self.base_layer
        base_out = self._base_op(x, base.weight, output_padding, base.bias)
        dropped, restore = self._to_batched(self.dropout(x))
        z = self.factors.in_stage(
            geo.pad_input(dropped), self.factors.in_stage_params(), output_padding
        )
        update = restore(group_mix(self.factors.out_factor(), z)) * self.scale
        if not self.is_dora:
            return base_out + update
        scale = self._channel_scale(base.weight + self.get_delta_weight())
        shape = (-1,) + (1,) * geo.dims
        bias = 0 if base.bias is None else base.bias.reshape(shape)
        return scale.reshape(shape) * (base_out - bias + update) + bias

    def extra_repr(self) -> str:
        state = ", merged" if self.merged else ""
        return f"method={self.method}, rank={self.rank}, scale={self.scale:g}{state}"
