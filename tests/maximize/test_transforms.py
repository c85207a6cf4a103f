"""Transforms: adjoints by the dot-product test (float64), Lucid's standard list, shared draws,
and the fused sparse resampling against the transforms applied one after the other."""

from __future__ import annotations

import numpy as np
import pytest

from onnxviz.maximize.transforms import (
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    Resize,
    compose,
    interpolation_matrix,
    resize_bilinear,
    standard_transforms,
)

TRANSFORMS = [
    Pad(3, 0.5),
    Jitter(4),
    RandomScale((0.9,)),
    RandomScale((1.1,)),
    RandomRotate((7.0,)),
    RandomRotate((-10.0,)),
    Resize((9, 13)),
]


@pytest.mark.parametrize("t", TRANSFORMS, ids=repr)
def test_vjp_is_the_adjoint_of_the_linear_part(t) -> None:
    """``<T(x) - T(0), g> == <x, T*(g)>`` with the same random draw (T is affine: fill values)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12, 11, 3))
    y, vjp = t.apply(x, np.random.default_rng(1))
    y0, _ = t.apply(np.zeros_like(x), np.random.default_rng(1))
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(np.vdot(y - y0, g), np.vdot(x, vjp(g)), rtol=1e-10)


def test_standard_transforms_are_lucids() -> None:
    pad, j8, scale, rot, j4 = standard_transforms()
    assert (pad.width, pad.value, j8.d, j4.d) == (12, 0.5, 8, 4)
    np.testing.assert_allclose(scale.scales, [0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1])
    assert sorted(set(rot.angles)) == list(range(-10, 11))
    assert rot.angles.count(0) == 6


def test_composition_adjoint_and_shapes() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 32, 32, 3))
    ts = standard_transforms() + (Resize((32, 32)),)
    y, vjp = compose(ts, x, np.random.default_rng(5))
    y0, _ = compose(ts, np.zeros_like(x), np.random.default_rng(5))
    assert y.shape == (3, 32, 32, 3)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(np.vdot(y - y0, g), np.vdot(x, vjp(g)), rtol=1e-10)


def test_one_draw_for_the_whole_batch() -> None:
    """Image i of a batch is transformed exactly as it is alone with the same generator."""
    x = np.random.default_rng(3).uniform(0, 1, (4, 20, 20, 3))
    batch, _ = compose(standard_transforms(), x, np.random.default_rng(9))
    alone, _ = compose(standard_transforms(), x[2:3], np.random.default_rng(9))
    np.testing.assert_allclose(batch[2:3], alone, atol=1e-12)


def test_known_answers() -> None:
    x = np.arange(2 * 5 * 5 * 1, dtype=np.float64).reshape(2, 5, 5, 1)
    y, _ = Pad(2, 0.5).apply(x, np.random.default_rng(0))
    assert y.shape == (2, 9, 9, 1) and y[0, 0, 0, 0] == 0.5 and y[0, 2, 2, 0] == 0
    y, _ = RandomRotate((0.0,)).apply(x, np.random.default_rng(0))
    np.testing.assert_array_equal(y, x)
    # rotation by 90 degrees on a square grid is an exact permutation
    y, _ = RandomRotate((90.0,)).apply(x, np.random.default_rng(0))
    # out[y, x] = in[n-1-x, y]: a clockwise quarter turn
    np.testing.assert_allclose(y[0, ..., 0], np.rot90(x[0, ..., 0], k=-1), atol=1e-9)
    # constant images stay constant under resizes; rows of the interpolation matrix sum to 1
    c = np.full((1, 7, 9, 2), 0.3)
    np.testing.assert_allclose(resize_bilinear(c, (11, 4))[0], 0.3)
    np.testing.assert_allclose(interpolation_matrix(7, 12).sum(axis=1), 1.0)
    y, _ = Jitter(3).apply(x, np.random.default_rng(0))
    assert y.shape == (2, 2, 2, 1)


# --------------------------------------------------------------------------------------------
# compose fuses the geometric transforms into one sparse resampling: it must equal applying
# them one after the other. The reference below is the plain sequential definition.


def _ref_interp(n_in: int, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        m[o, i0] += 1 - (src - i0)
        m[o, i1] += src - i0
    return m


def _ref_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if x.shape[1:3] == tuple(size):
        return x
    ry, rx = _ref_interp(x.shape[1], size[0]), _ref_interp(x.shape[2], size[1])
    return np.einsum("ah,nhwc,bw->nabc", ry, x, rx)


def _ref_rotate(x: np.ndarray, degrees: float, fill: float) -> np.ndarray:
    if degrees == 0:
        return x
    n, h, w, c = x.shape
    a = np.radians(degrees)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            sy = np.cos(a) * (i - cy) - np.sin(a) * (j - cx) + cy
            sx = np.sin(a) * (i - cy) + np.cos(a) * (j - cx) + cx
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            acc = np.zeros((n, c))
            for yi, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xi, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    inside = 0 <= yi < h and 0 <= xi < w
                    acc += wy * wx * (x[:, yi, xi] if inside else fill)
            out[:, i, j] = acc
    return out


def _ref_compose(ts, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for t in ts:
        if isinstance(t, Pad):
            p = t.width
            x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=t.value)
        elif isinstance(t, Jitter):
            oy, ox = rng.integers(0, t.d + 1, size=2)
            x = x[:, oy : oy + x.shape[1] - t.d, ox : ox + x.shape[2] - t.d]
        elif isinstance(t, RandomScale):
            s = t.scales[rng.integers(len(t.scales))]
            x = _ref_resize(x, (max(1, int(s * x.shape[1])), max(1, int(s * x.shape[2]))))
        elif isinstance(t, RandomRotate):
            x = _ref_rotate(x, float(t.angles[rng.integers(len(t.angles))]), t.fill)
        elif isinstance(t, Resize):
            x = _ref_resize(x, t.size)
        else:
            x, _ = t.apply(x, rng)
    return x


class _Negate:
    """A transform of another kind: compose applies it between the fused runs."""

    def apply(self, images, rng):
        return -images, lambda g: -g


CHAINS = {
    "standard": standard_transforms(),
    "standard+resize": standard_transforms() + (Resize((20, 18)),),
    "rotate-then-scale": (RandomRotate((7.0,), fill=0.2), RandomScale((1.1,)), Jitter(2)),
    "two-rotations": (Pad(2, 0.3), RandomRotate((-9.0, 4.0)), Pad(1, 0.7), RandomRotate((10.0,), fill=0.1)),
    "custom-in-between": (Pad(3, 0.5), RandomScale((0.9,)), _Negate(), RandomRotate((5.0,)), Jitter(3)),
    "downscale-pads": (Resize((9, 7)), Pad(4, 0.25), RandomRotate((-8.0,), fill=0.75), Pad(2, 0.5), Jitter(4)),
}


@pytest.mark.parametrize("name", list(CHAINS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_composition_equals_the_transforms_one_after_another(name: str, seed: int) -> None:
    ts = CHAINS[name]
    x = np.random.default_rng(seed).uniform(0, 1, (2, 17, 15, 3))
    y, vjp = compose(ts, x, np.random.default_rng(seed + 10))
    ref = _ref_compose(ts, x, np.random.default_rng(seed + 10))
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    y0, _ = compose(ts, np.zeros_like(x), np.random.default_rng(seed + 10))
    g = np.random.default_rng(seed + 20).standard_normal(y.shape)
    np.testing.assert_allclose(np.vdot(y - y0, g), np.vdot(x, vjp(g)), rtol=1e-10)


def test_pixel_major_inputs_and_float32() -> None:
    """Any strides in, the same values out; float32 stays float32 within rounding."""
    x = np.random.default_rng(4).uniform(0, 1, (3, 16, 16, 3))
    pm = np.ascontiguousarray(x.transpose(1, 2, 0, 3)).transpose(2, 0, 1, 3)
    a, _ = compose(standard_transforms(), x, np.random.default_rng(1))
    b, _ = compose(standard_transforms(), pm, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    c, vjp = compose(standard_transforms(), x.astype(np.float32), np.random.default_rng(1))
    assert c.dtype == np.float32 and vjp(c).dtype == np.float32
    np.testing.assert_allclose(c, a, atol=1e-6)
