"""A thin convolution as one matrix product per batch plus shifted adds ("taps").

For a convolution with few output channels ``R`` (the in-stage of a low-rank update), CPU
convolution kernels run far below peak. Written per kernel tap ``t``,
``z = sum_t shift_t(W_t x)``: one batched product ``u = [W_1; ...; W_T] x`` reads the input
once, and the shifts are strided slices. Its weight gradient is the same in reverse: stack
the output gradient shifted to every tap, one product with ``x^T``. Both honour stride,
dilation, zero padding and groups of the base layer (not transposed convolutions).
"""

from __future__ import annotations

import itertools

import torch


def _tap_slices(length, kernel, stride, dilation, padding, out_length):
    """Per tap of one axis: (output slice, input slice) of the positions that tap touches."""
    pairs = []
    for a in range(kernel):
        offset = a * dilation - padding
        lo = -(offset // stride) if offset < 0 else 0  # first q with q * stride + offset >= 0
        hi = min(out_length - 1, (length - 1 - offset) // stride)
        if hi < lo:
            pairs.append(None)
            continue
        start = lo * stride + offset
        stop = hi * stride + offset + 1
        pairs.append((slice(lo, hi + 1), slice(start, stop, stride)))
    return pairs


def output_shape(x_shape, kernel, stride, dilation, padding) -> tuple[int, ...]:
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, d, p in zip(x_shape, kernel, stride, dilation, padding, strict=True)
    )


def _taps(spatial, geo, out_spatial):
    per_axis = [
        _tap_slices(n, k, s, d, p, o)
        for n, k, s, d, p, o in zip(
            spatial, geo.kernel, geo.stride, geo.dilation, geo.padding, out_spatial, strict=True
        )
    ]
    for t, combo in enumerate(itertools.product(*per_axis)):
        if any(c is None for c in combo):
            continue
        out_index = tuple(c[0] for c in combo)
        in_index = tuple(c[1] for c in combo)
        yield t, out_index, in_index


CHUNK_BYTES = 4 << 20  # the product of a chunk of taps should stay in cache


def _chunks(items: list, per_tap_bytes: int) -> list[list]:
    size = max(1, CHUNK_BYTES // max(per_tap_bytes, 1))
    return [items[i : i + size] for i in range(0, len(items), size)]


def taps_conv(x: torch.Tensor, weight: torch.Tensor, geo) -> torch.Tensor:
    """``conv(x, weight)`` with the geometry ``geo`` (weight ``(g * R, c_in/g, k...)``)."""
    n, c_in = x.shape[:2]
    spatial = x.shape[2:]
    g = geo.groups
    r = weight.shape[0] // g
    out_spatial = output_shape(spatial, geo.kernel, geo.stride, geo.dilation, geo.padding)
    w = weight.reshape(g, r, c_in // g, -1).permute(0, 3, 1, 2)  # (g, T, R, i)
    z = x.new_zeros(n, g, r, *out_spatial)
    taps = list(_taps(spatial, geo, out_spatial))
    chunks = _chunks(taps, g * r * spatial.numel() * x.element_size())
    for j in range(n):  # per sample and chunk of taps: the products stay in cache
        xj = x[j].reshape(g, c_in // g, -1)
        for chunk in chunks:
            index = [t for t, _, _ in chunk]
            wc = w[:, index].reshape(g, len(index) * r, -1)
            u = torch.bmm(wc, xj).reshape(g, len(index), r, *spatial)
            for k, (_, out_index, in_index) in enumerate(chunk):
                z[(j, slice(None), slice(None), *out_index)] += u[
                    (slice(None), k, slice(None), *in_index)
                ]
    return z.reshape(n, g * r, *out_spatial)


def taps_weight_grad(x: torch.Tensor, grad_z: torch.Tensor, geo) -> torch.Tensor:
    """``d(sum(grad_z * conv(x, W))) / dW`` -> ``(g * R, c_in/g, k...)``."""
    n, c_in = x.shape[:2]
    spatial = x.shape[2:]
    g = geo.groups
    r = grad_z.shape[1] // g
    out_spatial = grad_z.shape[2:]
    n_taps = 1
    for k in geo.kernel:
        n_taps *= k
    grad_z = grad_z.reshape(n, g, r, *out_spatial)
    grad = x.new_zeros(g, n_taps, r, c_in // g)
    taps = list(_taps(spatial, geo, out_spatial))
    chunks = _chunks(taps, g * r * spatial.numel() * x.element_size())
    # Each tap writes the same region for every sample: zero the buffers once.
    buffers = [x.new_zeros(g, len(chunk), r, *spatial) for chunk in chunks]
    for j in range(n):
        xt = x[j].reshape(g, c_in // g, -1).transpose(1, 2)
        for chunk, shifted in zip(chunks, buffers, strict=True):
            for k, (_, out_index, in_index) in enumerate(chunk):
                shifted[(slice(None), k, slice(None), *in_index)] = grad_z[
                    (j, slice(None), slice(None), *out_index)
                ]
            prod = torch.bmm(shifted.reshape(g, len(chunk) * r, -1), xt)
            index = [t for t, _, _ in chunk]
            grad[:, index] += prod.reshape(g, len(chunk), r, -1)
    return grad.permute(0, 2, 3, 1).reshape(g * r, c_in // g, *geo.kernel)
