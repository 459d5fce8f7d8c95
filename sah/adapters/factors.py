"""The factorisations of the weight update dW (docs/ADAPTERS.md, "The LoRA family").

Each factorisation holds its trainable factors and builds dW in the canonical layout
``(g, c_out/g, c_in/g, k1, ..., kd)``, one independent factorisation per group. It also
exposes dW as two stages acting on activations, which the low-rank gradient path uses:

- ``in_stage(x)``: an operation with the base layer's geometry from ``c_in`` to ``g * R``
  channels (``R`` per group);
- ``out_factor()``: a per-group channel mix ``(g, c_out/g, R)``,

so that ``layer(x, W=dW) == out_factor . in_stage(x)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .geometry import Geometry
from .lowrank import group_mix

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


class Factorisation(nn.Module):
    """Base class: trainable factors of dW for one layer (rank ``r`` per group)."""

    zero_factor: str = ""  # the factor touching the output axis, zero at initialisation
    dense_stage = False  # in_stage is one conv with ``stage_weight(params)``

    def __init__(
        self,
        geometry: Geometry,
        rank: int,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        """``dtype`` and ``device`` are those of the factors a subclass creates."""
        super().__init__()
        self.geometry = geometry
        self.rank = rank

    def delta(self) -> torch.Tensor:
        """dW in canonical layout ``(g, c_out/g, c_in/g, k...)``."""
        raise NotImplementedError

    def out_factor(self) -> torch.Tensor:
        """The per-group output mix ``(g, c_out/g, R)``."""
        raise NotImplementedError

    def in_stage_params(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def in_stage(self, x: torch.Tensor, params: list[torch.Tensor], output_padding=None):
        """``(n, c_in, ...)`` (already padded) -> ``(n, g * R, ...)`` with the base geometry."""
        raise NotImplementedError

    @property
    def stage_rank(self) -> int:
        """``R``: channels per group between the two stages."""
        raise NotImplementedError

    @staticmethod
    def count(geometry: Geometry, rank: int) -> int:
        """Number of trainable parameters (docs/ADAPTERS.md, "Trainable-parameter counts")."""
        raise NotImplementedError


def _kaiming_uniform(t: torch.Tensor, fan_in: int) -> None:
    # LoRA's choice for A: kaiming_uniform_(a=sqrt(5)) on an (r, fan_in) matrix.
    gain = math.sqrt(2.0 / (1 + 5.0))
    bound = math.sqrt(3.0) * gain / math.sqrt(fan_in)
    with torch.no_grad():
        t.uniform_(-bound, bound)


class LowRankFactors(Factorisation):
    """``conv_lora`` (and classic LoRA for ``nn.Linear``): dW as ``c_out x (c_in k...)`` = ``B A``.

    As layers: a conv ``c_in -> r`` with the base geometry (``A``), then a 1x1 mix ``r -> c_out``.
    """

    zero_factor = "B"
    dense_stage = True

    def __init__(self, geometry: Geometry, rank: int, dtype=None, device=None) -> None:
        super().__init__(geometry, rank)
        g, o, i = geometry.groups, geometry.out_per_group, geometry.in_per_group
        fan_in = i * geometry.kernel_numel
        kw = {"dtype": dtype, "device": device}
        self.A = nn.Parameter(torch.empty(g, rank, fan_in, **kw))
        self.B = nn.Parameter(torch.zeros(g, o, rank, **kw))
        _kaiming_uniform(self.A, fan_in)

    @staticmethod
    def count(geometry: Geometry, rank: int) -> int:
        g = geometry
        return rank * (g.c_in * g.kernel_numel + g.c_out)

    @property
    def stage_rank(self) -> int:
        return self.rank

    def delta(self) -> torch.Tensor:
        return torch.matmul(self.B, self.A).reshape(self.geometry.canonical_shape)

    def out_factor(self) -> torch.Tensor:
        return self.B

    def in_stage_params(self) -> list[torch.Tensor]:
        return [self.A]

    def stage_weight(self, params: list[torch.Tensor]) -> torch.Tensor:
        """``A`` as the weight of a layer with the base geometry and ``g * r`` outputs."""
        (a,) = params
        geo = self.geometry
        g, r, i = geo.groups, self.rank, geo.in_per_group
        if geo.kind == "linear":
            return a.reshape(r, i)
        if geo.transposed:  # layout (c_in, r per group, k...)
            return a.reshape(g, r, i, *geo.kernel).transpose(1, 2).reshape(g * i, r, *geo.kernel)
        return a.reshape(g * r, i, *geo.kernel)

    def in_stage(self, x, params, output_padding=None):
        geo = self.geometry
        (a,) = params
        if geo.kind == "linear" or geo.is_pointwise:
            return group_mix(a.reshape(geo.groups, self.rank, geo.in_per_group), x)
        return geo.apply(x, self.stage_weight(params), None, output_padding)


class LoraCFactors(Factorisation):
    """``lora_c`` (LoRA-C, loralib's ConvLoRA shapes): dW viewed as ``(c_out k1) x (c_in k2...)``.

    The view groups each output channel with the first kernel axis and each input channel with
    the remaining kernel axes, ``dW[o, i, a, b...] = (B A)[(o, a), (i, b...)]``, with
    ``B: (c_out k1) x (r k1)`` and ``A: (r k1) x (c_in k2 ... kd)``. (loralib reshapes the
    product in memory order instead; the shapes and the parameter count are the same.)
    """

    zero_factor = "B"
    dense_stage = True

    def __init__(self, geometry: Geometry, rank: int, dtype=None, device=None) -> None:
        super().__init__(geometry, rank)
        g, o, i = geometry.groups, geometry.out_per_group, geometry.in_per_group
        k1 = geometry.kernel[0]
        rest = geometry.kernel_numel // k1
        kw = {"dtype": dtype, "device": device}
        self.A = nn.Parameter(torch.empty(g, rank * k1, i * rest, **kw))
        self.B = nn.Parameter(torch.zeros(g, o * k1, rank * k1, **kw))
        _kaiming_uniform(self.A, i * rest)

    @staticmethod
    def count(geometry: Geometry, rank: int) -> int:
        g = geometry
        k1 = g.kernel[0]
        rest = g.kernel_numel // k1
        return rank * k1 * (g.c_out * k1 + g.c_in * rest)

    @property
    def stage_rank(self) -> int:
        return self.rank * self.geometry.kernel[0] ** 2

    def delta(self) -> torch.Tensor:
        geo = self.geometry
        g, o, i, k = geo.groups, geo.out_per_group, geo.in_per_group, geo.kernel
        product = torch.matmul(self.B, self.A)  # (g, o k1, i k_rest)
        return product.reshape(g, o, k[0], i, *k[1:]).transpose(2, 3)

    def out_factor(self) -> torch.Tensor:
        # Intermediate channel (rho, a): B_eff[o, (rho, a)] = B[(o, a), rho].
        geo = self.geometry
        g, o, k1 = geo.groups, geo.out_per_group, geo.kernel[0]
        b = self.B.reshape(g, o, k1, self.rank * k1).transpose(2, 3)
        return b.reshape(g, o, self.stage_rank)

    def in_stage_params(self) -> list[torch.Tensor]:
        return [self.A]

    def stage_weight(self, params: list[torch.Tensor]) -> torch.Tensor:
        # A_eff[(rho, a'), i, a, rest] = delta(a, a') A[rho, (i, rest)]: rank r k1 per kernel row.
        geo = self.geometry
        (a,) = params
        g, i, k = geo.groups, geo.in_per_group, geo.kernel
        rk1 = self.rank * k[0]
        eye = torch.eye(k[0], dtype=a.dtype, device=a.device)
        a = a.reshape(g, rk1, i, *k[1:])
        a_eff = torch.einsum("gri...,pa->grpia...", a, eye).reshape(g, self.stage_rank, i, *k)
        if geo.transposed:
            return a_eff.transpose(1, 2).reshape(g * i, self.stage_rank, *k)
        return a_eff.reshape(g * self.stage_rank, i, *k)

    def in_stage(self, x, params, output_padding=None):
        return self.geometry.apply(x, self.stage_weight(params), None, output_padding)


class CPFactors(Factorisation):
    """``cp_lora``: CP decomposition of the update, ``dW = sum_j u_j (x) v_j (x) k1_j (x) ...``.

    ``U: c_out x r`` (zero at start), ``V: c_in x r``, one ``k_i x r`` factor per spatial axis.
    On activations it is separable: project the input channels with ``V``, run a depthwise
    conv with kernels ``k1_j (x) k2_j ...`` and the base geometry, mix with ``U``.
    """

    zero_factor = "U"

    def __init__(self, geometry: Geometry, rank: int, dtype=None, device=None) -> None:
        super().__init__(geometry, rank)
        g, o, i = geometry.groups, geometry.out_per_group, geometry.in_per_group
        kw = {"dtype": dtype, "device": device}
        self.U = nn.Parameter(torch.zeros(g, o, rank, **kw))
        # Scaled normals: the product v (x) k1 (x) ... has std 1/sqrt(c_in/g * k1 * ...),
        # the scale of a Kaiming-initialised kernel.
        self.V = nn.Parameter(torch.randn(g, i, rank, **kw) / math.sqrt(i))
        self.K = nn.ParameterList(
            nn.Parameter(torch.randn(g, k, rank, **kw) / math.sqrt(k)) for k in geometry.kernel
        )

    @staticmethod
    def count(geometry: Geometry, rank: int) -> int:
        g = geometry
        return rank * (g.c_out + g.c_in + g.groups * sum(g.kernel))

    @property
    def stage_rank(self) -> int:
        return self.rank

    def delta(self) -> torch.Tensor:
        letters = "abcd"[: self.geometry.dims]
        spec = ",".join(["gor", "gir", *[f"g{c}r" for c in letters]]) + f"->goi{letters}"
        return torch.einsum(spec, self.U, self.V, *self.K)

    def out_factor(self) -> torch.Tensor:
        return self.U

    def in_stage_params(self) -> list[torch.Tensor]:
        return [self.V, *self.K]

    def in_stage(self, x, params, output_padding=None):
        geo = self.geometry
        v, *ks = params
        g, r = geo.groups, self.rank
        projected = group_mix(v.transpose(1, 2), x)  # (n, g r, ...)
        letters = "abcd"[: geo.dims]
        spec = ",".join(f"g{c}r" for c in letters) + f"->gr{letters}"
        depthwise = torch.einsum(spec, *ks).reshape(g * r, 1, *geo.kernel)
        n = projected.shape[0]
        if projected.device.type == "cpu" and projected.dim() in _CHANNELS_LAST:
            # CPU depthwise convs run ~5x faster channels-last, and a single channel takes a
            # slow path: fold the batch into the channels (one image, n * g * r maps).
            folded = projected.reshape(1, n * g * r, *projected.shape[2:])
            folded = folded.contiguous(memory_format=_CHANNELS_LAST[projected.dim()])
            weight = depthwise.repeat(n, *([1] * (depthwise.dim() - 1)))
            out = geo.apply(folded, weight, None, output_padding, groups=n * g * r)
            return out.reshape(n, g * r, *out.shape[2:])
        return geo.apply(projected, depthwise, None, output_padding, groups=g * r)


FACTORISATIONS: dict[str, type[Factorisation]] = {
    "conv_lora": LowRankFactors,
    "lora_c": LoraCFactors,
    "cp_lora": CPFactors,
}


def factorisation_class(method: str, geometry: Geometry) -> type[Factorisation]:
    """The dispatch table; every LoRA method is classic LoRA on ``nn.Linear``."""
    if geometry.kind == "linear":
        return LowRankFactors
    return FACTORISATIONS[method]
