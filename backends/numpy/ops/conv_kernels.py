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


@dataclass(frozen=True)
class _Phases:
    """The padded input split into its stride phases (``xpad[a::s]`` per offset ``a < s``; one
    phase at stride 1), each flattened, so that every kernel tap reads one contiguous range of
    one phase: output position ``o`` of the "wide" output (rows as long as a phase's rows; the
    columns past the true output width are dropped at the end) is ``phase[offset + o]``.

    ``shape`` is a phase's spatial shape (one spare row at the end keeps the last tap's range
    inside), ``taps`` one ``(phase, offset)`` per kernel tap in row-major order, ``fills`` per
    phase the ``(phase, destination, source)`` slices that copy the input in, and ``wide`` the
    length of the wide output.
    """

    shape: tuple[int, ...]
    taps: tuple[tuple[int, int], ...]
    fills: tuple[tuple[int, tuple[slice, ...], tuple[slice, ...]], ...]
    wide: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def crop(self, rows: Array, out_size: Sequence[int]) -> Array:
        """The true outputs ``(R, *out_size)`` of wide outputs ``(R, wide)``."""
        full = rows.reshape(rows.shape[0], out_size[0], *self.shape[1:])
        return full[(slice(None), slice(None), *(slice(0, o) for o in out_size[1:]))]


def _phases(g: ConvGeometry) -> _Phases:
    st, nd = g.strides, len(g.kernel)
    padded = [max(b + size, r) for b, size, r in zip(g.pads_begin, g.in_size, g.reach)]
    q = [-(-p // s) for p, s in zip(padded, st)]
    q[0] += 1
    step = [math.prod(q[i + 1:]) for i in range(nd)]
    taps = []
    for tap in np.ndindex(*g.kernel):
        pos = [k * d for k, d in zip(tap, g.dilations)]
        phase = int(np.ravel_multi_index(tuple(p % s for p, s in zip(pos, st)), st))
        taps.append((phase, sum((p // s) * t for p, s, t in zip(pos, st, step))))
    fills = []
    for phase, offset in enumerate(np.ndindex(*st)):
        # phase position j holds padded position a + j * s, i.e. input position a + j * s - pad
        lo = [max(0, -(-(b - a) // s)) for a, s, b in zip(offset, st, g.pads_begin)]
        hi = [min(n, -(-(b + size - a) // s))
              for a, s, b, size, n in zip(offset, st, g.pads_begin, g.in_size, q)]
        if all(h > lo_ for lo_, h in zip(lo, hi)):
            src = tuple(slice(a + lo_ * s - b, a + (h - 1) * s - b + 1, s)
                        for a, s, b, lo_, h in zip(offset, st, g.pads_begin, lo, hi))
            fills.append((phase, tuple(slice(lo_, h) for lo_, h in zip(lo, hi)), src))
    return _Phases(tuple(q), tuple(taps), tuple(fills), g.out_size[0] * step[0])


def _depthwise_forward(x: Array, w: Array, g: ConvGeometry, bias: Array | None = None) -> Array:
    """Depthwise convolution: per kernel tap one broadcast multiply-add over contiguous wide rows
    of the stride phases (:class:`_Phases`), in blocks of (batch, channel) rows that stay in
    cache (an 8x144x56x56 map does not); the bias is added while the wide rows are cropped.

    Small maps with many channels (MobileNet's 384-960 channels at 14x14 and 7x7) run channels-
    last instead (:func:`_depthwise_channels_last`): numpy restarts its inner loop for every
    row of a per-row scalar product, which on 63-element rows costs more than the arithmetic.
    """
    n, c = x.shape[:2]
    ph = _phases(g)
    if ph.wide <= 8 * c:
        return _depthwise_channels_last(x, w, g, bias, ph)
    dtype = np.result_type(x, w)
    rows = n * c
    src = x.reshape(rows, *g.in_size)
    wrows = np.tile(w.reshape(c, -1).astype(dtype, copy=False), (n, 1))
    brows = None
    if bias is not None:
        brows = np.tile(bias.astype(dtype, copy=False), n).reshape(-1, *(1,) * len(g.kernel))
    y = np.empty((rows, *g.out_size), dtype=dtype)
    phases = math.prod(g.strides)
    step = _row_block((phases * ph.size + 2 * ph.wide) * np.dtype(dtype).itemsize)
    step = min(step, rows)
    buf = np.zeros((step, phases, ph.size), dtype=dtype)
    grid = buf.reshape(step, phases, *ph.shape)
    acc = np.empty((step, ph.wide), dtype=dtype)
    tmp = np.empty_like(acc)
    for r0 in range(0, rows, step):
        k = min(step, rows - r0)
        for phase, dst, sl in ph.fills:
            np.copyto(grid[(slice(0, k), phase, *dst)], src[(slice(r0, r0 + k), *sl)])
        a, t_ = acc[:k], tmp[:k]
        for t, (phase, offset) in enumerate(ph.taps):
            wt = wrows[r0:r0 + k, t:t + 1]
            np.multiply(buf[:k, phase, offset:offset + ph.wide], wt, out=a if t == 0 else t_)
            if t:
                a += t_
        valid = ph.crop(a, g.out_size)
        if brows is None:
            np.copyto(y[r0:r0 + k], valid)
        else:
            np.add(valid, brows[r0:r0 + k], out=y[r0:r0 + k])
    return y.reshape(n, c, *g.out_size)


def _depthwise_channels_last(x: Array, w: Array, g: ConvGeometry, bias: Array | None,
                             ph: _Phases) -> Array:
    """:func:`_depthwise_forward` with channels as the contiguous axis, one image at a time: a
    tap is a ``(wide, C)`` slice times the tap's ``(C,)`` weights, one long inner loop per
    position. The input is transposed on the way into the phase buffer and the output on the
    way out (with the bias added), so this only pays where rows are short."""
    n, c = x.shape[:2]
    dtype = np.result_type(x, w)
    phases = math.prod(g.strides)
    wt = np.ascontiguousarray(w.reshape(c, -1).T, dtype=dtype)  # (taps, C)
    b = None if bias is None else bias.astype(dtype, copy=False).reshape(-1, *(1,) * len(g.kernel))
    buf = np.zeros((phases, ph.size, c), dtype=dtype)
    grid = buf.reshape(phases, *ph.shape, c)
    acc = np.empty((ph.wide, c), dtype=dtype)
    tmp = np.empty_like(acc)
    y = np.empty((n, c, *g.out_size), dtype=dtype)
    for i in range(n):
        for phase, dst, sl in ph.fills:
            np.copyto(grid[(phase, *dst)], np.moveaxis(x[i][(slice(None), *sl)], 0, -1))
        for t, (phase, offset) in enumerate(ph.taps):
            np.multiply(buf[phase, offset:offset + ph.wide], wt[t], out=acc if t == 0 else tmp)
            if t:
                acc += tmp
        full = acc.reshape(g.out_size[0], *ph.shape[1:], c)
        valid = np.moveaxis(full[(slice(None), *(slice(0, o) for o in g.out_size[1:]))], -1, 0)
        if b is None:
            np.copyto(y[i], valid)
        else:
            np.add(valid, b, out=y[i])
    return y


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


def _use_row_products(n: int, c: int, m: int, g: ConvGeometry) -> bool:
    """Whether :func:`_row_products` should beat im2col, by the memory traffic each adds to the
    same arithmetic: per image, im2col pads the input and copies ``taps * C`` rows of the
    output's length, row products copy ``taps / k0 * C`` rows of the padded input's height and
    accumulate ``k0 - 1`` partial outputs of ``M`` rows; once per call they reorder the weight.
    Near-ties go to row products (no ``np.pad``, fewer calls). Single-thread float32 on
    ResNet-50, VGG-19 and DenseNet-121 layers this picks the faster path but for ties within 5%
    (e.g. 128 -> 32 at 56x56: 4.9 -> 3.4 ms, 64 -> 64 at 56x56: 3.5 -> 2.9 ms; 512 -> 512 at
    7x7 stays im2col: 3.8 ms against 5.5)."""
    if g.group != 1 or g.kernel[0] < 2:
        return False
    taps, n_out = math.prod(g.kernel), math.prod(g.out_size)
    inner, inner_out = taps // g.kernel[0], n_out // g.out_size[0]
    n_in = math.prod(max(b + size, r) for b, size, r in zip(g.pads_begin, g.in_size, g.reach))
    k0, s0, d0 = g.kernel[0], g.strides[0], g.dilations[0]
    stored = s0 * (max((k * d0) // s0 for k in range(k0)) + g.out_size[0])  # buffer rows, all phases
    im2col = n * (taps * c * n_out + c * n_in)
    rows = n * (inner * c * stored * inner_out + 2 * (k0 - 1) * m * n_out) + m * c * taps
    return rows < 1.1 * im2col


def _row_products(x: Array, w: Array, g: ConvGeometry, bias: Array | None) -> Array:
    """Convolution as one matrix product per tap of the first kernel axis ("kernel-row im2col").

    The windows of the other kernel axes are copied once per image into a channel-major buffer
    that keeps every padded row of the first spatial axis (split into its stride phases), so the
    ``k0`` taps of the first axis are ``k0`` row offsets into the same buffer: each is a
    ``(taps / k0 * C, out)`` view with a row stride BLAS takes as is, multiplied by that kernel
    row's weights and accumulated straight into the output. Against im2col this copies about
    ``k0 / stride0`` times less and gives BLAS the same products in ``k0`` slices.
    """
    n, c = x.shape[:2]
    m = w.shape[0]
    k0, s0, d0, pb0 = g.kernel[0], g.strides[0], g.dilations[0], g.pads_begin[0]
    inner_kernel = g.kernel[1:]
    inner = math.prod(inner_kernel)
    out0, inner_out = g.out_size[0], math.prod(g.out_size[1:])
    rows = max((k * d0) // s0 for k in range(k0)) + out0  # stored rows per phase
    dtype = np.result_type(x, w)
    # weights per first-axis tap, K ordered as (inner tap, channel) like the buffer's rows
    wt = np.ascontiguousarray(
        w.reshape(m, c, k0, inner).transpose(2, 0, 3, 1), dtype=dtype).reshape(k0, m, inner * c)
    buf = np.zeros((s0, inner, c, rows, *g.out_size[1:]), dtype=dtype)  # the padding stays 0
    fills = []
    for p0 in range(s0):
        # stored row r of phase p0 is padded row p0 + r * s0, input row p0 + r * s0 - pb0
        r_lo = max(0, -(-(pb0 - p0) // s0))
        r_hi = max(r_lo, min(rows, -(-(pb0 + g.in_size[0] - p0) // s0)))
        src0 = slice(p0 + r_lo * s0 - pb0, p0 + (r_hi - 1) * s0 - pb0 + 1, s0)
        for t, tap in enumerate(np.ndindex(*inner_kernel)):
            dst, src = [slice(r_lo, r_hi)], [src0]
            for k, s, d, b, size, o in zip(tap, g.strides[1:], g.dilations[1:], g.pads_begin[1:],
                                           g.in_size[1:], g.out_size[1:]):
                # output j reads input j * s + k * d - b
                lo = max(0, -(-(b - k * d) // s))
                hi = max(lo, min(o, -(-(b + size - k * d) // s)))
                dst.append(slice(lo, hi))
                src.append(slice(lo * s + k * d - b, (hi - 1) * s + k * d - b + 1, s))
            if all(sl.stop > sl.start for sl in dst):
                fills.append(((p0, t, slice(None), *dst), (slice(None), *src)))
    flat = buf.reshape(s0, inner * c, rows * inner_out)
    taps = [((k * d0) % s0, (k * d0) // s0 * inner_out) for k in range(k0)]
    y = np.empty((n, m, *g.out_size), dtype=dtype)
    tmp = np.empty((m, out0 * inner_out), dtype=dtype)
    span = out0 * inner_out
    b = None if bias is None else bias.reshape(-1, 1)
    for i in range(n):
        for dst, src in fills:
            np.copyto(buf[dst], x[i][src])
        yi = y[i].reshape(m, span)
        for k, (phase, offset) in enumerate(taps):
            view = flat[phase, :, offset:offset + span]
            if k == 0:
                np.matmul(wt[k], view, out=yi)
            else:
                np.matmul(wt[k], view, out=tmp)
                yi += tmp
        if b is not None:
            yi += b  # while the image's output is still in cache
    return y


def conv_forward(x: Array, w: Array, g: ConvGeometry, bias: Array | None = None) -> Array:
    """``y[n, m] = sum_{c, k} w[m, c, k] * xpad[n, group(m) c, o * s + k * d] + bias[m]``."""
    n, c = x.shape[:2]
    m, grp = w.shape[0], g.group
    cg, mg, out_n = c // grp, m // grp, math.prod(g.out_size)
    if g.pointwise:
        xs = _strided_input(x, g).reshape(n, grp, cg, out_n)
        return _add_bias(np.matmul(w.reshape(grp, mg, cg), xs).reshape(n, m, *g.out_size), bias)
    if _depthwise(c, m, g):
        return _depthwise_forward(x, w, g, bias)
    if _use_row_products(n, c, m, g):
        return _row_products(x, w, g, bias)
    return _add_bias(_im2col_forward(x, w, g), bias)


def _add_bias(y: Array, bias: Array | None) -> Array:
    if bias is not None:
        y += bias_shape(bias, y.ndim - 2)
    return y


def _im2col_forward(x: Array, w: Array, g: ConvGeometry) -> Array:
    """im2col (the strided window view copied per batch block) and one matrix product per block."""
    n, c = x.shape[:2]
    m, grp = w.shape[0], g.group
    cg, mg, out_n = c // grp, m // grp, math.prod(g.out_size)
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
