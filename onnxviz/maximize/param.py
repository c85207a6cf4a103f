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

How :class:`FFTParam` runs (the same maps, in an order that is cheap): the colour matrix acts on
the channel axis and the FFT on the spatial axes, so they commute and the colour mix is applied
to the parameters (half the image's size, channels contiguous) before the FFT. The spectrum is
laid out pixel-major, ``h x (w//2+1) x N x C``, and transformed with ``scipy.fft`` in single or
double precision as the parameters (an inverse FFT along the rows, then an inverse real FFT
along the columns: exactly ``irfft2``'s two passes); the image therefore comes out pixel-major,
``H x W x N x C`` in memory, and is returned as an ``N x H x W x C`` *view* of it, which the
transforms (:mod:`onnxviz.maximize.transforms`) read without a transpose. The sigmoid is
``(1 + tanh(x/2)) / 2`` (no overflow, no float64 temporaries). Nothing here calls BLAS: in a
visualization step these run between onnxruntime calls whose threads still hold the cores.

:class:`ModelInput` maps the [0, 1] image to the model's input (the model's :class:`Preprocess`:
value range, mean/std, NCHW/NHWC) and back for gradients; the multiply by the scale writes the
destination layout directly (the layout change costs no extra pass), and the gradient comes back
pixel-major for the transforms' adjoints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.fft as sfft

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
COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float64)
#: Divided by the largest column norm, as Lucid's ``color_correlation_normalized``.
COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))

VjpFn = Callable[[np.ndarray], np.ndarray]


class Parametrization(Protocol):
    """``init`` draws parameters; ``forward`` maps them to images and returns the VJP."""

    height: int
    width: int
    channels: int

    def init(self, batch: int, rng: np.random.Generator) -> np.ndarray: ...

    def forward(self, params: np.ndarray) -> tuple[np.ndarray, VjpFn]: ...


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` as ``(1 + tanh(x/2)) / 2``: no overflow, the input's precision."""
    s = np.multiply(x, 0.5)
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    return s


def _sigmoid_vjp(s: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g * s * (1 - s)`` for ``s = sigmoid(x)``."""
    gt = np.subtract(1.0, s, dtype=s.dtype)
    gt *= s
    gt *= g
    return gt


def _mix(x: np.ndarray, m: np.ndarray, axis: int) -> np.ndarray:
    """``m @ x`` along ``axis`` (size 3) without BLAS: a 3x3 colour matrix."""
    letters = [chr(ord("a") + i) for i in range(x.ndim)]
    into = letters.copy()
    letters[axis], into[axis] = "y", "z"
    return np.einsum(f"zy,{''.join(letters)}->{''.join(into)}", m.astype(x.dtype), x)


def _to_valid(t: np.ndarray, decorrelate: bool) -> tuple[np.ndarray, VjpFn]:
    """Lucid's ``to_valid_rgb(t, decorrelate, sigmoid=True)`` on ``N x H x W x C`` and its VJP."""
    use_colour = decorrelate and t.shape[-1] == 3
    mat = COLOR_CORRELATION_NORMALIZED
    if use_colour:
        t = _mix(t, mat, -1)
    s = _sigmoid(t)

    def vjp(g: np.ndarray) -> np.ndarray:
        gt = _sigmoid_vjp(s, g)
        return _mix(gt, mat.T, -1) if use_colour else gt

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
    """Lucid's ``fft_image``: parameters ``(N, 2, C, h, w//2+1)`` (real and imaginary parts).

    ``forward`` returns ``N x H x W x C`` images that are views of pixel-major memory (see the
    module docstring)."""

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

    @functools.cached_property
    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Forward spectrum weights (Lucid's scale / 4) and the adjoint's (times ``m / (h*w)``)."""
        h, w = self.height, self.width
        forward = spectrum_scale(h, w, self.decay_power) / 4.0
        return forward, forward * self._multiplicity() / (h * w)

    @property
    def _colour(self) -> np.ndarray | None:
        return COLOR_CORRELATION_NORMALIZED if self.decorrelate and self.channels == 3 else None

    def _linear(self, params: np.ndarray, mix: np.ndarray | None, gain: float = 1.0) -> tuple[np.ndarray, VjpFn]:
        """Parameters -> pixel-major ``H x W x N x C`` image (before the sigmoid) times ``gain``,
        and the VJP (of the map without the gain) from such an image's gradient (any strides)."""
        if params.shape[1:] != self.shape:
            raise InputError(f"FFT parameters have shape {params.shape[1:]}, expected {self.shape}")
        n, c, h, w, wf = params.shape[0], self.channels, self.height, self.width, self.width // 2 + 1
        real = np.result_type(params.dtype, np.float32)
        cplx = np.result_type(real, np.complex64)
        fw, bw = self._weights
        fw, bw = (fw * gain).astype(real), bw.astype(real)
        q = params if mix is None else _mix(params, mix, 2)
        spec = np.empty((h, wf, n, c), dtype=cplx)
        # written in the parameters' order (reads contiguous), into the pixel-major spectrum
        np.multiply(q, fw, out=spec.view(real).reshape(h, wf, n, c, 2).transpose(2, 4, 3, 0, 1))
        # workers: the transforms of the batch's images and channels are independent, so the
        # results are the same with any number of threads (16 images of 128x128: 5.0 -> 3.1 ms)
        spec = sfft.ifft(spec, axis=0, overwrite_x=True, workers=-1)
        img = sfft.irfft(spec, n=w, axis=1, workers=-1)

        def vjp(g: np.ndarray) -> np.ndarray:
            gs = sfft.rfft(g, axis=1, workers=-1)
            gs = sfft.fft(gs, axis=0, overwrite_x=True, workers=-1)
            out = np.empty((n, 2, c, h, wf), dtype=params.dtype)
            np.multiply(gs.view(real).reshape(h, wf, n, c, 2).transpose(2, 4, 3, 0, 1), bw, out=out)
            return out if mix is None else _mix(out, mix.T, 2)

        return img, vjp

    def spatial(self, params: np.ndarray) -> tuple[np.ndarray, VjpFn]:
        """The linear part: parameters -> ``N x H x W x C`` before colour and sigmoid."""
        img, vjp = self._linear(params, None)
        return img.transpose(2, 0, 1, 3), lambda g: vjp(g.transpose(1, 2, 0, 3))

    def forward(self, params: np.ndarray) -> tuple[np.ndarray, VjpFn]:
        mix = self._colour
        # sigmoid(t) = (1 + tanh(t/2)) / 2: the halving rides on the spectrum weights
        half, vjp_lin = self._linear(params, mix, 0.5)
        s = np.tanh(half, out=half)
        s *= 0.5
        s += 0.5

        def vjp(g: np.ndarray) -> np.ndarray:
            return vjp_lin(_sigmoid_vjp(s, g.transpose(1, 2, 0, 3)))

        return s.transpose(2, 0, 1, 3), vjp


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
        """``N x H x W x C`` images (any strides) -> the model's input, C-contiguous."""
        mul, add = self._affine(images.dtype)
        n, h, w, c = images.shape
        # pixel-major (free for the transforms' outputs); ufuncs then run on 2-D views whose
        # inner loops are long (a trailing axis of 3 channels makes numpy's loops crawl)
        pm = np.ascontiguousarray(images.transpose(1, 2, 0, 3)).reshape(h * w, n * c)
        if self.pre.layout == "NCHW":
            out = np.empty((n, c, h, w), dtype=images.dtype)
            flat = out.reshape(n * c, h * w)
            np.multiply(pm.T, np.tile(mul, n)[:, None], out=flat)
            flat += np.tile(add, n)[:, None]
            return out
        out = np.empty((n, h, w, c), dtype=images.dtype)
        np.multiply(pm.reshape(h * w, n, c).transpose(1, 0, 2), mul, out=out.reshape(n, h * w, c))
        out += add
        return out

    def vjp(self, g: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the model input -> w.r.t. the ``N x H x W x C`` images, returned
        as a view of pixel-major (``H x W x N x C``) memory, the transforms' layout."""
        mul, _ = self._affine(g.dtype)
        nchw = self.pre.layout == "NCHW"
        n, h, w, c = (g.shape[0], g.shape[2], g.shape[3], g.shape[1]) if nchw else g.shape
        out = np.empty((h, w, n, c), dtype=g.dtype)
        flat = out.reshape(h * w, n * c)
        if nchw:
            # iterate in g's order (long contiguous reads), write transposed
            np.multiply(np.ascontiguousarray(g).reshape(n * c, h * w), np.tile(mul, n)[:, None], out=flat.T)
        else:
            np.multiply(g.reshape(n, h * w, c), mul, out=flat.reshape(h * w, n, c).transpose(1, 0, 2))
        return out.transpose(2, 0, 1, 3)

    def to_images(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`forward` (no clipping)."""
        mul, add = self._affine(x.dtype)
        if self.pre.layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
        return (x - add) / mul
