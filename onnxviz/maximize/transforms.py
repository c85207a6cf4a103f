"""Random image transforms for transformation robustness (Lucid's ``lucid.optvis.transform``).

Each transform is a small frozen value whose ``apply(images, rng)`` draws its randomness from
the given generator, transforms an ``N x H x W x C`` batch and returns ``(output, vjp)``: the
transforms are linear maps of the image (plus a constant fill), so ``vjp`` is the adjoint of
the linear part. One draw serves the whole batch (as in Lucid), so image ``i`` of a batch sees
the same transforms as it would alone with the same generator.

* :class:`Pad` — constant border (0.5); adjoint: crop.
* :class:`Jitter` — random crop ``d`` pixels smaller, offsets uniform in ``0..d``; adjoint: zero pad.
* :class:`RandomScale` — bilinear resize by a factor drawn from a list; separable interpolation
  matrices (half-pixel centres), adjoint: their transposes.
* :class:`RandomRotate` — rotation about the centre by an angle (degrees) drawn from a list;
  bilinear sampling as a sparse matrix, adjoint: its transpose. Samples that fall outside the
  image read the fill value 0.5 (Lucid's TF rotate fills 0; after the 0.5 pad the difference only
  reaches the outer corners).
* :class:`Resize` — deterministic bilinear resize to a fixed size: the last step for models with
  a fixed input size (Lucent's ``Upsample`` to the model size plays the same role).

:func:`standard_transforms` is Lucid's ``standard_transforms``: pad 12, jitter 8, scale
``1 + (i-5)/50`` for ``i = 0..10``, rotate ``-10..10`` degrees with 0 given five extra copies,
jitter 4.
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
    "Jitter",
    "Pad",
    "RandomRotate",
    "RandomScale",
    "Resize",
    "Transform",
    "compose",
    "interpolation_matrix",
    "resize_bilinear",
    "standard_transforms",
]

VjpFn = Callable[[np.ndarray], np.ndarray]


class Transform(Protocol):
    def apply(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]: ...


@dataclass(frozen=True)
class Pad:
    width: int = 12
    value: float = 0.5

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]:
        p = self.width
        out = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=self.value)
        h, w = images.shape[1:3]

        def vjp(g: np.ndarray) -> np.ndarray:
            return g[:, p : p + h, p : p + w]

        return out, vjp


@dataclass(frozen=True)
class Jitter:
    d: int = 8

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]:
        n, h, w, c = images.shape
        d = self.d
        if d >= min(h, w):
            raise InputError(f"jitter {d} is not smaller than the image ({h}x{w})")
        oy, ox = (int(v) for v in rng.integers(0, d + 1, size=2))
        out = images[:, oy : oy + h - d, ox : ox + w - d]

        def vjp(g: np.ndarray) -> np.ndarray:
            full = np.zeros((n, h, w, c), dtype=g.dtype)
            full[:, oy : oy + h - d, ox : ox + w - d] = g
            return full

        return out, vjp


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` linear interpolation with half-pixel centres (edge-clamped)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - t)
    np.add.at(m, (np.arange(n_out), i1), t)
    return m


def resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, VjpFn]:
    """Bilinear resize of an ``N x H x W x C`` batch (half-pixel centres) and its adjoint."""
    h, w = images.shape[1:3]
    if (h, w) == tuple(size):
        return images, lambda g: g
    n, c = images.shape[0], images.shape[3]
    ho, wo = size
    ry = interpolation_matrix(h, ho).astype(images.dtype)
    rx = interpolation_matrix(w, wo).astype(images.dtype)
    # Two batched GEMMs: rows (H -> ho) on (N, H, W*C), then columns (W -> wo) on (N*ho, W, C).
    out = np.matmul(ry, images.reshape(n, h, w * c)).reshape(n * ho, w, c)
    out = np.matmul(rx, out).reshape(n, ho, wo, c)
    ryt, rxt = np.ascontiguousarray(ry.T), np.ascontiguousarray(rx.T)

    def vjp(g: np.ndarray) -> np.ndarray:
        gx = np.matmul(rxt, g.reshape(n * ho, wo, c)).reshape(n, ho, w * c)
        return np.matmul(ryt, gx).reshape(n, h, w, c)

    return out, vjp


@dataclass(frozen=True)
class RandomScale:
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]:
        s = float(self.scales[int(rng.integers(len(self.scales)))])
        h, w = images.shape[1:3]
        return resize_bilinear(images, (max(1, int(s * h)), max(1, int(s * w))))


@dataclass(frozen=True)
class Resize:
    size: tuple[int, int]

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]:
        return resize_bilinear(images, self.size)


def _rotation_matrix(h: int, w: int, degrees: float) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Bilinear sampling of an ``h x w`` image rotated by ``degrees`` about its centre: a sparse
    ``(h*w, h*w)`` matrix and, per output pixel, the weight that fell outside (read as fill)."""
    a = math.radians(degrees)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    # Output pixel p samples the input at R(-a) (p - c) + c.
    dy, dx = yy - cy, xx - cx
    sy = math.cos(a) * dy - math.sin(a) * dx + cy
    sx = math.sin(a) * dy + math.cos(a) * dx + cx
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    ty, tx = sy - y0, sx - x0
    rows, cols, vals = [], [], []
    out_idx = np.arange(h * w).reshape(h, w)
    for oy, ox, wt in ((0, 0, (1 - ty) * (1 - tx)), (0, 1, (1 - ty) * tx), (1, 0, ty * (1 - tx)), (1, 1, ty * tx)):
        yi, xi = y0 + oy, x0 + ox
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w) & (wt > 0)
        rows.append(out_idx[ok])
        cols.append((yi * w + xi)[ok])
        vals.append(wt[ok])
    m = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w)
    )
    outside = 1.0 - np.asarray(m.sum(axis=1)).ravel()
    return m, np.clip(outside, 0.0, 1.0)


@dataclass(frozen=True)
class RandomRotate:
    angles: tuple[float, ...] = tuple(range(-10, 11)) + (0,) * 5
    fill: float = 0.5

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VjpFn]:
        angle = float(self.angles[int(rng.integers(len(self.angles)))])
        if angle == 0.0:
            return images, lambda g: g
        n, h, w, c = images.shape
        m, outside = _rotation_matrix(h, w, angle)
        m = m.astype(images.dtype)
        flat = images.transpose(1, 2, 0, 3).reshape(h * w, n * c)
        out = (m @ flat).reshape(h, w, n, c).transpose(2, 0, 1, 3)
        out = out + (self.fill * outside.reshape(1, h, w, 1)).astype(images.dtype)
        mt = m.T.tocsr()

        def vjp(g: np.ndarray) -> np.ndarray:
            gf = g.transpose(1, 2, 0, 3).reshape(h * w, n * c)
            return (mt @ gf).reshape(h, w, n, c).transpose(2, 0, 1, 3)

        return np.ascontiguousarray(out), vjp


def standard_transforms() -> tuple[Transform, ...]:
    """Lucid's ``standard_transforms``."""
    return (Pad(12, 0.5), Jitter(8), RandomScale(), RandomRotate(), Jitter(4))


def compose(
    transforms: Sequence[Transform], images: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, VjpFn]:
    """Apply ``transforms`` in order (draws in order from ``rng``); the VJP runs them backwards."""
    vjps: list[VjpFn] = []
    x = images
    for t in transforms:
        x, v = t.apply(x, rng)
        vjps.append(v)

    def vjp(g: np.ndarray) -> np.ndarray:
        for v in reversed(vjps):
            g = v(g)
        return g

    return x, vjp
