"""Convolution geometry and kernels shared by Conv and ConvTranspose (no op registrations).

:class:`ConvGeometry` is the one place where pads, strides, dilations and groups are resolved;
:func:`conv_forward`, :func:`conv_input_grad` and :func:`conv_weight_grad` do all the arithmetic
(see :mod:`onnxviz.backends.numpy.ops.conv` for how the ops use them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from numpy.lib.stride_tricks import as_strided

from onnxviz.errors import OnnxvizError

Array = np.ndarray

_BLOCK_BYTES = 6 << 20
_ROW_BYTES = 512 << 10


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ConvGeometry:
    """Resolved per-axis geometry of one convolution, as seen from the convolution side.

    ``in_size`` is the spatial size of the convolution's input (for ConvTranspose: of its output)
    and ``out_size`` of its output (for ConvTranspose: of its input). Output position ``o`` of axis
    ``i`` reads padded input positions ``o * strides[i] + k * dilations[i]``, ``k < kernel[i]``,
    i.e. unpadded positions shifted by ``-pads_begin[i]``.
    """

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    group: int
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]

    @property
    def reach(self) -> tuple[int, ...]:
        """Per axis, one past the last padded position any window reads."""
        return tuple(
            (o - 1) * s + (k - 1) * d + 1
            for o, s, k, d in zip(self.out_size, self.strides, self.kernel, self.dilations)
        )

    @property
    def pointwise(self) -> bool:
        """A 1x1 kernel whose windows stay inside the unpadded input: a plain matmul."""
        return (all(k == 1 for k in self.kernel) and not any(self.pads_begin)
                and all(r <= n for r, n in zip(self.reach, self.in_size)))

    def tap_slices(self, tap: Sequence[int]) -> tuple[slice, ...]:
        """Slices of the padded input read by kernel tap ``tap`` across all output positions."""
        return tuple(
            slice(k * d, k * d + (o - 1) * s + 1, s)
            for k, d, o, s in zip(tap, self.dilations, self.out_size, self.strides)
        )


def _ints(values: Optional[Sequence[int]], n: int, default: int) -> tuple[int, ...]:
    return tuple(int(v) for v in values) if values else (default,) * n


def _same_split(total: int, mode: str) -> tuple[int, int]:
    """(begin, end) of ``total`` padding: the odd one at the end for SAME_UPPER, else at the start."""
    small = total // 2
    return (small, total - small) if mode == "SAME_UPPER" else (total - small, small)


def conv_geometry(
    x_shape: Sequence[int], w_shape: Sequence[int], kernel_shape: Optional[Sequence[int]],
    strides: Optional[Sequence[int]], dilations: Optional[Sequence[int]],
    pads: Optional[Sequence[int]], auto_pad: object, group: int,
) -> ConvGeometry:
    """The geometry of Conv (opsets 1 and 11: auto_pad NOTSET / SAME_UPPER / SAME_LOWER / VALID)."""
    nd = len(x_shape) - 2
    kernel = _ints(kernel_shape, nd, 0) if kernel_shape else tuple(int(k) for k in w_shape[2:])
    st, dil = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    size = tuple(int(v) for v in x_shape[2:])
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    mode = _text(auto_pad)
    if x_shape[1] != w_shape[1] * group or w_shape[0] % group:
        raise OnnxvizError(
            f"Conv: input {tuple(x_shape)} and weight {tuple(w_shape)} do not fit group={group}",
            hint="the input channels must equal weight.shape[1] * group",
        )
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-n // s) for n, s in zip(size, st)]
        split = [_same_split(max(0, (o - 1) * s + k - n), mode) for o, s, k, n in zip(out, st, span, size)]
        begin, end = [b for b, _ in split], [e for _, e in split]
    else:
        p = _ints(pads, 2 * nd, 0) if mode != "VALID" else (0,) * (2 * nd)
        begin, end = list(p[:nd]), list(p[nd:])
        out = [(n + b + e - k) // s + 1 for n, b, e, k, s in zip(size, begin, end, span, st)]
    return ConvGeometry(kernel, st, dil, tuple(begin), tuple(end), int(group), size, tuple(out))


def conv_transpose_geometry(
    x_shape: Sequence[int], w_shape: Sequence[int], kernel_shape: Optional[Sequence[int]],
    strides: Optional[Sequence[int]], dilations: Optional[Sequence[int]],
    pads: Optional[Sequence[int]], auto_pad: object, group: int,
    output_padding: Optional[Sequence[int]], output_shape: Optional[Sequence[int]],
) -> ConvGeometry:
    """The geometry of ConvTranspose, seen as the adjoint of a Conv from its output to its input.

    With ``output_shape`` (or SAME_*, which asks for ``input * stride``) the total padding is
    ``stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1 - output_shape``, split as
    the spec says: ``total // 2`` at the start for SAME_UPPER, ``total - total // 2`` at the start
    otherwise. A negative total (a requested output larger than the kernel can reach) is clamped to
    0 as onnxruntime does; the positions no window reaches are then zero (plus the bias).
    """
    nd = len(x_shape) - 2
    kernel = _ints(kernel_shape, nd, 0) if kernel_shape else tuple(int(k) for k in w_shape[2:])
    st, dil = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    adj = _ints(output_padding, nd, 0)
    size = tuple(int(v) for v in x_shape[2:])
    if x_shape[1] != w_shape[0] or w_shape[0] % group:
        raise OnnxvizError(
            f"ConvTranspose: input {tuple(x_shape)} and weight {tuple(w_shape)} do not fit "
            f"group={group}",
            hint="the input channels must equal weight.shape[0]",
        )
    natural = [s * (n - 1) + a + (k - 1) * d + 1 for s, n, a, k, d in zip(st, size, adj, kernel, dil)]
    mode = _text(auto_pad)
    if output_shape or mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [int(v) for v in output_shape[-nd:]] if output_shape else [n * s for n, s in zip(size, st)]
        split = [_same_split(max(0, f - o), mode) for f, o in zip(natural, out)]
        begin, end = [b for b, _ in split], [e for _, e in split]
    else:
        p = _ints(pads, 2 * nd, 0) if mode != "VALID" else (0,) * (2 * nd)
        begin, end = list(p[:nd]), list(p[nd:])
        out = [f - b - e for f, b, e in zip(natural, begin, end)]
    return ConvGeometry(kernel, st, dil, tuple(begin), tuple(end), int(group), tuple(out), size)


def _pad_input(x: Array, g: ConvGeometry, spare_row: bool = False) -> Array:
    """``x`` padded at the start by ``pads_begin`` and at the end up to the windows' reach
    (plus one more row on the first spatial axis with ``spare_row``)."""
    ends = [max(0, r - b - n) for r, b, n in zip(g.reach, g.pads_begin, g.in_size)]
    ends[0] += int(spare_row)
    if not any(g.pads_begin) and not any(ends):
        return x
    widths = [(0, 0), (0, 0), *zip(g.pads_begin, ends)]
    return np.pad(x, widths)


def _crop_input(buf: Array, g: ConvGeometry) -> Array:
    """The unpadded part of a padded-input buffer (zeros where the buffer is too short)."""
    short = [max(0, b + n - L) for b, n, L in zip(g.pads_begin, g.in_size, buf.shape[2:])]
    if any(short):
        buf = np.pad(buf, [(0, 0), (0, 0), *((0, s) for s in short)])
    crop = tuple(slice(b, b + n) for b, n in zip(g.pads_begin, g.in_size))
    return np.ascontiguousarray(buf[(slice(None), slice(None), *crop)])


def _windows(xp: Array, g: ConvGeometry) -> Array:
    """Read-only view ``(N, G, C/G, *kernel, *out)`` of the windows of a padded input."""
    n, c = xp.shape[:2]
    grouped = xp.reshape(n, g.group, c // g.group, *xp.shape[2:])
    sp = grouped.strides[3:]
    strides = (*grouped.strides[:3], *(a * d for a, d in zip(sp, g.dilations)),
               *(a * s for a, s in zip(sp, g.strides)))
    return as_strided(grouped, (*grouped.shape[:3], *g.kernel, *g.out_size), strides, writeable=False)


def _block(n: int, bytes_per_item: int) -> int:
    return max(1, min(n, _BLOCK_BYTES // max(1, bytes_per_item)))


def _depthwise(c: int, m: int, g: ConvGeometry) -> bool:
    """One input and one output channel per group: a per-tap broadcast multiply-add."""
    return g.group == c == m and c > 1


def _wide(g: ConvGeometry, padded: Sequence[int]) -> Optional[tuple[list[int], int]]:
    """At stride 1, per tap the offset into the flattened padded map, and the "wide" output length.

    The wide output covers the output rows at the padded map's width (cropped afterwards), so each
    tap reads one contiguous slice and numpy's inner loops run over whole maps instead of rows.
    """
    if any(s != 1 for s in g.strides):
        return None
    step = [math.prod(padded[i + 1:]) for i in range(len(padded))]
    offsets = [sum(k * d * st for k, d, st in zip(tap, g.dilations, step))
               for tap in np.ndindex(*g.kernel)]
    return offsets, g.out_size[0] * step[0]


def _row_block(row_bytes: int) -> int:
    return max(1, _ROW_BYTES // max(1, row_bytes))


def _depthwise_forward(x: Array, w: Array, g: ConvGeometry) -> Array:
    """Depthwise convolution: per kernel tap a broadcast multiply-add, over blocks of (batch,
    channel) rows that stay in cache (a 8x144x56x56 map does not)."""
    n, c = x.shape[:2]
    stride1 = all(s == 1 for s in g.strides)
    xp = _pad_input(x, g, spare_row=stride1)  # the spare row keeps the last tap's slice inside
    wide = _wide(g, (xp.shape[2] - 1, *xp.shape[3:]))
    if wide is not None:
        src = xp.reshape(n * c, -1)
        index = [(slice(o, o + wide[1]),) for o in wide[0]]
        shape: tuple[int, ...] = (wide[1],)
    else:
        src = xp.reshape(n * c, *xp.shape[2:])
        index = [g.tap_slices(tap) for tap in np.ndindex(*g.kernel)]
        shape = g.out_size
    wrows = np.tile(w.reshape(c, -1), (n, 1))
    y = np.empty((n * c, *shape), dtype=np.result_type(xp, w))
    step = _row_block(src[0].nbytes)
    tmp = np.empty((min(step, n * c), *shape), dtype=y.dtype)
    for r0 in range(0, n * c, step):
        yb, rows = y[r0:r0 + step], slice(r0, r0 + step)
        tb = tmp[:len(yb)]
        for t, idx in enumerate(index):
            wt = wrows[rows, t].reshape(-1, *(1,) * len(shape))
            np.multiply(src[(rows, *idx)], wt, out=yb if t == 0 else tb)
            if t:
                yb += tb
    if wide is None:
        return y.reshape(n, c, *g.out_size)
    full = y.reshape(n, c, g.out_size[0], *xp.shape[3:])
    return np.ascontiguousarray(full[(slice(None), slice(None), slice(None),
                                      *(slice(0, o) for o in g.out_size[1:]))])


def _depthwise_input_grad(gy: Array, w: Array, g: ConvGeometry, buf: Array) -> Array:
    """The adjoint of :func:`_depthwise_forward`: per tap a scatter-add into the padded ``buf``
    (which has a spare first-axis row at stride 1)."""
    n, c = gy.shape[:2]
    wide = _wide(g, (buf.shape[2] - 1, *buf.shape[3:]))
    if wide is not None:
        widths = [(0, 0), (0, 0), (0, 0), *((0, p - o) for p, o in zip(buf.shape[3:], g.out_size[1:]))]
        src = np.pad(gy, widths).reshape(n * c, -1)
        dst = buf.reshape(n * c, -1)
        index = [(slice(o, o + wide[1]),) for o in wide[0]]
    else:
        src, dst = gy.reshape(n * c, *g.out_size), buf.reshape(n * c, *buf.shape[2:])
        index = [g.tap_slices(tap) for tap in np.ndindex(*g.kernel)]
    wrows = np.tile(w.reshape(c, -1), (n, 1))
    step = _row_block(dst[0].nbytes)
    tmp = np.empty((min(step, n * c), *src.shape[1:]), dtype=buf.dtype)
    for r0 in range(0, n * c, step):
        rows = slice(r0, r0 + step)
        sb = src[rows]
        tb = tmp[:len(sb)]
        for t, idx in enumerate(index):
            np.multiply(sb, wrows[rows, t].reshape(-1, *(1,) * (src.ndim - 1)), out=tb)
            dst[(rows, *idx)] += tb
    return buf


def _strided_input(x: Array, g: ConvGeometry) -> Array:
    """The input positions a pointwise (1x1, unpadded) convolution reads."""
    picks = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(g.out_size, g.strides))
    return x[(slice(None), slice(None), *picks)]


def conv_forward(x: Array, w: Array, g: ConvGeometry) -> Array:
    """``y[n, m] = sum_{c, k} w[m, c, k] * xpad[n, group(m) c, o * s + k * d]`` without bias."""
    n, c = x.shape[:2]
    m, grp = w.shape[0], g.group
    cg, mg, out_n = c // grp, m // grp, math.prod(g.out_size)
    if g.pointwise:
        xs = _strided_input(x, g).reshape(n, grp, cg, out_n)
        return np.matmul(w.reshape(grp, mg, cg), xs).reshape(n, m, *g.out_size)
    if _depthwise(c, m, g):
        return _depthwise_forward(x, w, g)
    xp = _pad_input(x, g)
    win = _windows(xp, g)
    ck = cg * math.prod(g.kernel)
    w2 = w.reshape(grp, mg, ck)
    y = np.empty((n, grp, mg, out_n), dtype=np.result_type(x, w))
    nb = _block(n, grp * ck * out_n * x.itemsize)
    cols = np.empty((nb, *win.shape[1:]), dtype=x.dtype)
    for n0 in range(0, n, nb):
        k = min(nb, n - n0)
        np.copyto(cols[:k], win[n0:n0 + k])
        np.matmul(w2, cols[:k].reshape(k, grp, ck, out_n), out=y[n0:n0 + k])
    return y.reshape(n, m, *g.out_size)


def conv_input_grad(gy: Array, w: Array, g: ConvGeometry, c: int) -> Array:
    """The adjoint of :func:`conv_forward` in ``x`` (``c`` input channels): ConvTranspose."""
    n, m, grp = gy.shape[0], w.shape[0], g.group
    cg, mg, out_n = c // grp, m // grp, math.prod(g.out_size)
    dtype = np.result_type(gy, w)
    if g.pointwise:
        wt = w.reshape(grp, mg, cg).transpose(0, 2, 1)
        gxs = np.matmul(wt, gy.reshape(n, grp, mg, out_n)).reshape(n, c, *g.out_size)
        if all(s == 1 for s in g.strides) and g.out_size == g.in_size:
            return gxs
        gx = np.zeros((n, c, *g.in_size), dtype=dtype)
        _strided_input(gx, g)[...] = gxs
        return gx
    shape = [max(b + s, r) for b, s, r in zip(g.pads_begin, g.in_size, g.reach)]
    if _depthwise(c, m, g):
        shape[0] += int(all(s == 1 for s in g.strides))
        buf = np.zeros((n, c, *shape), dtype=dtype)
        return _crop_input(_depthwise_input_grad(gy, w, g, buf), g)
    buf = np.zeros((n, c, *shape), dtype=dtype)
    taps = math.prod(g.kernel)
    # A transposed view: BLAS reads it as is (copying a 512x512x3x3 weight costs more than the GEMM).
    wt = w.reshape(grp, mg, cg * taps).transpose(0, 2, 1)
    gbuf = buf.reshape(n, grp, cg, *shape)
    nb = _block(n, grp * taps * cg * out_n * gy.itemsize)
    gcols = np.empty((nb, grp, cg * taps, out_n), dtype=dtype)
    for n0 in range(0, n, nb):
        k = min(nb, n - n0)
        np.matmul(wt, gy[n0:n0 + k].reshape(k, grp, mg, out_n), out=gcols[:k])
        per_tap = gcols[:k].reshape(k, grp, cg, taps, *g.out_size)
        for t, tap in enumerate(np.ndindex(*g.kernel)):
            gbuf[(slice(n0, n0 + k), slice(None), slice(None), *g.tap_slices(tap))] += per_tap[:, :, :, t]
    return _crop_input(buf, g)


def conv_weight_grad(x: Array, gy: Array, g: ConvGeometry, w_shape: Sequence[int]) -> Array:
    """The gradient of :func:`conv_forward` in ``w``: ``sum_{n, o} gy[n, m, o] * window[n, c, k, o]``."""
    n, c = x.shape[:2]
    m, grp = gy.shape[1], g.group
    cg, mg, out_n = c // grp, m // grp, math.prod(g.out_size)
    if g.pointwise:
        xs = _strided_input(x, g).reshape(n, grp, cg, out_n)
        gw = np.matmul(gy.reshape(n, grp, mg, out_n), xs.transpose(0, 1, 3, 2)).sum(axis=0)
        return gw.reshape(w_shape)
    xp = _pad_input(x, g)
    if _depthwise(c, m, g):
        gw = np.empty(w_shape, dtype=np.result_type(x, gy))
        flat = gy.reshape(n, c, out_n)
        for tap in np.ndindex(*g.kernel):
            view = xp[(slice(None), slice(None), *g.tap_slices(tap))]
            gw[(slice(None), 0, *tap)] = np.einsum("nco,nco->c", flat, view.reshape(n, c, out_n))
        return gw
    win = _windows(xp, g)
    ck = cg * math.prod(g.kernel)
    gw = np.zeros((grp, mg, ck), dtype=np.result_type(x, gy))
    nb = _block(n, grp * ck * out_n * x.itemsize)
    cols = np.empty((nb, *win.shape[1:]), dtype=x.dtype)
    for n0 in range(0, n, nb):
        k = min(nb, n - n0)
        np.copyto(cols[:k], win[n0:n0 + k])
        flat = cols[:k].reshape(k, grp, ck, out_n).transpose(0, 1, 3, 2)
        gw += np.matmul(gy[n0:n0 + k].reshape(k, grp, mg, out_n), flat).sum(axis=0)
    return gw.reshape(w_shape)


def bias_shape(b: Array, nd: int) -> Array:
    return b.reshape(-1, *(1,) * nd)


def bias_grad(gy: Array) -> Array:
    return gy.sum(axis=(0, *range(2, gy.ndim)))
