"""The conv kernels against each other: every fast path (tap products, depthwise, pointwise) must
give what im2col gives on the same geometry, in float64 to rounding, batch blocks included.

The op-level checks (forward vs onnxruntime, VJP by finite differences) run on small channel
counts that the dispatch sends to im2col; this covers the paths it picks for real models."""

from __future__ import annotations

import numpy as np
import pytest
from onnxviz.backends.numpy.ops import conv_kernels as ck

# (input shape, weight shape, attributes)
GEOMETRIES = [
    ((2, 5, 7, 6), (4, 5, 3, 3), {"pads": [1, 1, 1, 1]}),
    (
        (3, 4, 9, 8),
        (6, 4, 3, 2),
        {"strides": [2, 1], "pads": [1, 0, 0, 2], "dilations": [2, 1]},
    ),
    ((2, 3, 11, 10), (2, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 3, 12, 13), (5, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    ((2, 4, 10, 9), (3, 4, 3, 3), {"strides": [3, 2], "pads": [0, 2, 1, 0]}),
    ((1, 2, 7, 8), (3, 2, 4, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 7, 8), (3, 2, 4, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((2, 3, 6, 6), (2, 3, 2, 2), {"auto_pad": "SAME_UPPER", "dilations": [2, 2]}),
    ((2, 3, 7, 8), (2, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ((1, 2, 5, 5), (3, 2, 3, 3), {"pads": [2, 0, 0, 2]}),
    ((3, 4, 11), (6, 4, 3), {"strides": [2], "pads": [1, 2]}),
    ((2, 2, 9), (3, 2, 4), {"dilations": [2], "pads": [3, 3]}),
    (
        (1, 2, 4, 5, 4),
        (3, 2, 2, 3, 2),
        {"strides": [1, 2, 1], "pads": [1, 0, 1, 0, 1, 1]},
    ),
    ((2, 3, 5, 4, 5), (2, 3, 3, 3, 3), {"pads": [1, 1, 1, 1, 1, 1]}),
]


def _geometry(x: tuple[int, ...], w: tuple[int, ...], attrs: dict) -> ck.ConvGeometry:
    return ck.conv_geometry(
        x,
        w,
        None,
        attrs.get("strides"),
        attrs.get("dilations"),
        attrs.get("pads"),
        attrs.get("auto_pad", "NOTSET"),
        int(attrs.get("group", 1)),
    )


@pytest.mark.parametrize("block_bytes", [ck._BLOCK_BYTES, 1])
@pytest.mark.parametrize(
    "case", GEOMETRIES, ids=lambda c: f"{c[0]}-{c[1]}-{sorted(c[2].items())}"
)
def test_row_products_equal_im2col(
    case: tuple, block_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ck, "_BLOCK_BYTES", block_bytes)  # 1: one image per block
    xs, ws, attrs = case
    rng = np.random.default_rng(0)
    x, w, b = (
        rng.standard_normal(xs),
        rng.standard_normal(ws),
        rng.standard_normal(ws[0]),
    )
    g = _geometry(xs, ws, attrs)
    want = ck._im2col_forward(x, w, g) + b.reshape(-1, *(1,) * (len(xs) - 2))
    got = ck._row_products(x, w, g, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        ck._row_products(x, w, g, None),
        want - b.reshape(-1, *(1,) * (len(xs) - 2)),
        rtol=1e-12,
        atol=1e-12,
    )


def test_row_products_float32_stays_float32() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 40, 30, 30), dtype=np.float32)
    w = rng.standard_normal((16, 40, 3, 3), dtype=np.float32)
    g = _geometry(x.shape, w.shape, {"pads": [1, 1, 1, 1]})
    assert ck._use_row_products(2, 40, 16, g)
    got = ck.conv_forward(x, w, g)
    want = ck._im2col_forward(x.astype(np.float64), w.astype(np.float64), g)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("row_bytes", [ck._ROW_BYTES, 1])
@pytest.mark.parametrize(
    "case", GEOMETRIES, ids=lambda c: f"{c[0]}-{c[1]}-{sorted(c[2].items())}"
)
def test_depthwise_equals_grouped_im2col(
    case: tuple, row_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        ck, "_ROW_BYTES", row_bytes
    )  # 1: one (batch, channel) row per block
    xs, ws, attrs = case
    c = xs[1]
    ws = (c, 1, *ws[2:])
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(c)
    g = _geometry(xs, ws, dict(attrs, group=c))
    want = ck._im2col_forward(x, w, g) + b.reshape(-1, *(1,) * (len(xs) - 2))
    got = ck.conv_forward(x, w, g, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    last = ck._depthwise_channels_last(x, w, g, b, ck._phases(g))  # the small-map path
    np.testing.assert_allclose(last, want, rtol=1e-12, atol=1e-12)
    unbiased = ck._depthwise_channels_last(x, w, g, None, ck._phases(g))
    np.testing.assert_allclose(
        unbiased, want - b.reshape(-1, *(1,) * (len(xs) - 2)), rtol=1e-12, atol=1e-12
    )
