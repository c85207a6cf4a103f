"""Parametrizations and the model's preprocessing: Lucid's numbers, VJPs by finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from onnxviz.errors import InputError
from onnxviz.inputs import Preprocess
from onnxviz.maximize.param import (
    COLOR_CORRELATION_NORMALIZED,
    FFTParam,
    ModelInput,
    PixelParam,
    spectrum_scale,
)


def _vjp_check(forward, params: np.ndarray, eps: float = 1e-6) -> None:
    """``<u, VJP(v)>`` against ``<v, (f(p+eps u) - f(p-eps u)) / 2 eps>`` in float64."""
    rng = np.random.default_rng(0)
    out, vjp = forward(params)
    for _ in range(3):
        u = rng.standard_normal(params.shape)
        v = rng.standard_normal(out.shape)
        fd = (forward(params + eps * u)[0] - forward(params - eps * u)[0]) / (2 * eps)
        np.testing.assert_allclose(np.vdot(u, vjp(v)), np.vdot(v, fd), rtol=1e-6, atol=1e-9)


def test_lucid_constants() -> None:
    raw = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    np.testing.assert_allclose(COLOR_CORRELATION_NORMALIZED, raw / np.linalg.norm(raw, axis=0).max())
    s = spectrum_scale(8, 8)
    # DC is floored at 1/max(w, h); the corner frequency (0.5, 0.5) has |f| = sqrt(0.5)
    assert s[0, 0] == pytest.approx(8 * 8)
    assert s[4, 4] == pytest.approx(8 / np.sqrt(0.5))


@pytest.mark.parametrize("h,w", [(8, 8), (7, 9), (6, 5), (1, 4)])
@pytest.mark.parametrize("channels", [3, 1])
def test_fft_vjp_matches_finite_differences(h: int, w: int, channels: int) -> None:
    p = FFTParam(h, w, channels)
    params = p.init(2, np.random.default_rng(1)) * 20  # away from the sigmoid's flat middle only
    _vjp_check(p.spatial, params)
    _vjp_check(p.forward, params)


@pytest.mark.parametrize("channels,decorrelate", [(3, True), (3, False), (1, True)])
def test_pixel_vjp_matches_finite_differences(channels: int, decorrelate: bool) -> None:
    p = PixelParam(5, 4, channels, sd=1.0, decorrelate=decorrelate)
    _vjp_check(p.forward, p.init(2, np.random.default_rng(2)))


def test_fft_image_is_lucid_fft_image() -> None:
    """The image is irfft2(scale * spectrum) / 4, then x @ C.T and a sigmoid, in [0, 1]."""
    p = FFTParam(6, 8, 3)
    params = p.init(1, np.random.default_rng(3))
    spec = spectrum_scale(6, 8) * (params[0, 0] + 1j * params[0, 1])
    lin = np.fft.irfft2(spec, s=(6, 8)).transpose(1, 2, 0) / 4
    expect = 1 / (1 + np.exp(-(lin @ COLOR_CORRELATION_NORMALIZED.T)))
    img, _ = p.forward(params)
    np.testing.assert_allclose(img[0], expect, rtol=1e-12)
    assert img.shape == (1, 6, 8, 3) and 0 < img.min() and img.max() < 1


def test_init_is_per_image_blocks() -> None:
    """Image i of a batch starts from the i-th block of draws (a gallery = runs from its blocks)."""
    p = FFTParam(4, 4, 3)
    batch = p.init(3, np.random.default_rng(5))
    assert batch.shape == (3, 2, 3, 4, 3)
    np.testing.assert_array_equal(batch[0], p.init(1, np.random.default_rng(5))[0])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("preset,channels", [("imagenet", 3), ("-1-1", 3), ("0-255", 1), ("imagenet", 1)])
def test_model_input_matches_image_to_array_and_vjp(layout: str, preset: str, channels: int) -> None:
    from onnxviz.inputs import image_to_array

    pre = Preprocess(layout=layout, channels=channels, preset=preset)  # type: ignore[arg-type]
    mi = ModelInput(pre)
    imgs = np.random.default_rng(6).uniform(0, 1, (2, 5, 4, channels))
    x = mi.forward(imgs)
    ref = np.stack([image_to_array(i, pre) for i in imgs])
    assert x.shape == ref.shape
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mi.to_images(x), imgs, atol=1e-12)
    g = np.random.default_rng(7).standard_normal(x.shape)
    u = np.random.default_rng(8).standard_normal(imgs.shape)
    np.testing.assert_allclose(np.vdot(mi.vjp(g), u), np.vdot(g, mi.forward(imgs + u) - x), rtol=1e-10)


def test_errors() -> None:
    with pytest.raises(InputError):
        ModelInput(Preprocess(channels=4))
    with pytest.raises(InputError, match="expected"):
        FFTParam(4, 4, 3).forward(np.zeros((1, 2, 3, 4, 4)))


def test_fft_float32_follows_float64() -> None:
    """The single-precision path (complex64 FFTs, float32 sigmoid) is the same map."""
    p = FFTParam(12, 10, 3)
    params = p.init(3, np.random.default_rng(9)) * 30
    img64, vjp64 = p.forward(params)
    img32, vjp32 = p.forward(params.astype(np.float32))
    assert img32.dtype == np.float32
    np.testing.assert_allclose(img32, img64, atol=2e-6)
    g = np.random.default_rng(10).standard_normal(img64.shape)
    grad32 = vjp32(g.astype(np.float32))
    assert grad32.dtype == np.float32 and grad32.shape == params.shape
    np.testing.assert_allclose(grad32, vjp64(g), rtol=1e-4, atol=1e-6 * np.abs(vjp64(g)).max())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_model_input_reads_any_strides(layout: str) -> None:
    """Pixel-major views (the transforms' outputs) and C-contiguous batches give the same input."""
    mi = ModelInput(Preprocess(layout=layout, channels=3, preset="imagenet"))  # type: ignore[arg-type]
    imgs = np.random.default_rng(11).uniform(0, 1, (4, 6, 5, 3))
    pm = np.ascontiguousarray(imgs.transpose(1, 2, 0, 3)).transpose(2, 0, 1, 3)
    np.testing.assert_array_equal(mi.forward(pm), mi.forward(imgs))
    assert mi.forward(pm).flags.c_contiguous
    g = np.random.default_rng(12).standard_normal(mi.forward(imgs).shape)
    back = mi.vjp(g)
    assert back.shape == imgs.shape and back.transpose(1, 2, 0, 3).flags.c_contiguous
