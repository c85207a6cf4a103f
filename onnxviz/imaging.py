"""Pure image helpers for reports: scaling, colormaps, grids, kernels, PNG encoding.

Conventions used throughout this module (see METHODS.md, "Rendering conventions"):

* An *image* is a float array of shape ``(H, W)`` (grey) or ``(H, W, C)`` with ``C`` in
  ``{1, 3, 4}`` (grey, RGB, RGBA), values in ``[0, 1]``, in display (sRGB-encoded) space.
  ``uint8`` arrays are accepted where an image is encoded (``to_uint8``, ``png_bytes``).
* A *map* (saliency, attribution, feature map) is a real array of shape ``(H, W)`` with
  arbitrary range; it becomes an image through ``scale_map`` and a ``Colormap``.
* Non-negative maps use a sequential colormap; signed maps use the diverging blue-white-red
  colormap with zero at white. Both are clipped at a percentile of ``|value|`` (99 by
  default), so that a few extreme pixels do not wash out the rest of the map.
* Every function is pure: inputs are never modified, outputs are fresh arrays, and there is
  no module-level mutable state (the colormap table is a read-only mapping of frozen objects).

Invalid arguments raise :class:`~onnxviz.errors.InputError`; failing to write a file raises
:class:`~onnxviz.errors.ReportError`.
"""

from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from .errors import InputError

__all__ = [
    "Colormap",
    "COLORMAPS",
    "get_colormap",
    "to_uint8",
    "png_bytes",
    "data_uri",
    "save_png",
    "scale_map",
    "heatmap",
    "overlay",
    "resize",
    "upscale_nearest",
    "tile_grid",
    "kernel_image",
    "kernel_images",
    "feature_map_image",
]

FloatArray = NDArray[np.float64]

#: zlib level used for every PNG. Fixed so that the same array always gives the same bytes
#: (with the same zlib build); 6 is zlib's own default trade-off between size and speed.
PNG_COMPRESS_LEVEL = 6


# --------------------------------------------------------------------------------------------
# validation helpers


def _as_float(a: ArrayLike, what: str) -> FloatArray:
    """``a`` as a fresh-or-shared float64 array, refusing NaN/inf (they hide upstream bugs)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(
            f"{what} of shape {arr.shape} contains {bad} non-finite value(s) (NaN or inf)",
            hint="check the computation that produced it; onnxviz does not guess a value for NaN",
        )
    return arr


def _check_image_shape(shape: tuple[int, ...], what: str) -> None:
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
        if shape[0] > 0 and shape[1] > 0:
            return
    raise InputError(
        f"{what} must have shape (H, W) or (H, W, C) with C in 1, 3, 4 and H, W > 0; "
        f"got {shape}"
    )


def _check_map(m: ArrayLike, what: str = "map") -> FloatArray:
    arr = _as_float(m, what)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"{what} must be a non-empty 2-D array (H, W); got shape {arr.shape}")
    return arr


def _check_percentile(p: float) -> float:
    p = float(p)
    if not (0.0 < p <= 100.0):
        raise InputError(f"clip_percentile must be in (0, 100], got {p}")
    return p


def _as_rgb(img: FloatArray, what: str) -> FloatArray:
    """Grey ``(H, W)`` / ``(H, W, 1)`` or RGB ``(H, W, 3)`` image as ``(H, W, 3)``."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise InputError(
        f"{what} must be grey (H, W) or RGB (H, W, 3); got shape {img.shape}",
        hint="drop the alpha channel of RGBA images first",
    )


# --------------------------------------------------------------------------------------------
# colour spaces and colormaps


def _srgb_to_linear(c: FloatArray) -> FloatArray:
    """IEC 61966-2-1 sRGB transfer function, decoding direction."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: FloatArray) -> FloatArray:
    """IEC 61966-2-1 sRGB transfer function, encoding direction."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1.0 / 2.4) - 0.055)


def _hex_to_rgb(h: str) -> tuple[float, float, float]:
    h = h.lstrip("#")
    if len(h) != 6:
        raise InputError(f"colour {h!r} is not of the form #rrggbb")
    return (int(h[0:2], 16) / 255.0, int(h[2:4], 16) / 255.0, int(h[4:6], 16) / 255.0)


@dataclass(frozen=True)
class Colormap:
    """A colormap: values in ``[0, 1]`` to sRGB colours in ``[0, 1]``.

    Defined by control colours (sRGB, in ``[0, 1]``) at increasing positions from 0 to 1.
    Between control points the colour is interpolated piecewise-linearly in *linear* RGB
    (light intensity) and encoded back to sRGB, which avoids the dark, muddy midpoints of
    interpolating sRGB codes directly. At a control position the result is that control
    colour (up to float rounding).

    ``kind`` is ``"sequential"`` (for non-negative maps, 0 at the low end) or
    ``"diverging"`` (for signed maps: ``0.5`` is the neutral colour; ``heatmap`` sends a
    signed map's ``[-1, 1]`` to ``[0, 1]`` by ``(s + 1) / 2``).

    Calling a colormap on an array of shape ``S`` returns a float64 array of shape
    ``S + (3,)``. Values outside ``[0, 1]`` are clipped; NaN or inf raise ``InputError``.
    """

    name: str
    kind: Literal["sequential", "diverging"]
    positions: tuple[float, ...]
    colors: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        if self.kind not in ("sequential", "diverging"):
            raise InputError(
                f"colormap kind must be 'sequential' or 'diverging', got {self.kind!r}"
            )
        pos = np.asarray(self.positions, dtype=np.float64)
        cols = np.asarray(self.colors, dtype=np.float64)
        if pos.ndim != 1 or pos.size < 2 or cols.shape != (pos.size, 3):
            raise InputError(
                f"colormap {self.name!r} needs >= 2 positions and one RGB colour per position; "
                f"got positions {pos.shape} and colours {cols.shape}"
            )
        if pos[0] != 0.0 or pos[-1] != 1.0 or np.any(np.diff(pos) <= 0):
            raise InputError(
                f"colormap {self.name!r} positions must increase strictly from 0 to 1"
            )
        if not np.all((cols >= 0.0) & (cols <= 1.0)):
            raise InputError(f"colormap {self.name!r} colours must lie in [0, 1]")

    @classmethod
    def from_hex(
        cls,
        name: str,
        kind: Literal["sequential", "diverging"],
        hex_colors: Sequence[str],
    ) -> Colormap:
        """A colormap with ``#rrggbb`` control colours at evenly spaced positions."""
        n = len(hex_colors)
        if n < 2:
            raise InputError(f"colormap {name!r} needs at least two colours, got {n}")
        positions = tuple(i / (n - 1) for i in range(n))
        return cls(name, kind, positions, tuple(_hex_to_rgb(h) for h in hex_colors))

    def __call__(self, values: ArrayLike) -> FloatArray:
        v = np.clip(_as_float(values, f"values for colormap {self.name!r}"), 0.0, 1.0)
        pos = np.asarray(self.positions, dtype=np.float64)
        lin = _srgb_to_linear(np.asarray(self.colors, dtype=np.float64))
        out = np.empty(v.shape + (3,), dtype=np.float64)
        for ch in range(3):
            out[..., ch] = np.interp(v, pos, lin[:, ch])
        return np.clip(_linear_to_srgb(out), 0.0, 1.0)


# Control colours are samples of published colormaps (colour values are facts): viridis and
# inferno (van der Walt & Smith, 2015) at 0, 1/8, ..., 1; ColorBrewer RdBu (Brewer, 11
# classes) reversed so that negative is blue, with its near-white centre replaced by pure
# white so that an attribution of exactly zero is rendered white.
_VIRIDIS = Colormap.from_hex(
    "viridis",
    "sequential",
    ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c",
     "#28ae80", "#5ec962", "#addc30", "#fde725"],
)
_INFERNO = Colormap.from_hex(
    "inferno",
    "sequential",
    ["#000004", "#1f0c48", "#550f6d", "#88226a", "#ba3655",
     "#e35932", "#f98c0a", "#f9c932", "#fcffa4"],
)
_BWR = Colormap.from_hex(
    "bwr",
    "diverging",
    ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#ffffff",
     "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f"],
)

#: The built-in colormaps by name (read-only).
COLORMAPS: Mapping[str, Colormap] = MappingProxyType(
    {c.name: c for c in (_VIRIDIS, _INFERNO, _BWR)}
)

#: Defaults per METHODS.md: sequential for non-negative maps, diverging for signed ones.
DEFAULT_SEQUENTIAL = "viridis"
DEFAULT_DIVERGING = "bwr"


def get_colormap(name: str) -> Colormap:
    """The built-in colormap called ``name`` (``"viridis"``, ``"inferno"`` or ``"bwr"``)."""
    try:
        return COLORMAPS[name]
    except KeyError:
        raise InputError(
            f"unknown colormap {name!r}", hint=f"choose one of {', '.join(sorted(COLORMAPS))}"
        ) from None


def _resolve_cmap(cmap: Colormap | str | None, default: str) -> Colormap:
    if cmap is None:
        return get_colormap(default)
    if isinstance(cmap, Colormap):
        return cmap
    return get_colormap(cmap)


# --------------------------------------------------------------------------------------------
# encoding


def to_uint8(img: ArrayLike) -> NDArray[np.uint8]:
    """A ``[0, 1]`` float image as ``uint8``: clip to ``[0, 1]``, times 255, round half to even.

    ``uint8`` input is returned as a copy, unchanged. Booleans count as 0/1. Other integer
    dtypes are refused, because whether ``255`` means "white" or "way out of range" cannot
    be told from the array.
    """
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.dtype.kind in "iu":
        raise InputError(
            f"image of integer dtype {arr.dtype} is ambiguous",
            hint="pass uint8 in [0, 255] or floats in [0, 1]",
        )
    f = _as_float(arr, "image")
    return np.rint(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)


def png_bytes(img: ArrayLike) -> bytes:
    """The image encoded as PNG; the same array always gives the same bytes.

    Grey ``(H, W)`` / ``(H, W, 1)`` become an 8-bit ``L`` PNG, ``(H, W, 3)`` ``RGB`` and
    ``(H, W, 4)`` ``RGBA``. The file holds no metadata chunks (no time, no text) and uses a
    fixed zlib level (``PNG_COMPRESS_LEVEL``), so the output is reproducible for a given
    zlib build.
    """
    u8 = to_uint8(img)
    _check_image_shape(u8.shape, "image")
    if u8.ndim == 3 and u8.shape[2] == 1:
        u8 = u8[:, :, 0]
    pil = Image.fromarray(np.ascontiguousarray(u8))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def data_uri(img: ArrayLike) -> str:
    """The image as a ``data:image/png;base64,...`` URI for embedding in self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def save_png(img: ArrayLike, path: str | os.PathLike[str]) -> None:
    """Write the image as a PNG file at ``path``, atomically (:func:`onnxviz.files.atomic_write`):
    readers see either the old file or the complete new one."""
    from .files import atomic_write

    atomic_write(path, png_bytes(img), what="PNG")


# --------------------------------------------------------------------------------------------
# maps to images


def scale_map(m: ArrayLike, *, signed: bool, clip_percentile: float = 99.0) -> FloatArray:
    """Scale a map for display, clipping the top ``100 - clip_percentile`` % of magnitudes.

    * ``signed=False``: negative values are set to 0 (the "positive part", Captum's
      ``sign="positive"``), then the map is divided by ``s``, the ``clip_percentile``-th
      percentile of its values, and clipped to ``[0, 1]``.
    * ``signed=True``: the map is divided by ``s``, the ``clip_percentile``-th percentile of
      ``|m|``, and clipped to ``[-1, 1]``. The sign is kept and zero stays zero, so one
      scale serves both signs and red and blue are comparable.

    Percentiles are taken over all entries (zeros included) with numpy's default linear
    interpolation. If ``s`` is 0 (e.g. a sparse map with fewer than 1 % non-zero entries)
    the maximum magnitude is used instead; an all-zero map gives all zeros. A constant
    non-zero map gives all ones (or ``sign(c)``). The result never contains NaN.
    """
    arr = _as_float(m, "map")
    if arr.size == 0:
        raise InputError("cannot scale an empty map")
    p = _check_percentile(clip_percentile)
    mag = np.abs(arr) if signed else np.maximum(arr, 0.0)
    s = float(np.percentile(mag, p))
    if s <= 0.0:
        s = float(mag.max())
    if s <= 0.0:
        return np.zeros_like(arr)
    if signed:
        return np.clip(arr / s, -1.0, 1.0)
    return np.clip(mag / s, 0.0, 1.0)


def heatmap(
    m: ArrayLike,
    *,
    signed: bool | None = None,
    clip_percentile: float = 99.0,
    cmap: Colormap | str | None = None,
) -> FloatArray:
    """A 2-D map as an RGB image ``(H, W, 3)`` in ``[0, 1]``.

    ``signed=None`` treats the map as signed iff it has a negative value. The map is scaled
    by :func:`scale_map`; a signed map's ``[-1, 1]`` goes to the colormap's ``[0, 1]`` as
    ``(s + 1) / 2`` (zero at the centre, white for the default ``"bwr"``). The default
    colormap is ``"viridis"`` for non-negative maps and ``"bwr"`` for signed ones.
    """
    arr = _check_map(m)
    is_signed = bool(np.any(arr < 0)) if signed is None else bool(signed)
    scaled = scale_map(arr, signed=is_signed, clip_percentile=clip_percentile)
    if is_signed:
        return _resolve_cmap(cmap, DEFAULT_DIVERGING)((scaled + 1.0) / 2.0)
    return _resolve_cmap(cmap, DEFAULT_SEQUENTIAL)(scaled)


def overlay(
    image: ArrayLike,
    m: ArrayLike,
    *,
    alpha: float = 0.5,
    signed: bool | None = None,
    clip_percentile: float = 99.0,
    cmap: Colormap | str | None = None,
) -> FloatArray:
    """The heatmap of ``m`` blended over ``image``: ``(1 - alpha) * image + alpha * heatmap``.

    ``alpha`` in ``[0, 1]`` is the heatmap's opacity, uniform over the image (0.5 by default,
    per METHODS.md): 0 returns the image (as RGB), 1 the heatmap. ``image`` is grey or RGB in
    ``[0, 1]``; a map of another size is first resized bilinearly to the image size, then
    scaled and coloured as in :func:`heatmap` (so the percentile is taken at display
    resolution; ``signed=None`` is decided on the map before resizing). Returns ``(H, W, 3)``.
    """
    img = _as_float(image, "image")
    _check_image_shape(img.shape, "image")
    rgb = _as_rgb(img, "image")
    a = float(alpha)
    if not (0.0 <= a <= 1.0):
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    arr = _check_map(m)
    # Decide the sign on the map as given: resampling must not change which colormap is used.
    is_signed = bool(np.any(arr < 0)) if signed is None else bool(signed)
    h, w = rgb.shape[:2]
    if arr.shape != (h, w):
        arr = resize(arr, (h, w), method="bilinear")
    heat = heatmap(arr, signed=is_signed, clip_percentile=clip_percentile, cmap=cmap)
    return (1.0 - a) * rgb + a * heat


# --------------------------------------------------------------------------------------------
# geometry


def _source_coords(n_in: int, n_out: int) -> FloatArray:
    """Source coordinates of output pixel centres (half-pixel convention, align_corners=False)."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _bilinear_axis(a: FloatArray, n_out: int, axis: int) -> FloatArray:
    n_in = a.shape[axis]
    x = np.clip(_source_coords(n_in, n_out), 0.0, n_in - 1)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = x - i0
    shape = [1] * a.ndim
    shape[axis] = n_out
    t = t.reshape(shape)
    return np.take(a, i0, axis=axis) * (1.0 - t) + np.take(a, i1, axis=axis) * t


def resize(
    img: ArrayLike,
    size: tuple[int, int],
    method: Literal["bilinear", "nearest"] = "bilinear",
) -> FloatArray:
    """Resize an ``(H, W)`` or ``(H, W, C)`` array to ``size = (h, w)``; returns float64.

    Pixel centres are aligned (half-pixel convention, as PIL and ONNX ``Resize`` with
    ``coordinate_transformation_mode="half_pixel"``); ``"bilinear"`` clamps at the borders,
    ``"nearest"`` picks the pixel whose centre is nearest. There is no anti-aliasing, so this
    is meant for upsampling maps (e.g. a 7x7 attribution onto a 224x224 image); an integer
    upscale with ``"nearest"`` equals :func:`upscale_nearest`.
    """
    arr = _as_float(img, "image")
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"can only resize (H, W) or (H, W, C) arrays; got shape {arr.shape}")
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise InputError(f"size must be two positive integers (h, w); got {size!r}")
    h, w = int(size[0]), int(size[1])
    if method == "bilinear":
        return _bilinear_axis(_bilinear_axis(arr, h, 0), w, 1)
    if method == "nearest":
        ri = np.minimum(np.floor((np.arange(h) + 0.5) * (arr.shape[0] / h)), arr.shape[0] - 1)
        ci = np.minimum(np.floor((np.arange(w) + 0.5) * (arr.shape[1] / w)), arr.shape[1] - 1)
        return arr[ri.astype(np.intp)][:, ci.astype(np.intp)]
    raise InputError(f"unknown resize method {method!r}", hint="use 'bilinear' or 'nearest'")


def upscale_nearest(img: ArrayLike, factor: int) -> FloatArray:
    """Repeat every pixel ``factor`` x ``factor`` times, so a 5x5 kernel shows as crisp blocks."""
    arr = _as_float(img, "image")
    if arr.ndim not in (2, 3):
        raise InputError(f"can only upscale (H, W) or (H, W, C) arrays; got shape {arr.shape}")
    if int(factor) != factor or factor < 1:
        raise InputError(f"factor must be a positive integer, got {factor!r}")
    f = int(factor)
    return np.repeat(np.repeat(arr, f, axis=0), f, axis=1)


def tile_grid(
    tiles: Sequence[ArrayLike],
    *,
    ncols: int | None = None,
    pad: int = 1,
    pad_value: float = 1.0,
) -> FloatArray:
    """Lay out equally shaped images row by row in a grid, ``pad`` pixels apart.

    Default ``ncols`` is ``ceil(sqrt(n))`` (a near-square grid with rows filled first);
    rows = ``ceil(n / ncols)``. Padding lies only *between* tiles (no outer border), so the
    result is ``(rows*h + (rows-1)*pad, cols*w + (cols-1)*pad[, C])``. Padding and empty
    cells of the last row are ``pad_value`` (in every channel). Tiles are all grey
    ``(h, w)`` or all ``(h, w, C)``.
    """
    arrs = [_as_float(t, f"tile {i}") for i, t in enumerate(tiles)]
    if not arrs:
        raise InputError("tile_grid needs at least one tile")
    shape = arrs[0].shape
    _check_image_shape(shape, "tile 0")
    for i, a in enumerate(arrs):
        if a.shape != shape:
            raise InputError(
                f"all tiles must have the same shape; tile 0 is {shape}, tile {i} is {a.shape}"
            )
    n = len(arrs)
    if ncols is None:
        cols = math.ceil(math.sqrt(n))
    else:
        if int(ncols) != ncols or ncols < 1:
            raise InputError(f"ncols must be a positive integer, got {ncols!r}")
        cols = min(int(ncols), n)
    if int(pad) != pad or pad < 0:
        raise InputError(f"pad must be a non-negative integer, got {pad!r}")
    p = int(pad)
    rows = math.ceil(n / cols)
    h, w = shape[0], shape[1]
    out_shape = (rows * h + (rows - 1) * p, cols * w + (cols - 1) * p) + shape[2:]
    out = np.full(out_shape, float(pad_value), dtype=np.float64)
    for k, a in enumerate(arrs):
        r, c = divmod(k, cols)
        y, x = r * (h + p), c * (w + p)
        out[y : y + h, x : x + w] = a
    return out


# --------------------------------------------------------------------------------------------
# weights and activations


def kernel_image(w: ArrayLike, *, scale: float | None = None) -> FloatArray:
    """One conv filter ``(C, kh, kw)`` as an image, zero at mid-grey.

    Values map linearly and symmetrically: ``0.5 + 0.5 * w / scale``, clipped to ``[0, 1]``,
    so 0 is 0.5 grey, ``+scale`` white and ``-scale`` black. ``scale=None`` uses this
    filter's own ``max |w|`` (per-filter contrast); pass a layer's ``max |W|`` to compare
    filters on one shared scale (see :func:`kernel_images`). An all-zero filter is all grey.

    ``C == 3`` gives an RGB image ``(kh, kw, 3)`` with channels in weight order (the model's
    input order: BGR models show swapped colours). ``C == 1`` gives grey ``(kh, kw)``. Any
    other ``C`` gives the ``C`` input-channel slices in grey, on the same scale, laid out by
    :func:`tile_grid` (near-square, 1-pixel white gaps).
    """
    arr = _as_float(w, "kernel")
    if arr.ndim != 3 or 0 in arr.shape:
        raise InputError(f"a conv kernel must have shape (C, kh, kw); got {arr.shape}")
    if scale is None:
        s = float(np.abs(arr).max())
    else:
        s = float(scale)
        if not (math.isfinite(s) and s >= 0.0):
            raise InputError(f"scale must be a finite non-negative number, got {scale!r}")
    if s == 0.0:
        img = np.full(arr.shape, 0.5)
    else:
        img = np.clip(0.5 + 0.5 * arr / s, 0.0, 1.0)
    c = arr.shape[0]
    if c == 3:
        return np.moveaxis(img, 0, -1)
    if c == 1:
        return img[0]
    return tile_grid(list(img))


def kernel_images(weights: ArrayLike, *, per_filter: bool = True) -> list[FloatArray]:
    """All filters of a conv weight ``(O, C, kh, kw)`` as images (see :func:`kernel_image`).

    ``per_filter=True`` scales each filter by its own ``max |w|`` (best contrast for the
    shape of each filter); ``per_filter=False`` uses the layer's ``max |W|`` for all, so
    brightness compares filter strengths.
    """
    arr = _as_float(weights, "conv weight")
    if arr.ndim != 4 or 0 in arr.shape:
        raise InputError(f"a conv weight must have shape (O, C, kh, kw); got {arr.shape}")
    shared = None if per_filter else float(np.abs(arr).max())
    return [kernel_image(f, scale=shared) for f in arr]


def feature_map_image(
    fm: ArrayLike,
    *,
    clip_percentile: float | None = None,
    cmap: Colormap | str | None = None,
) -> FloatArray:
    """One channel of a feature map ``(H, W)`` scaled to ``[0, 1]`` for display.

    ``clip_percentile=None`` is min-max scaling ``(fm - min) / (max - min)``; a number ``p``
    (e.g. 99) scales between the ``100 - p`` and ``p`` percentiles and clips outside, so a
    few hot pixels do not flatten the rest. A constant map (including a dead, all-zero
    channel) gives all zeros. Scaling is per map: use one call per channel and compare
    shapes, not brightness, across channels.

    With ``cmap=None`` the result is grey ``(H, W)``; with a colormap (name or object,
    typically a sequential one such as ``"viridis"``) it is RGB ``(H, W, 3)``.
    """
    arr = _check_map(fm, "feature map")
    if clip_percentile is None:
        lo, hi = float(arr.min()), float(arr.max())
    else:
        p = _check_percentile(clip_percentile)
        lo, hi = (float(v) for v in np.percentile(arr, [100.0 - p, p]))
        if hi < lo:
            lo, hi = hi, lo
    if hi - lo <= 0.0:
        scaled = np.zeros_like(arr)
    else:
        scaled = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    if cmap is None:
        return scaled
    return _resolve_cmap(cmap, DEFAULT_SEQUENTIAL)(scaled)
