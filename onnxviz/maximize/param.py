"""Image parametrizations: parameters -> image in [0, 1] (``N x H x W x C``), with exact VJPs.

Two parametrizations, as Lucid's ``lucid.optvis.param.image``:

* :class:`PixelParam` — one parameter per pixel value, N(0, sd) init;
* :class:`FFTParam` — the image is the inverse real FFT of a parameter spectrum scaled by
  ``1 / max(f, 1/max(h, w))**decay * sqrt(h*w)``, divided by 4 (Lucid's ``fft_image``).

Both then go through Lucid's ``to_valid_rgb``: for 3 channels a linear colour decorrelation
``x @ C_norm.T`` (the square root of ImageNet's colour covariance, divided by its largest column
norm), and a sigmoid to (0, 1). One-channel (grey) and other channel counts skip the colour
matrix.

The VJPs are written by hand. For the FFT: ``y = irfft2(X, s=(h, w))`` is real-linear in
``(Re X, Im X)`` and its adjoint is ``m[kx] / (h*w) * rfft2(g)``, with ``m = 1`` for the DC column
(and the Nyquist column when ``w`` is even, whose imaginary parts ``irfft`` ignores) and ``m = 2``
for the other columns, which stand for themselves and their conjugate mirror.

Difference from Lucid: Lucid keeps ``w//2 + 2`` columns for odd ``w`` and crops the ``w+1``-wide
result; here the spectrum has exactly ``w//2 + 1`` columns and ``irfft2`` is given ``s=(h, w)``.

:class:`ModelInput` maps the [0, 1] image to the model's input (the model's :class:`Preprocess`:
value range, mean/std, NCHW/NHWC) and back for gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import InputError
from ..inputs import Preprocess

__all__ = [
    "COLOR_CORRELATION_NORMALIZED",
    "COLOR_CORRELATION_SVD_SQRT",
    "FFTParam",
    "ModelInput",
    "Parametrization",
    "PixelParam",
    "make_param",
    "rfft2d_freqs",
    "spectrum_scale",
]

#: Lucid's ``color_correlation_svd_sqrt`` (ImageNet colour covariance, square root by SVD).
COLOR_CORRELATION_SVD_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float64
)
#: Divided by the largest column norm, as Lucid's ``color_correlation_normalized``.
COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / np.max(
    np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)
)

VjpFn = Callable[[np.ndarray], np.ndarray]


class Parametrization(Protocol):
    """``init`` draws parameters; ``forward`` maps them to images and returns the VJP."""

    height: int
    width: int
    channels: int

    def init(self, batch: int, rng: np.random.Generator) -> np.ndarray: ...

    def forward(self, params: np.ndarray) -> tuple[np.ndarray, VjpFn]: ...


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Two-sided form: no overflow warning for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _to_valid(t: np.ndarray, decorrelate: bool) -> tuple[np.ndarray, VjpFn]:
    """Lucid's ``to_valid_rgb(t, decorrelate, sigmoid=True)`` on ``N x H x W x C`` and its VJP."""
    use_colour = decorrelate and t.shape[-1] == 3
    if use_colour:
        mat = COLOR_CORRELATION_NORMALIZED.astype(t.dtype)
        t = t @ mat.T
    s = _sigmoid(t)

    def vjp(g: np.ndarray) -> np.ndarray:
        gt = g * s * (1.0 - s)
        return gt @ mat if use_colour else gt

    return s, vjp


def _check_size(height: int, width: int, channels: int) -> None:
    if height < 1 or width < 1 or channels < 1:
        raise InputError(f"image size must be positive, got {height}x{width}x{channels}")


@dataclass(frozen=True)
class PixelParam:
    """One parameter per pixel value (``N x H x W x C``), then ``to_valid_rgb``."""

    height: int
    width: int
    channels: int = 3
    sd: float = 0.01
    decorrelate: bool = True

    def __post_init__(self) -> None:
        _check_size(self.height, self.width, self.channels)

    def init(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """Image ``i`` uses the ``i``-th block of draws, so a batch starts like its images alone."""
        return rng.normal(0.0, self.sd, size=(batch, self.height, self.width, self.channels))

    def forward(self, params: np.ndarray) -> tuple[np.ndarray, VjpFn]:
        return _to_valid(params, self.decorrelate)


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Spatial frequency magnitude of each entry of an ``h x (w//2+1)`` real-FFT spectrum."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """Lucid's ``1 / max(f, 1/max(w, h))**decay * sqrt(w*h)``."""
    freqs = rfft2d_freqs(h, w)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
    return scale * np.sqrt(w * h)


@dataclass(frozen=True)
class FFTParam:
    """Lucid's ``fft_image``: parameters ``(N, 2, C, h, w//2+1)`` (real and imaginary parts)."""

    height: int
    width: int
    channels: int = 3
    sd: float = 0.01
    decay_power: float = 1.0
    decorrelate: bool = True

    def __post_init__(self) -> None:
        _check_size(self.height, self.width, self.channels)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (2, self.channels, self.height, self.width // 2 + 1)

    def init(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """N(0, sd) spectrum; image ``i`` uses the ``i``-th block of draws."""
        return rng.normal(0.0, self.sd, size=(batch,) + self.shape)

    def _multiplicity(self) -> np.ndarray:
        m = np.full(self.width // 2 + 1, 2.0)
        m[0] = 1.0
        if self.width % 2 == 0:
            m[-1] = 1.0
        return m

    def spatial(self, params: np.ndarray) -> tuple[np.ndarray, VjpFn]:
        """The linear part: parameters -> ``N x H x W x C`` before colour and sigmoid."""
        if params.shape[1:] != self.shape:
            raise InputError(f"FFT parameters have shape {params.shape[1:]}, expected {self.shape}")
        h, w = self.height, self.width
        dtype = params.dtype
        scale = spectrum_scale(h, w, self.decay_power)
        spectrum = scale * (params[:, 0] + 1j * params[:, 1])
        img = np.fft.irfft2(spectrum, s=(h, w), axes=(-2, -1))  # (N, C, H, W)
        img = (img.transpose(0, 2, 3, 1) / 4.0).astype(dtype, copy=False)
        weight = scale * self._multiplicity() / (h * w)

        def vjp(g: np.ndarray) -> np.ndarray:
            gs = np.fft.rfft2(g.transpose(0, 3, 1, 2) / 4.0, axes=(-2, -1)) * weight
            return np.stack([gs.real, gs.imag], axis=1).astype(dtype, copy=False)

        return img, vjp

    def forward(self, params: np.ndarray) -> tuple[np.ndarray, VjpFn]:
        t, vjp_lin = self.spatial(params)
        img, vjp_valid = _to_valid(t, self.decorrelate)
        return img, lambda g: vjp_lin(vjp_valid(g))


def make_param(kind: str, height: int, width: int, channels: int, **kwargs: float) -> Parametrization:
    """``"fft"`` (default of :func:`onnxviz.maximize.visualize`) or ``"pixel"``."""
    if kind == "fft":
        return FFTParam(height, width, channels, **kwargs)  # type: ignore[arg-type]
    if kind == "pixel":
        return PixelParam(height, width, channels, **kwargs)  # type: ignore[arg-type]
    raise InputError(f"unknown parametrization {kind!r}", hint="use 'fft' or 'pixel'")


@dataclass(frozen=True)
class ModelInput:
    """The model's preprocessing of ``N x H x W x C`` images in [0, 1], and its VJP.

    ``x_model = x01 * mul + add`` per channel (:class:`Preprocess`'s value range and mean/std),
    transposed to ``N x C x H x W`` for NCHW models. The image must already have the model's
    channel count (the parametrization is built with it) and size.
    """

    pre: Preprocess

    def __post_init__(self) -> None:
        if self.pre.channels not in (1, 3):
            raise InputError(
                f"feature visualization supports 1- and 3-channel image inputs, the model has {self.pre.channels}",
                hint="use a model with a grey or RGB image input",
            )

    def _affine(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        mul, add = self.pre._affine()
        return mul.astype(dtype), add.astype(dtype)

    def forward(self, images: np.ndarray) -> np.ndarray:
        mul, add = self._affine(images.dtype)
        x = images * mul + add
        if self.pre.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def vjp(self, g: np.ndarray) -> np.ndarray:
        mul, _ = self._affine(g.dtype)
        if self.pre.layout == "NCHW":
            g = g.transpose(0, 2, 3, 1)
        return g * mul

    def to_images(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`forward` (no clipping)."""
        mul, add = self._affine(x.dtype)
        if self.pre.layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
        return (x - add) / mul
