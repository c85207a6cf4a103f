"""Random image transforms for transformation robustness (Lucid's ``lucid.optvis.transform``).

Each transform is a small frozen value whose ``apply(images, rng)`` draws its randomness from
the given generator, transforms an ``N x H x W x C`` batch and returns ``(output, vjp)``: the
transforms are linear maps of the image (plus a constant fill), so ``vjp`` is the adjoint of
the linear part. One draw serves the whole batch (as in Lucid), so image ``i`` of a batch sees
the same transforms as it would alone with the same generator.

* :class:`Pad` — constant border (0.5); adjoint: crop.
* :class:`Jitter` — random crop ``d`` pixels smaller, offsets uniform in ``0..d``; adjoint: zero pad.
* :class:`RandomScale` — bilinear resize by a factor drawn from a list (half-pixel centres,
  edge-clamped, as :func:`interpolation_matrix`).
* :class:`RandomRotate` — rotation about the centre by an angle (degrees) drawn from a list,
  bilinear. Samples that fall outside the image read the fill value 0.5 (Lucid's TF rotate fills
  0; after the 0.5 pad the difference only reaches the outer corners).
* :class:`Resize` — deterministic bilinear resize to a fixed size: the last step for models with
  a fixed input size (Lucent's ``Upsample`` to the model size plays the same role).

:func:`standard_transforms` is Lucid's ``standard_transforms``: pad 12 (fill 0.5), jitter 8,
scale ``1 + (i-5)/50`` for ``i = 0..10``, rotate ``-10..10`` degrees with 0 given five extra
copies, jitter 4; each transform draws once per step, in that order.

How they run. All five are :class:`GeometricTransform`\\ s: output pixel ``p`` is a fixed
combination of input pixels plus a constant, ``out[p] = sum_q A[p, q] in[q] + b[p]``, the same for
every image and channel. :func:`compose` draws each transform's parameters in order (a
:class:`Warp`), then pulls the *final* output grid back through the drawn warps to the input
and applies the product as ONE sparse matrix (and ``b``): Lucid's pad, jitter, scale, rotate and
jitter become a single resampling that computes only the final window, with up to 16 (about
8) taps per output pixel: a rotation tap's 2x2 neighbours, each a 2x2 stencil of the scale,
merged. The adjoint is the transposed matrix. The product is the exact composition of the
separate bilinear maps (not one bilinear sampling at the composed coordinates), so the result
equals applying the transforms one after the other, up to float rounding, fills included.

Building the matrix: pads, crops and resizes act on each axis alone, so the warps before the
rotation (and after it: only crops and pads may follow a rotation in one matrix) are pulled back
on each axis separately, as small per-axis tables; only the rotation's coordinates are computed
per output pixel, and each pixel's row and column weights are gathered from the tables for its
pair of rotation taps. A fill (pad 0.5, rotation 0.5) becomes the constant ``b``. The matrix is
built each step from the draws (vectorised; a few milliseconds at 128x128, whatever the batch),
so nothing is cached.

The sparse products run on the batch laid out pixel-major, ``H x W x N x C`` in memory (one
row of the matrix per pixel, the ``N*C`` images and channels as contiguous columns). Outputs
are ``N x H x W x C`` arrays that are *views* of such memory (``out.transpose(1, 2, 0, 3)`` is
C-contiguous), so a chain of transforms, :class:`~onnxviz.maximize.param.FFTParam`'s images and
:class:`~onnxviz.maximize.param.ModelInput` pass the batch along without transposing it; any
``N x H x W x C`` array is accepted (copied to that layout when it is not). Scipy's sparse
products are single-threaded and use no BLAS: multithreaded BLAS calls between onnxruntime
calls of the same step fought onnxruntime's spinning threads for the two cores (the dense
resize matrices used before cost 15-30x their isolated time inside the loop).

A rotation's taps depend on both coordinates, so it fuses only with the resamplings *before* it
(and any pads and crops): a ``Resize`` after a rotation (fixed-size models) is applied as a
second matrix. Transforms of other types (anything with ``apply``) run as they are, between
the fused groups, in their place in the order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import sparse

from ..errors import InputError

__all__ = [
    "GeometricTransform",
    "Jitter",
    "Pad",
    "RandomRotate",
    "RandomScale",
    "Resize",
    "Transform",
    "Warp",
    "compose",
    "interpolation_matrix",
    "resize_bilinear",
    "standard_transforms",
]

VjpFn = Callable[[np.ndarray], np.ndarray]
Size = tuple[int, int]


class Transform(Protocol):
    def apply(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]: ...


# --------------------------------------------------------------------------------------------
# Warps: drawn geometric transforms, and their product as one sparse matrix

#: a masking stage of an axis chain: the fill read outside, and per output position the weight
#: that entered the stage and the weight that stayed inside
_Stage = tuple[float, np.ndarray, np.ndarray]


class Warp:
    """One drawn geometric transform from ``in_size`` to ``out_size`` (``H x W``).

    Every warp but a rotation acts on each axis alone: ``pull_axis`` rewrites taps (positions
    and weights, ``(T, n)`` arrays, one column per position of the output axis) as taps on the
    input axis. A warp that ``spreads`` turns one tap into several (resampling)."""

    in_size: Size
    out_size: Size
    spreads: bool = False

    @property
    def identity(self) -> bool:
        return False

    def pull_axis(self, axis: int, pos: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Stage | None]:
        raise NotImplementedError


@dataclass(frozen=True)
class _Window(Warp):
    """``out[y, x] = in[y + oy, x + ox]``, or ``fill`` outside the input (a pad or a crop)."""

    in_size: Size
    out_size: Size
    offset: tuple[int, int]
    fill: float = 0.0

    @property
    def identity(self) -> bool:
        return self.offset == (0, 0) and self.in_size == self.out_size

    def pull_axis(self, axis: int, pos: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Stage | None]:
        n = self.in_size[axis]
        pos = pos + self.offset[axis]
        inside = (pos >= 0) & (pos < n)
        kept = w * inside
        # a zero fill adds nothing; a stage for every filling window keeps both axes' lists aligned
        stage = (self.fill, w.sum(axis=0), kept.sum(axis=0)) if self.fill != 0.0 else None
        return np.clip(pos, 0, n - 1), kept, stage


def _axis_stencil(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output position: ``i0``, ``i1`` and the weight ``t`` of ``i1`` (half-pixel centres,
    edge-clamped): the rows of :func:`interpolation_matrix`."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


@dataclass(frozen=True)
class _Bilinear(Warp):
    """Bilinear resize from ``in_size`` to ``out_size`` (separable, :func:`interpolation_matrix`)."""

    in_size: Size
    out_size: Size
    spreads = True

    @property
    def identity(self) -> bool:
        return self.in_size == self.out_size

    def pull_axis(self, axis: int, pos: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Stage | None]:
        n_in, n_out = self.in_size[axis], self.out_size[axis]
        if n_in == n_out:
            return pos, w, None
        i0, i1, t = _axis_stencil(n_in, n_out)
        tt = t[pos]
        return np.concatenate([i0[pos], i1[pos]]), np.concatenate([w * (1.0 - tt), w * tt]), None


@dataclass(frozen=True)
class _Rotation(Warp):
    """Rotation by ``degrees`` about the centre (bilinear; samples outside read ``fill``)."""

    in_size: Size
    out_size: Size
    degrees: float
    fill: float
    spreads = True

    @property
    def identity(self) -> bool:
        return self.degrees == 0.0


@dataclass(frozen=True)
class _Chain:
    """Axis warps pulled back on one axis: output position ``r`` reads input positions
    ``base[r] + j`` with weights ``dense[r, j]``; ``stages`` as :data:`_Stage`."""

    base: np.ndarray
    dense: np.ndarray
    stages: tuple[_Stage, ...]


def _merge(pos: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum each column's taps ``(T, n)`` into a dense window: ``(base (n,), dense (n, span))``."""
    live = w != 0
    base = np.where(live, pos, np.iinfo(pos.dtype).max).min(axis=0)
    base = np.where(live.any(axis=0), base, pos.min(axis=0))  # a dead column keeps a nearby base
    off = np.where(live, pos - base, 0)
    span = int(off.max()) + 1
    n = pos.shape[1]
    dense = np.bincount((np.arange(n) * span + off).ravel(), weights=w.ravel(), minlength=n * span)
    return base, dense.reshape(n, span)


def _chain(warps: Sequence[Warp], axis: int, n_out: int) -> _Chain:
    pos = np.arange(n_out)[None, :]
    w = np.ones((1, n_out))
    stages: list[_Stage] = []
    for wp in reversed(warps):
        pos, w, stage = wp.pull_axis(axis, pos, w)
        if stage is not None:
            stages.append(stage)
    base, dense = _merge(pos, w)
    return _Chain(base, dense, tuple(stages))


def _pairs(chain: _Chain, values: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Tables indexed by ``y0 + 1`` for a rotation tap pair ``(y0, y0 + 1)``, ``-1 <= y0 < n``:
    a common window base, both rows' windows on it (``(span, n + 1)``, zero for rows outside
    ``0..n-1``), and ``values`` (per-row arrays) at both rows (``(2, n + 1)`` each)."""
    n, span = chain.dense.shape
    r0 = np.arange(-1, n)
    r1 = r0 + 1
    c0, c1 = np.clip(r0, 0, n - 1), np.clip(r1, 0, n - 1)
    in0, in1 = r0 >= 0, r1 < n
    live = chain.dense.any(axis=1)
    ok0, ok1 = in0 & live[c0], in1 & live[c1]
    big = np.iinfo(np.int64).max
    b0 = np.where(ok0, chain.base[c0], big)
    b1 = np.where(ok1, chain.base[c1], big)
    base = np.where(ok0 | ok1, np.minimum(b0, b1), 0)
    s0 = np.where(ok0, b0 - base, 0)
    s1 = np.where(ok1, b1 - base, 0)
    span2 = span + int(max(s0.max(), s1.max()))
    d0 = np.zeros((span2, n + 1))
    d1 = np.zeros((span2, n + 1))
    cols = np.arange(n + 1)[None, :]
    rows = np.arange(span)[:, None]
    d0[s0[None, :] + rows, cols] = np.where(ok0, chain.dense[c0].T, 0.0)
    d1[s1[None, :] + rows, cols] = np.where(ok1, chain.dense[c1].T, 0.0)
    vals = [np.stack([np.where(in0, v[c0], 0.0), np.where(in1, v[c1], 0.0)]) for v in values]
    return base, d0, d1, vals


def _matrix(by: np.ndarray, wy: np.ndarray, bx: np.ndarray, wx: np.ndarray, size: Size) -> sparse.csr_matrix:
    """CSR ``(K, h*w)``: pixel ``k`` reads ``wy[a, k] * wx[b, k]`` at ``(by[k] + a, bx[k] + b)``,
    zero weights left out. Each tap is one vectorised operation along ``K``, written into its
    column of the row-major ``(K, taps)`` array the CSR rows are cut from."""
    sy, k = wy.shape
    sx = wx.shape[0]
    h, w = size
    taps = sy * sx
    idx = np.int32 if max((h + sy) * (w + sx), k * taps) < 2**31 else np.int64
    vals = np.empty((k, taps), dtype=wy.dtype)
    for a in range(sy):
        for b in range(sx):
            np.multiply(wy[a], wx[b], out=vals[:, a * sx + b])
    nz = vals != 0
    count = np.zeros(k, dtype=idx)
    for j in range(taps):
        count += nz[:, j]
    indptr = np.zeros(k + 1, dtype=idx)
    np.cumsum(count, out=indptr[1:])
    flat = np.flatnonzero(nz)  # row * taps + tap of each entry, in CSR order
    offsets = (np.arange(sy, dtype=idx)[:, None] * w + np.arange(sx, dtype=idx)).ravel()
    cols = offsets.take(flat - np.repeat(np.arange(0, k * taps, taps), count))
    cols += np.repeat((by * w + bx).astype(idx), count)
    return sparse.csr_matrix((vals.ravel().take(flat), cols, indptr), shape=(k, h * w))


def _outer_bias(ys: Sequence[_Stage], xs: Sequence[_Stage], out_w: int) -> np.ndarray:
    """Fill read by separable single taps: ``sum fill * (before_y before_x - after_y after_x)``."""
    bias: np.ndarray | float = 0.0
    for (fill, by, ay), (_, bx, ax) in zip(ys, xs):
        bias = bias + fill * (np.outer(by, bx) - np.outer(ay, ax))
    return np.ravel(bias)


def _operator(group: Sequence[Warp], dtype: np.dtype) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The group's product: the sparse matrix (``dtype`` weights) and the bias (float64)."""
    in_size = group[0].in_size
    out_h, out_w = group[-1].out_size
    k = out_h * out_w
    rot = [i for i, wp in enumerate(group) if isinstance(wp, _Rotation)]
    if not rot:
        cy, cx = _chain(group, 0, out_h), _chain(group, 1, out_w)
        by, wy = np.repeat(cy.base, out_w), np.repeat(cy.dense.T.astype(dtype), out_w, axis=1)
        bx, wx = np.tile(cx.base, out_h), np.tile(cx.dense.T.astype(dtype), (1, out_h))
        bias = np.broadcast_to(_outer_bias(cy.stages, cx.stages, out_w), (k,))
        return _matrix(by, wy, bx, wx, in_size), bias
    rw = group[rot[0]]
    if not isinstance(rw, _Rotation):
        raise TypeError(rw)
    pre, post = group[: rot[0]], group[rot[0] + 1 :]
    # after the rotation: crops and pads only, single taps on the output grid
    py, px = _chain(post, 0, out_h), _chain(post, 1, out_w)
    bias = np.zeros(k) + _outer_bias(py.stages, px.stages, out_w)
    uy, ux = np.repeat(py.dense[:, 0], out_w), np.tile(px.dense[:, 0], out_h)
    # the rotation: output pixel p samples the input at R(-a) (p - c) + c, bilinear; the
    # coordinates are sums of a row term and a column term
    h, w = rw.in_size
    a = math.radians(rw.degrees)
    cos, sin = math.cos(a), math.sin(a)
    dy = (py.base - (h - 1) / 2.0)[:, None]
    dx = (px.base - (w - 1) / 2.0)[None, :]
    sy = (cos * dy + (h - 1) / 2.0 - sin * dx).ravel()
    sx = (sin * dy + (w - 1) / 2.0 + cos * dx).ravel()
    y0, x0 = np.floor(sy), np.floor(sx)
    ty, tx = (sy - y0).astype(dtype), (sx - x0).astype(dtype)
    uy, ux = uy.astype(dtype), ux.astype(dtype)
    ay1 = uy * ty * ((y0 >= -1) & (y0 < h - 1))
    ay0 = uy * (1 - ty) * ((y0 >= 0) & (y0 < h))
    ax1 = ux * tx * ((x0 >= -1) & (x0 < w - 1))
    ax0 = ux * (1 - tx) * ((x0 >= 0) & (x0 < w))
    bias += rw.fill * (uy * ux - (ay0 + ay1) * (ax0 + ax1))
    iy = np.clip(y0, -1, h - 1).astype(np.intp) + 1
    ix = np.clip(x0, -1, w - 1).astype(np.intp) + 1
    # before the rotation: resizes, crops and pads as per-axis tables of the tap pairs
    qy, qx = _chain(pre, 0, h), _chain(pre, 1, w)
    bsy, d0y, d1y, stage_y = _pairs(qy, [v for st in qy.stages for v in st[1:]])
    bsx, d0x, d1x, stage_x = _pairs(qx, [v for st in qx.stages for v in st[1:]])

    def pair(i: np.ndarray, t0: np.ndarray, t1: np.ndarray, a0: np.ndarray, a1: np.ndarray) -> np.ndarray:
        out = a0 * t0.astype(dtype).take(i)
        out += a1 * t1.astype(dtype).take(i)
        return out

    wy = np.stack([pair(iy, d0y[j], d1y[j], ay0, ay1) for j in range(d0y.shape[0])])
    wx = np.stack([pair(ix, d0x[j], d1x[j], ax0, ax1) for j in range(d0x.shape[0])])
    for s, st in enumerate(qy.stages):
        # the fill read at a pre-rotation stage, through the rotation's taps
        (b0y, b1y), (a0y, a1y) = stage_y[2 * s], stage_y[2 * s + 1]
        (b0x, b1x), (a0x, a1x) = stage_x[2 * s], stage_x[2 * s + 1]
        before = pair(iy, b0y, b1y, ay0, ay1) * pair(ix, b0x, b1x, ax0, ax1)
        before -= pair(iy, a0y, a1y, ay0, ay1) * pair(ix, a0x, a1x, ax0, ax1)
        bias += st[0] * before
    return _matrix(bsy.take(iy), wy, bsx.take(ix), wx, in_size), bias


def _groups(warps: Sequence[Warp]) -> list[list[Warp]]:
    """Split warps (forward order) into runs that pull back as separable taps: a rotation maps
    single taps, so after it a run takes crops and pads only; the next resampling (a
    ``Resize`` to a fixed model size, another rotation) starts a new run."""
    groups: list[list[Warp]] = []
    current: list[Warp] = []
    rotated = False
    for wp in warps:
        if rotated and wp.spreads:
            groups.append(current)
            current, rotated = [], False
        current.append(wp)
        rotated = rotated or isinstance(wp, _Rotation)
    if current:
        groups.append(current)
    return groups


def _pixel_major(images: np.ndarray) -> np.ndarray:
    """``N x H x W x C`` -> C-contiguous ``H x W x N x C`` (no copy when laid out so already)."""
    return np.ascontiguousarray(images.transpose(1, 2, 0, 3))


def _apply_group(group: Sequence[Warp], images: np.ndarray) -> tuple[np.ndarray, VjpFn]:
    n, h, w, c = images.shape
    out_h, out_w = group[-1].out_size
    dtype = images.dtype
    m, bias = _operator(group, dtype)
    y = m @ _pixel_major(images).reshape(h * w, n * c)
    if bias.any():
        y += bias.astype(dtype)[:, None]
    mt = m.T  # CSC: the transposed product scatters, no conversion

    def vjp(g: np.ndarray) -> np.ndarray:
        gi = mt @ _pixel_major(g).reshape(out_h * out_w, n * c)
        return gi.reshape(h, w, n, c).transpose(2, 0, 1, 3)

    return y.reshape(out_h, out_w, n, c).transpose(2, 0, 1, 3), vjp


def _apply_warps(warps: Sequence[Warp], images: np.ndarray) -> tuple[np.ndarray, list[VjpFn]]:
    live = [wp for wp in warps if not wp.identity]
    vjps: list[VjpFn] = []
    x = images
    for group in _groups(live):
        x, v = _apply_group(group, x)
        vjps.append(v)
    return x, vjps


class GeometricTransform:
    """A transform that resamples the pixel grid: ``warp`` draws its parameters for an input of
    ``size`` and returns the drawn :class:`Warp`; :func:`compose` fuses consecutive ones."""

    def warp(self, size: Size, rng: np.random.Generator) -> Warp:
        raise NotImplementedError

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]:
        return compose((self,), images, rng)


# --------------------------------------------------------------------------------------------
# The transforms


@dataclass(frozen=True)
class Pad(GeometricTransform):
    width: int = 12
    value: float = 0.5

    def warp(self, size: Size, rng: np.random.Generator) -> Warp:
        p = self.width
        return _Window(size, (size[0] + 2 * p, size[1] + 2 * p), (-p, -p), self.value)


@dataclass(frozen=True)
class Jitter(GeometricTransform):
    d: int = 8

    def warp(self, size: Size, rng: np.random.Generator) -> Warp:
        h, w = size
        d = self.d
        if d >= min(h, w):
            raise InputError(f"jitter {d} is not smaller than the image ({h}x{w})")
        oy, ox = (int(v) for v in rng.integers(0, d + 1, size=2))
        return _Window(size, (h - d, w - d), (oy, ox))


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` linear interpolation with half-pixel centres (edge-clamped)."""
    i0, i1, t = _axis_stencil(n_in, n_out)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - t)
    np.add.at(m, (np.arange(n_out), i1), t)
    return m


def resize_bilinear(images: np.ndarray, size: Size) -> tuple[np.ndarray, VjpFn]:
    """Bilinear resize of an ``N x H x W x C`` batch (half-pixel centres) and its adjoint."""
    h, w = images.shape[1:3]
    if (h, w) == tuple(size):
        return images, lambda g: g
    out, vjps = _apply_warps([_Bilinear((h, w), (int(size[0]), int(size[1])))], images)
    return out, vjps[0]


@dataclass(frozen=True)
class RandomScale(GeometricTransform):
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))

    def warp(self, size: Size, rng: np.random.Generator) -> Warp:
        s = float(self.scales[int(rng.integers(len(self.scales)))])
        h, w = size
        return _Bilinear(size, (max(1, int(s * h)), max(1, int(s * w))))


@dataclass(frozen=True)
class Resize(GeometricTransform):
    size: Size

    def warp(self, size: Size, rng: np.random.Generator) -> Warp:
        return _Bilinear(size, (int(self.size[0]), int(self.size[1])))


@dataclass(frozen=True)
class RandomRotate(GeometricTransform):
    angles: tuple[float, ...] = tuple(range(-10, 11)) + (0,) * 5
    fill: float = 0.5

    def warp(self, size: Size, rng: np.random.Generator) -> Warp:
        angle = float(self.angles[int(rng.integers(len(self.angles)))])
        return _Rotation(size, size, angle, self.fill)


def standard_transforms() -> tuple[Transform, ...]:
    """Lucid's ``standard_transforms``."""
    return (Pad(12, 0.5), Jitter(8), RandomScale(), RandomRotate(), Jitter(4))


def compose(transforms: Sequence[Transform], images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]:
    """Apply ``transforms`` in order (draws in order from ``rng``); the VJP runs them backwards.

    Consecutive :class:`GeometricTransform`\\ s are drawn first and applied as one sparse
    resampling per fusable run (see the module docstring)."""
    vjps: list[VjpFn] = []
    x = images
    pending: list[Warp] = []
    size: Size = (int(images.shape[1]), int(images.shape[2]))
    for t in transforms:
        if isinstance(t, GeometricTransform):
            wp = t.warp(size, rng)
            pending.append(wp)
            size = wp.out_size
            continue
        x, vs = _apply_warps(pending, x)
        vjps.extend(vs)
        pending = []
        x, v = t.apply(x, rng)
        vjps.append(v)
        size = (int(x.shape[1]), int(x.shape[2]))
    x, vs = _apply_warps(pending, x)
    vjps.extend(vs)

    def vjp(g: np.ndarray) -> np.ndarray:
        for v in reversed(vjps):
            g = v(g)
        return g

    return x, vjp
