"""Pooling ops: MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, with VJPs.

Every windowed pool resolves its attributes once, in :func:`pool_geometry`, into a frozen
:class:`PoolGeometry` that its forward and VJP both read. Windows are strided views of the padded
input, one per kernel tap (a loop over the few taps, never over output positions); the backward
scatter-adds one strided view per tap, so overlapping windows (kernel > stride) accumulate.

MaxPool's gradient goes to the *first* maximum of each window in row-major order over the window
(the first kernel tap that attains the maximum), which is the element onnxruntime's ``Indices``
output and PyTorch's ``max_pool`` pick; a tie therefore never splits or duplicates the gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..registry import Call, Grads, forward, vjp

Array = np.ndarray
_ROW_BYTES = 512 << 10


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class PoolGeometry:
    """Resolved per-axis window geometry: output position ``o`` of axis ``i`` covers padded
    positions ``o * strides[i] + k * dilations[i]`` for ``k < kernel[i]``.

    ``pads_end`` is the explicit (or SAME_*) end padding; with ``ceil_mode`` the last window may
    reach past it, into positions that neither hold data nor count as padding.
    """

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]

    @property
    def padded(self) -> tuple[int, ...]:
        """Spatial size of the padded buffer: the input, its start padding and every window."""
        reach = [(o - 1) * s + (k - 1) * d + 1
                 for o, s, k, d in zip(self.out_size, self.strides, self.kernel, self.dilations)]
        return tuple(max(b + n, r) for b, n, r in zip(self.pads_begin, self.in_size, reach))

    @property
    def taps(self) -> list[tuple[int, ...]]:
        return list(np.ndindex(*self.kernel))

    def tap_view(self, buf: Array, tap: Sequence[int]) -> Array:
        """The view of a padded ``(N, C, *padded)`` buffer that tap ``tap`` reads at every output."""
        picks = tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                      for k, d, o, s in zip(tap, self.dilations, self.out_size, self.strides))
        return buf[(slice(None), slice(None), *picks)]

    def pad(self, x: Array, fill: float) -> Array:
        ends = [p - b - n for p, b, n in zip(self.padded, self.pads_begin, self.in_size)]
        if not any(self.pads_begin) and not any(ends):
            return x
        return np.pad(x, [(0, 0), (0, 0), *zip(self.pads_begin, ends)], constant_values=fill)

    def crop(self, buf: Array) -> Array:
        crop = tuple(slice(b, b + n) for b, n in zip(self.pads_begin, self.in_size))
        return np.ascontiguousarray(buf[(slice(None), slice(None), *crop)])

    def counts(self, include_pad: bool) -> Array:
        """Per output position, how many taps of its window hit data (or data and padding)."""
        total: Array = np.ones((), dtype=np.int64)
        for k, s, d, b, e, n, o in zip(self.kernel, self.strides, self.dilations, self.pads_begin,
                                       self.pads_end, self.in_size, self.out_size):
            pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d
            hit = pos < b + n + e if include_pad else (pos >= b) & (pos < b + n)
            total = np.multiply.outer(total, hit.sum(axis=1))
        return total


def pool_geometry(
    x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Optional[Sequence[int]],
    pads: Optional[Sequence[int]], dilations: Optional[Sequence[int]], auto_pad: object,
    ceil_mode: int,
) -> PoolGeometry:
    """Output size and padding per the spec: SAME_* gives ``ceil(in / stride)``; with ceil_mode a
    last window that would start in the end padding (or past it) is dropped."""
    nd = len(x_shape) - 2
    kernel = tuple(int(k) for k in kernel_shape)
    st = tuple(int(s) for s in strides) if strides else (1,) * nd
    dil = tuple(int(d) for d in dilations) if dilations else (1,) * nd
    size = tuple(int(n) for n in x_shape[2:])
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    mode = _text(auto_pad)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-n // s) for n, s in zip(size, st)]
        totals = [max(0, (o - 1) * s + k - n) for o, s, k, n in zip(out, st, span, size)]
        small = [t // 2 for t in totals]
        big = [t - h for t, h in zip(totals, small)]
        begin, end = (small, big) if mode == "SAME_UPPER" else (big, small)
    else:
        p = [int(v) for v in pads] if pads and mode != "VALID" else [0] * (2 * nd)
        begin, end = p[:nd], p[nd:]
        out = []
        for n, b, e, k, s in zip(size, begin, end, span, st):
            num = n + b + e - k
            o = (-(-num // s) if ceil_mode else num // s) + 1
            if ceil_mode and (o - 1) * s >= n + b:
                o -= 1
            out.append(o)
    return PoolGeometry(kernel, st, dil, tuple(begin), tuple(end), size, tuple(out))


def _geometry_of(call: Call) -> PoolGeometry:
    a = call.attrs
    return pool_geometry(call.inputs[0].shape, a["kernel_shape"], a.get("strides"), a.get("pads"),
                         a.get("dilations"), a.get("auto_pad", "NOTSET"), int(a.get("ceil_mode", 0)))


def _scatter(h: Array, g: PoolGeometry, x_shape: Sequence[int]) -> Array:
    """Adjoint of the per-tap window views: add ``h`` into every position each tap read."""
    buf = np.zeros((*x_shape[:2], *g.padded), dtype=h.dtype)
    for tap in g.taps:
        g.tap_view(buf, tap)[...] += h
    return g.crop(buf)


# --------------------------------------------------------------------------------------- MaxPool


def _lowest(dtype: np.dtype) -> float | int:
    return -np.inf if np.issubdtype(dtype, np.floating) else int(np.iinfo(dtype).min)


def _window_max(block: Array, g: PoolGeometry, out: Array) -> None:
    """The window maxima of a padded ``(1, rows, *padded)`` block into ``out``, one spatial axis at
    a time: max is separable, so a 3x3 window costs 2 + 2 ``maximum`` calls instead of 8, the
    first of them over whole rows (measured 9x faster than one strided view per tap on ResNet's
    3x3/2 MaxPool). NaN propagates as in one flat ``maximum`` per tap."""
    cur = block
    nd = len(g.kernel)
    for i, (k, s, d, o) in enumerate(zip(g.kernel, g.strides, g.dilations, g.out_size)):
        lead = (slice(None),) * (2 + i)
        views = [cur[(*lead, slice(t * d, t * d + (o - 1) * s + 1, s))] for t in range(k)]
        if k == 1:
            cur = views[0]
            continue
        nxt = np.maximum(views[0], views[1], out=out if i == nd - 1 else None)
        for v in views[2:]:
            np.maximum(nxt, v, out=nxt)
        cur = nxt
    if cur is not out:
        np.copyto(out, cur)


def _max_pool(X: Array, g: PoolGeometry, indices: bool = True) -> tuple[Array, Array | None]:
    """The window maxima and (with ``indices``) per output the index of the first kernel tap
    attaining it.

    The first attaining tap is the minimum over taps of ``t if tap t equals the maximum else
    len(taps)`` (cheaper than tracking it in the max loop, which needs two masked copies per tap).
    """
    n, c = X.shape[:2]
    xp = g.pad(X, _lowest(X.dtype))
    rows = xp.reshape(1, n * c, *xp.shape[2:])
    taps = g.taps
    kind = np.int8 if len(taps) < 127 else np.int32
    y = np.empty((1, n * c, *g.out_size), dtype=X.dtype)
    arg = np.full(y.shape, len(taps), dtype=kind) if indices else None
    step = max(1, _ROW_BYTES // max(1, rows[0, 0].nbytes))
    for r0 in range(0, n * c, step):  # blocks of (batch, channel) maps that stay in cache
        block, yb = rows[:, r0:r0 + step], y[:, r0:r0 + step]
        _window_max(block, g, yb)
        if arg is None:
            continue
        ab = arg[:, r0:r0 + step]
        for t, tap in enumerate(taps):
            hit = np.where(g.tap_view(block, tap) == yb, kind(t), kind(len(taps)))
            np.minimum(ab, hit, out=ab)
        if np.any(ab == len(taps)):  # a NaN maximum equals nothing: point at the window's first NaN
            for t, tap in enumerate(taps):
                hit = np.where(np.isnan(g.tap_view(block, tap)), kind(t), kind(len(taps)))
                np.minimum(ab, hit, out=ab)
    return y.reshape(n, c, *g.out_size), None if arg is None else arg.reshape(n, c, *g.out_size)


def _flat_indices(arg: Array, g: PoolGeometry, storage_order: int) -> Array:
    """Tap indices -> flattened input indices, as onnxruntime computes ``Indices``: the (batch,
    channel) offset in row-major order, the spatial offset row-major (storage_order 0) or
    column-major (1)."""
    nd = len(g.kernel)
    n, c = arg.shape[:2]
    if storage_order:
        steps = [int(np.prod(g.in_size[:i])) for i in range(nd)]
    else:
        steps = [int(np.prod(g.in_size[i + 1:])) for i in range(nd)]
    tap_offset = np.array([sum(k * d * st for k, d, st in zip(tap, g.dilations, steps))
                           for tap in g.taps], dtype=np.int64)
    base = (np.arange(n * c, dtype=np.int64) * int(np.prod(g.in_size))).reshape(n, c, *(1,) * nd)
    for i in range(nd):
        o = np.arange(g.out_size[i], dtype=np.int64) * g.strides[i] - g.pads_begin[i]
        base = base + o.reshape((-1,) + (1,) * (nd - 1 - i)) * steps[i]
    return base + tap_offset[arg]


@forward("MaxPool", since=1)
def max_pool_1(X: Array, *, auto_pad: object = "NOTSET", kernel_shape: Sequence[int] = (),
               pads: Optional[Sequence[int]] = None, strides: Optional[Sequence[int]] = None) -> Array:
    """MaxPool-1: the maxima only (no ``Indices`` output before opset 8)."""
    return _max_pool(X, pool_geometry(X.shape, kernel_shape, strides, pads, None, auto_pad, 0), False)[0]


@forward("MaxPool", since=8)
def max_pool_8(X: Array, *, auto_pad: object = "NOTSET", kernel_shape: Sequence[int] = (),
               pads: Optional[Sequence[int]] = None, storage_order: int = 0,
               strides: Optional[Sequence[int]] = None) -> tuple[Array, Array]:
    """MaxPool-8: ``(Y, Indices)``; Indices per ``storage_order`` (see :func:`_flat_indices`)."""
    return max_pool(X, auto_pad=auto_pad, kernel_shape=kernel_shape, pads=pads,
                    storage_order=storage_order, strides=strides)


@forward("MaxPool", since=10)
def max_pool(X: Array, *, auto_pad: object = "NOTSET", ceil_mode: int = 0,
             dilations: Optional[Sequence[int]] = None, kernel_shape: Sequence[int] = (),
             pads: Optional[Sequence[int]] = None, storage_order: int = 0,
             strides: Optional[Sequence[int]] = None) -> tuple[Array, Array]:
    """MaxPool-10/11/12: adds ceil_mode and dilations (11 and 12 change only docs and types)."""
    g = pool_geometry(X.shape, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode)
    y, arg = _max_pool(X, g)
    return y, _flat_indices(arg, g, int(storage_order))


def max_pool_values(X: Array, *, auto_pad: object = "NOTSET", ceil_mode: int = 0,
                    dilations: Sequence[int] | None = None, kernel_shape: Sequence[int] = (),
                    pads: Sequence[int] | None = None, storage_order: int = 0,
                    strides: Sequence[int] | None = None) -> Array:
    """MaxPool's ``Y`` alone, for any opset (every earlier version's attributes are a subset of
    MaxPool-10's): the engine runs this instead of the registered forward when nothing reads the
    node's ``Indices`` (finding the first maximum per window costs more than the maxima)."""
    g = pool_geometry(X.shape, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode)
    return _max_pool(X, g, False)[0]


@vjp("MaxPool", since=1)
def max_pool_vjp(call: Call, gY: Optional[Array], gIndices: Optional[Array] = None) -> Grads:
    """Each output's cotangent goes to the first maximum of its window (row-major), summed where
    windows overlap. Reuses the recorded row-major ``Indices`` when there is one."""
    X = call.inputs[0]
    if gY is None or not call.needs[0]:
        return (None,)
    if len(call.outputs) > 1 and int(call.attrs.get("storage_order", 0)) == 0:
        index = call.outputs[1]
    else:
        g = _geometry_of(call)
        index = _flat_indices(_max_pool(X, g)[1], g, 0)
    gx = np.bincount(index.ravel(), weights=gY.ravel(), minlength=X.size)
    return (gx.astype(X.dtype, copy=False).reshape(X.shape),)


# ----------------------------------------------------------------------------------- AveragePool


def _average_pool(X: Array, g: PoolGeometry, count_include_pad: int) -> Array:
    xp = g.pad(X, 0)
    taps = g.taps
    total = g.tap_view(xp, taps[0]).copy()
    for tap in taps[1:]:
        total += g.tap_view(xp, tap)
    return total / g.counts(bool(count_include_pad)).astype(X.dtype)


@forward("AveragePool", since=1)
def average_pool_1(X: Array, *, auto_pad: object = "NOTSET", kernel_shape: Sequence[int] = (),
                   pads: Optional[Sequence[int]] = None,
                   strides: Optional[Sequence[int]] = None) -> Array:
    """AveragePool-1: padding never counts."""
    return average_pool(X, auto_pad=auto_pad, kernel_shape=kernel_shape, pads=pads, strides=strides)


@forward("AveragePool", since=7)
def average_pool_7(X: Array, *, auto_pad: object = "NOTSET", count_include_pad: int = 0,
                   kernel_shape: Sequence[int] = (), pads: Optional[Sequence[int]] = None,
                   strides: Optional[Sequence[int]] = None) -> Array:
    """AveragePool-7: adds count_include_pad."""
    return average_pool(X, auto_pad=auto_pad, count_include_pad=count_include_pad,
                        kernel_shape=kernel_shape, pads=pads, strides=strides)


@forward("AveragePool", since=10)
def average_pool_10(X: Array, *, auto_pad: object = "NOTSET", ceil_mode: int = 0,
                    count_include_pad: int = 0, kernel_shape: Sequence[int] = (),
                    pads: Optional[Sequence[int]] = None,
                    strides: Optional[Sequence[int]] = None) -> Array:
    """AveragePool-10/11: adds ceil_mode."""
    return average_pool(X, auto_pad=auto_pad, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad, kernel_shape=kernel_shape, pads=pads,
                        strides=strides)


@forward("AveragePool", since=19)
def average_pool(X: Array, *, auto_pad: object = "NOTSET", ceil_mode: int = 0,
                 count_include_pad: int = 0, dilations: Optional[Sequence[int]] = None,
                 kernel_shape: Sequence[int] = (), pads: Optional[Sequence[int]] = None,
                 strides: Optional[Sequence[int]] = None) -> Array:
    """AveragePool-19: adds dilations. The divisor counts the taps on data (plus, with
    count_include_pad, on explicit padding; never the ceil_mode overhang past the padding)."""
    g = pool_geometry(X.shape, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode)
    return _average_pool(X, g, count_include_pad)


@vjp("AveragePool", since=1)
def average_pool_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """Each window's cotangent divided by its count, scattered back onto the window."""
    if gY is None or not call.needs[0]:
        return (None,)
    g = _geometry_of(call)
    counts = g.counts(bool(call.attrs.get("count_include_pad", 0))).astype(gY.dtype)
    return (_scatter(gY / counts, g, call.inputs[0].shape),)


# ---------------------------------------------------------------------------------------- LpPool


def _abs_power(X: Array, p: float) -> Array:
    return X * X if p == 2 else np.abs(X) ** p


def _lp_pool(X: Array, g: PoolGeometry, p: float) -> Array:
    xp = _abs_power(g.pad(X, 0), p)
    taps = g.taps
    total = g.tap_view(xp, taps[0]).copy()
    for tap in taps[1:]:
        total += g.tap_view(xp, tap)
    return np.sqrt(total) if p == 2 else total ** (1.0 / p)


@forward("LpPool", since=1)
def lp_pool_1(X: Array, *, auto_pad: object = "NOTSET", kernel_shape: Sequence[int] = (),
              p: float = 2.0, pads: Optional[Sequence[int]] = None,
              strides: Optional[Sequence[int]] = None) -> Array:
    """LpPool-1: ``p`` is a float."""
    return lp_pool(X, auto_pad=auto_pad, kernel_shape=kernel_shape, p=p, pads=pads, strides=strides)


@forward("LpPool", since=2)
def lp_pool_2(X: Array, *, auto_pad: object = "NOTSET", kernel_shape: Sequence[int] = (),
              p: int = 2, pads: Optional[Sequence[int]] = None,
              strides: Optional[Sequence[int]] = None) -> Array:
    """LpPool-2/11: ``p`` is an int."""
    return lp_pool(X, auto_pad=auto_pad, kernel_shape=kernel_shape, p=p, pads=pads, strides=strides)


@forward("LpPool", since=18)
def lp_pool(X: Array, *, auto_pad: object = "NOTSET", ceil_mode: int = 0,
            dilations: Optional[Sequence[int]] = None, kernel_shape: Sequence[int] = (),
            p: float = 2, pads: Optional[Sequence[int]] = None,
            strides: Optional[Sequence[int]] = None) -> Array:
    """LpPool-18: ``(sum |x|^p)^(1/p)`` over each window; adds ceil_mode and dilations."""
    g = pool_geometry(X.shape, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode)
    return _lp_pool(X, g, p)


@vjp("LpPool", since=1)
def lp_pool_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """``dy/dx = sign(x) |x|^(p-1) / y^(p-1)``: scatter ``gY / y^(p-1)``, then scale per input."""
    X, Y = call.inputs[0], call.outputs[0]
    if gY is None or not call.needs[0]:
        return (None,)
    g = _geometry_of(call)
    p = call.attrs.get("p", 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(Y > 0, gY / (Y if p == 2 else Y ** (p - 1)), 0).astype(X.dtype, copy=False)
    spread = _scatter(h, g, X.shape)
    return (spread * (X if p == 2 else np.sign(X) * np.abs(X) ** (p - 1)),)


# ----------------------------------------------------------------------------------- Global pools


@forward("GlobalAveragePool", since=1)
def global_average_pool(X: Array) -> Array:
    """Mean over every spatial axis, kept as size-1 axes."""
    return X.mean(axis=tuple(range(2, X.ndim)), keepdims=True)


@vjp("GlobalAveragePool", since=1)
def global_average_pool_vjp(call: Call, gY: Optional[Array]) -> Grads:
    X = call.inputs[0]
    if gY is None or not call.needs[0]:
        return (None,)
    spatial = X[0, 0].size
    return (np.broadcast_to(gY / X.dtype.type(spatial), X.shape).copy(),)


@forward("GlobalMaxPool", since=1)
def global_max_pool(X: Array) -> Array:
    """Max over every spatial axis, kept as size-1 axes."""
    return X.max(axis=tuple(range(2, X.ndim)), keepdims=True)


@vjp("GlobalMaxPool", since=1)
def global_max_pool_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """The cotangent goes to the first maximum of each map (row-major), as for MaxPool."""
    X = call.inputs[0]
    if gY is None or not call.needs[0]:
        return (None,)
    flat = X.reshape(*X.shape[:2], -1)
    gx = np.zeros(flat.shape, dtype=gY.dtype)
    first = np.argmax(flat, axis=-1)[..., None]
    np.put_along_axis(gx, first, gY.reshape(*X.shape[:2], 1), axis=-1)
    return (gx.reshape(X.shape),)
