"""Transforms: adjoints by the dot-product test (float64), Lucid's standard list, shared draws."""

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
