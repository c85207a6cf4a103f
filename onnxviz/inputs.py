"""Images and arrays -> model inputs, and model inputs -> images for display.

The path an image takes to a model is

    file --load_image--> HxWxC float in [0, 1] --image_to_array--> (C,H,W) or (H,W,C) in model space

and :func:`array_to_image` is the exact inverse of the last step's value mapping (clipped to
[0, 1]), so inputs, perturbations and feature-visualization results are shown the way the model
"sees" them. :func:`prepare_inputs` turns a list of file names (images, ``.npy`` arrays, or
``name=path.npy`` for models with several inputs) into a batched, validated feed dict.

All the arithmetic is done in float64 and rounded once to the output dtype, so a constant image
through the ``imagenet`` preset gives ``(v/255 - mean) / std`` to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union, get_args

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .graph import TensorInfo

__all__ = [
    "Layout",
    "PRESETS",
    "RESIZE_METHODS",
    "detect_layout",
    "Preprocess",
    "load_image",
    "image_to_array",
    "array_to_image",
    "PreparedInputs",
    "prepare_inputs",
    "probe_inputs",
]

Layout = Literal["NCHW", "NHWC"]
PathLike = Union[str, "os.PathLike[str]"]

# Value range presets: an image in [0, 1] (i.e. v/255 for 8-bit pixels v) is mapped to
# ``x01 * scale + offset`` before any mean/std.
_RANGES: dict[str, tuple[float, float]] = {
    "imagenet": (1.0, 0.0),
    "0-1": (1.0, 0.0),
    "-1-1": (2.0, -1.0),
    "0-255": (255.0, 0.0),
}
_RANGE_FORMULAS = {"imagenet": "v/255", "0-1": "v/255", "-1-1": "v/127.5 - 1", "0-255": "v"}
PRESETS: tuple[str, ...] = tuple(_RANGES)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
RESIZE_METHODS: tuple[str, ...] = tuple(_FILTERS)

# ITU-R BT.601 luma, the weights Pillow's convert("L") uses as well.
_LUMA = np.array([0.299, 0.587, 0.114])
_IMAGE_CHANNELS = (1, 3, 4)
_RANGE_TOL = 1e-6


# --------------------------------------------------------------------------------------------
# Layout


def _is_channel_count(d: object) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d in _IMAGE_CHANNELS


def detect_layout(info: TensorInfo) -> Layout | None:
    """Guess whether a rank-4 image input is NCHW or NHWC; ``None`` for anything else.

    NCHW when dim 1 is 1, 3 or 4 and dim 3 is not; NHWC when dim 3 is and dim 1 is not. Symbolic
    or unknown dims are never channel counts. Ambiguous shapes (``[N,3,3,3]``, all dynamic, or
    no channel-like dim at all) default to NCHW, the layout of every PyTorch export.
    """
    if info.shape is None or len(info.shape) != 4:
        return None
    if info.dtype.kind not in "fiu":
        return None
    first, last = _is_channel_count(info.shape[1]), _is_channel_count(info.shape[3])
    if last and not first:
        return "NHWC"
    return "NCHW"


def _channel_axis(layout: Layout) -> int:
    """Channel axis of an unbatched (rank-3) array."""
    return 0 if layout == "NCHW" else 2


def _fmt_shape(shape: Sequence[object] | None) -> str:
    if shape is None:
        return "(unknown rank)"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


# --------------------------------------------------------------------------------------------
# Preprocess


@dataclass(frozen=True)
class Preprocess:
    """How an image in [0, 1] becomes a model input, and back.

    ``model = ((x01 * scale + offset) - mean) / std`` per channel, where ``scale, offset`` come
    from the value-range *preset* (``imagenet`` and ``0-1``: x/255; ``-1-1``: x/127.5 - 1;
    ``0-255``: x as is, for 8-bit pixel values x) and ``mean``/``std`` apply after it.

    After construction ``mean`` and ``std`` hold the effective per-channel values (one per
    channel, or both empty when there is no normalisation): the ``imagenet`` preset fills in
    (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) (their averages for one channel; an extra
    0 / 1 for the alpha channel of 4-channel inputs) unless explicit values are given, and a
    single explicit value is repeated for every channel. An explicit mean without std (or the
    reverse) keeps the preset's other half (1 / 0 when the preset has none).

    ``size`` is ``(H, W)``, or ``None`` to keep each image's own size (models with dynamic
    spatial dims).
    """

    layout: Layout = "NCHW"
    channels: int = 3
    size: tuple[int, int] | None = None
    preset: str = "imagenet"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        if self.layout not in get_args(Layout):
            raise InputError(
                f"unknown layout {self.layout!r}", hint="use 'NCHW' or 'NHWC'"
            )
        if not _is_int(self.channels) or self.channels < 1:
            raise InputError(f"channels must be a positive integer, got {self.channels!r}")
        object.__setattr__(self, "channels", int(self.channels))
        if self.size is not None:
            object.__setattr__(self, "size", _check_size(self.size))
        if self.preset not in _RANGES:
            raise InputError(
                f"unknown value-range preset {self.preset!r}",
                hint="use one of " + ", ".join(repr(p) for p in PRESETS),
            )
        if self.resize not in _FILTERS:
            raise InputError(
                f"unknown resize method {self.resize!r}",
                hint="use one of " + ", ".join(repr(m) for m in RESIZE_METHODS),
            )
        mean, std = self._resolve_stats()
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def _resolve_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        c = self.channels
        mean = self._per_channel("mean", self.mean)
        std = self._per_channel("std", self.std)
        if any(not np.isfinite(v) for v in mean + std):
            raise InputError(f"mean and std must be finite, got mean={mean}, std={std}")
        if any(v == 0.0 for v in std):
            raise InputError(f"std must not contain 0, got {std}", hint="std divides the input")
        if self.preset == "imagenet" and not (mean and std):
            preset_mean, preset_std = self._imagenet_stats()
            mean = mean or preset_mean
            std = std or preset_std
        elif bool(mean) != bool(std):
            mean = mean or (0.0,) * c
            std = std or (1.0,) * c
        return mean, std

    def _per_channel(self, what: str, values: Sequence[float]) -> tuple[float, ...]:
        try:
            vals = tuple(float(v) for v in values)
        except (TypeError, ValueError) as e:
            raise InputError(f"{what} must be a sequence of numbers, got {values!r}") from e
        if len(vals) == 1:
            return vals * self.channels
        if vals and len(vals) != self.channels:
            raise InputError(
                f"{what} has {len(vals)} values but the model input has {self.channels} "
                f"channels ({self.layout})",
                hint=f"give one {what} value, or one per channel",
            )
        return vals

    def _imagenet_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.channels == 3:
            return IMAGENET_MEAN, IMAGENET_STD
        if self.channels == 1:
            return (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
        if self.channels == 4:
            return IMAGENET_MEAN + (0.0,), IMAGENET_STD + (1.0,)
        raise InputError(
            f"the 'imagenet' preset has statistics for 1, 3 or 4 channels, but the model input "
            f"has {self.channels} channels ({self.layout})",
            hint="give mean and std explicitly, or choose another preset (e.g. '0-1')",
        )

    # -- the value mapping, as per-channel affine x_model = x01 * a + b -----------------------

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        scale, offset = _RANGES[self.preset]
        c = self.channels
        mean = np.asarray(self.mean, dtype=np.float64) if self.mean else np.zeros(c)
        std = np.asarray(self.std, dtype=np.float64) if self.std else np.ones(c)
        return scale / std, (offset - mean) / std

    def formula(self) -> str:
        """Human-readable mapping from an 8-bit pixel value ``v`` to the model input."""
        base = _RANGE_FORMULAS[self.preset]
        return f"({base} - mean) / std" if self.mean else base

    def describe(self) -> dict[str, object]:
        """JSON-able summary for reports."""
        return {
            "layout": self.layout,
            "channels": self.channels,
            "size": None if self.size is None else list(self.size),
            "preset": self.preset,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "formula": self.formula(),
        }

    @classmethod
    def from_model(
        cls,
        info: TensorInfo,
        preset: str = "imagenet",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        size: tuple[int, int] | None = None,
        layout: Layout | None = None,
        resize: str = "bilinear",
    ) -> Preprocess:
        """Fill layout, channels and size from a rank-4 model input.

        The layout is detected (:func:`detect_layout`) unless given; a dynamic channel dim is
        taken to be 3 (RGB). The size comes from static spatial dims; an explicit *size* must
        agree with them, and is what makes models with dynamic spatial dims resize (without it
        each image keeps its own size).
        """
        if info.shape is None or len(info.shape) != 4:
            raise InputError(
                f"model input {info.name!r} with shape {_fmt_shape(info.shape)} is not an image "
                "input (rank 4, NCHW or NHWC)",
                hint="pass this input as a .npy array",
            )
        if layout is None:
            layout = detect_layout(info) or "NCHW"
        elif layout not in get_args(Layout):
            raise InputError(f"unknown layout {layout!r}", hint="use 'NCHW' or 'NHWC'")
        if layout == "NCHW":
            c, h, w = info.shape[1], info.shape[2], info.shape[3]
        else:
            h, w, c = info.shape[1], info.shape[2], info.shape[3]
        channels = c if _is_int(c) else 3
        static_hw = (h, w) if _is_int(h) and _is_int(w) else None
        if size is not None:
            size = _check_size(size)
            for axis, want, got in (("height", h, size[0]), ("width", w, size[1])):
                if _is_int(want) and want != got:
                    raise InputError(
                        f"size {size[0]}x{size[1]} does not match model input {info.name!r}, "
                        f"whose {axis} is fixed at {want} (shape {_fmt_shape(info.shape)}, "
                        f"{layout})",
                        hint="omit the size: the model fixes it",
                    )
        return cls(
            layout=layout,
            channels=channels,
            size=size if size is not None else static_hw,
            preset=preset,
            mean=tuple(mean) if mean is not None else (),
            std=tuple(std) if std is not None else (),
            resize=resize,
        )


def _is_int(d: object) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool)


def _check_size(size: object) -> tuple[int, int]:
    try:
        h, w = size  # type: ignore[misc]
    except (TypeError, ValueError) as e:
        raise InputError(f"size must be (height, width), got {size!r}") from e
    if not (_is_int(h) and _is_int(w)) or h < 1 or w < 1:
        raise InputError(f"size must be two positive integers (height, width), got {size!r}")
    return int(h), int(w)


# --------------------------------------------------------------------------------------------
# Loading images


def load_image(path: PathLike, *, keep_alpha: bool = False) -> np.ndarray:
    """Read an image file as float32 ``H x W x C`` in [0, 1].

    Anything Pillow reads (PNG, JPEG, BMP, TIFF, GIF, WebP, ...; the first frame of animations),
    with the EXIF orientation applied so the array is upright as viewers show it. ``C`` is 1
    for greyscale sources (``1``, ``L``, 16-bit ``I;16``/``I``, float ``F``) and 3 for colour ones
    (RGB, palette, CMYK, YCbCr ... converted to RGB). 8-bit values are divided by 255, 16-bit by
    65535; float images must already lie in [0, 1].

    Transparency (RGBA, LA, palette images with a transparent colour) is **composited on a
    white background**, so transparent areas read as white rather than as the arbitrary colour
    stored under them. With ``keep_alpha=True`` the alpha channel is kept instead, as the last
    channel (``C`` = 2 for grey + alpha, 4 for RGBA); images without alpha are unchanged.

    Raises InputError naming the file when it is missing, not an image, or unreadable.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise InputError(
            f"image file '{p}' does not exist", hint="check the path and the working directory"
        )
    if p.is_dir():
        raise InputError(
            f"'{p}' is a directory, not an image file",
            hint="pass the image files themselves (e.g. 'dir/*.png')",
        )
    try:
        with Image.open(p) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
    except UnidentifiedImageError as e:
        raise InputError(
            f"'{p}' is not an image format Pillow can read",
            hint="use PNG, JPEG, BMP, TIFF, GIF or WebP images; pass arrays as .npy files",
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise InputError(
            f"cannot read image '{p}': {e}",
            hint="the file may be truncated or corrupt; re-save it with an image editor",
        ) from e
    return _pil_to_array(upright, p, keep_alpha=keep_alpha)


def _pil_to_array(im: Image.Image, path: Path, *, keep_alpha: bool) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(
                f"image '{path}' holds 32-bit integers outside 0..65535 "
                f"({a.min():.0f}..{a.max():.0f})",
                hint="save it as an 8- or 16-bit image, or pass the data as a .npy array",
            )
        return (a / 65535.0).astype(np.float32)[..., None]
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        if a.size and not (np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0):
            raise InputError(
                f"float image '{path}' has values outside [0, 1] or non-finite values",
                hint="pass the data as a .npy array instead",
            )
        return a.astype(np.float32)[..., None]

    if mode == "P":
        target = "RGBA" if "transparency" in im.info else "RGB"
    elif mode == "1":
        target = "L"
    elif mode in ("L", "LA", "RGB", "RGBA"):
        target = mode
    elif mode in ("La",):
        target = "LA"
    elif mode in ("PA", "RGBa"):
        target = "RGBA"
    else:  # CMYK, YCbCr, LAB, HSV, RGBX ...
        target = "RGB"
    if target != mode:
        try:
            im = im.convert(target)
        except (ValueError, OSError) as e:
            raise InputError(
                f"cannot convert image '{path}' from mode {mode!r} to {target}: {e}",
                hint="re-save the image as RGB or greyscale",
            ) from e
    a = np.asarray(im).astype(np.float64) / 255.0
    if a.ndim == 2:
        a = a[..., None]
    if target in ("LA", "RGBA") and not keep_alpha:
        a = _composite_on_white(a)
    return a.astype(np.float32)


def _composite_on_white(a: np.ndarray) -> np.ndarray:
    """Colour channels over a white background: ``c * alpha + 1 * (1 - alpha)``."""
    alpha = a[..., -1:]
    return a[..., :-1] * alpha + (1.0 - alpha)


# --------------------------------------------------------------------------------------------
# Image <-> model array


def image_to_array(img: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Turn an ``H x W x C`` image in [0, 1] into one (unbatched) model input, float32.

    Steps: channel conversion to ``pre.channels`` (RGB -> grey with ITU-R 601 luma weights,
    grey -> RGB by repetition; C=2/4 inputs are grey/RGB + alpha, composited on white unless the
    model takes 4 channels; an opaque alpha is added for 4-channel models), resize to
    ``pre.size`` (Pillow on float data, antialiased when shrinking; clipped to [0, 1] since
    bicubic/lanczos overshoot), then the preset's range mapping and mean/std. The result is
    ``(C, H, W)`` for NCHW and ``(H, W, C)`` for NHWC. A 2-D ``img`` is taken as greyscale;
    ``img`` is not modified.
    """
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(
            f"image array has shape {a.shape}; expected H x W x C with C in 1..4",
            hint="channels go last (HWC) for image arrays; use load_image() for files",
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"image array has an empty side: shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise InputError(f"image array has dtype {a.dtype}; expected numbers in [0, 1]")
    a = a.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise InputError(f"image array has {bad} NaN/Inf values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
        raise InputError(
            f"image values must be in [0, 1], got {lo:g}..{hi:g}",
            hint="divide 8-bit pixel data by 255 (load_image() does this)",
        )
    a = np.clip(a, 0.0, 1.0)
    a = _convert_channels(a, pre.channels)
    if pre.size is not None and a.shape[:2] != pre.size:
        a = _resize(a, pre.size, pre.resize)
    mul, add = pre._affine()
    x = a * mul + add
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def _convert_channels(a: np.ndarray, channels: int) -> np.ndarray:
    c = a.shape[2]
    if channels not in _IMAGE_CHANNELS:
        raise InputError(
            f"the model input expects {channels} channels; images give 1 (grey), 3 (RGB) or "
            "4 (RGBA)",
            hint="pass this input as a .npy array",
        )
    has_alpha = c in (2, 4)
    if channels == 4:
        colour, alpha = (a[..., :-1], a[..., -1:]) if has_alpha else (a, np.ones_like(a[..., :1]))
        if colour.shape[2] == 1:
            colour = np.repeat(colour, 3, axis=2)
        return np.concatenate([colour, alpha], axis=2)
    if has_alpha:
        a = _composite_on_white(a)
    if channels == 1:
        return a if a.shape[2] == 1 else (a @ _LUMA)[..., None]
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def _resize(a: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    h, w = size
    planes = []
    for ch in range(a.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(a[..., ch], dtype=np.float32))
        planes.append(np.asarray(plane.resize((w, h), resample=_FILTERS[method])))
    return np.clip(np.stack(planes, axis=2).astype(np.float64), 0.0, 1.0)


def array_to_image(x: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Map one unbatched model input back to an ``H x W x C`` float32 image in [0, 1].

    The exact inverse of :func:`image_to_array`'s value mapping (range preset and mean/std),
    then clipped to [0, 1]; for showing inputs, perturbed inputs and feature-visualization
    results. ``x`` is ``(C, H, W)`` for NCHW and ``(H, W, C)`` for NHWC with ``pre.channels``
    channels; it is not modified.
    """
    a = np.asarray(x)
    axis = _channel_axis(pre.layout)
    if a.ndim != 3 or a.shape[axis] != pre.channels:
        want = "(C, H, W)" if pre.layout == "NCHW" else "(H, W, C)"
        raise InputError(
            f"array of shape {a.shape} is not one {pre.layout} input {want} with "
            f"{pre.channels} channels",
            hint="index a batch first (x[0]) and check the layout",
        )
    if a.dtype.kind not in "fiu":
        raise InputError(f"array has dtype {a.dtype}; expected numbers")
    a = a.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise InputError(f"array has {bad} NaN/Inf values and cannot be shown as an image")
    if pre.layout == "NCHW":
        a = a.transpose(1, 2, 0)
    mul, add = pre._affine()
    return np.clip((a - add) / mul, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Feeds


@dataclass(frozen=True)
class PreparedInputs:
    """A validated, batched feed dict and where it came from.

    ``feeds`` maps every model input name to its array (batch axis included, model dtype).
    ``preprocess`` is how images were turned into ``image_input``'s feed, ``None`` when no
    image files were given (arrays are used exactly as stored). ``sources`` are the given
    source strings in order; ``batch_size`` is the number of images, else the leading dim of
    the first input's array (1 for scalars).
    """

    feeds: dict[str, np.ndarray]
    preprocess: Preprocess | None
    sources: list[str]
    batch_size: int
    image_input: str | None = None


def prepare_inputs(
    inputs: Sequence[TensorInfo],
    sources: Sequence[PathLike],
    *,
    preset: str = "imagenet",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: tuple[int, int] | None = None,
    layout: Layout | None = None,
    resize: str = "bilinear",
) -> PreparedInputs:
    """Build the feed dict for a model from file names.

    *inputs* are the model's graph inputs (initializers excluded); every one must be fed.
    *sources*:

    - image files: ONE batch, in order, for the first image input (the first rank-4 input),
      preprocessed per :class:`Preprocess` (*preset*, *mean*, *std*, *size*, *layout*). Images
      of different sizes are resized to the model size, or, when the spatial dims are dynamic
      and no *size* is given, to the first image's size (with a warning);
    - one ``.npy`` file for a single-input model: used as is when it has the model's rank,
      given a batch axis when it is one rank short;
    - ``name=path.npy`` for the other inputs (or all inputs) of multi-input models.

    Arrays are cast to the model's dtype (float arrays go to integer inputs only when their
    values are whole numbers). Raises InputError on channel, rank, static-dim, dtype or value
    (NaN/Inf) mismatches, naming the input and the file.
    """
    infos = list(inputs)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    srcs = [os.fspath(s) for s in sources]
    names = [i.name for i in infos]
    by_name = {i.name: i for i in infos}
    listing = ", ".join(f"{i.name!r} {_fmt_shape(i.shape)}" for i in infos)
    if not infos:
        raise InputError("the model has no inputs to feed")
    if not srcs:
        raise InputError(
            "no inputs given", hint=f"pass image files or .npy arrays; the model takes {listing}"
        )

    images: list[str] = []
    arrays: list[str] = []
    named: dict[str, str] = {}
    for s in srcs:
        name, path = _split_named(s, names, listing)
        _reject_npz(path)
        if name is None:
            (arrays if _is_npy(path) else images).append(path)
            continue
        if not _is_npy(path):
            raise InputError(
                f"'{s}': a named input must be a .npy array",
                hint="give image files without a name; they go to the first image input",
            )
        if name in named:
            raise InputError(f"model input {name!r} is given twice ('{named[name]}' and '{path}')")
        named[name] = path

    if arrays and images:
        raise InputError(
            f"got both image files ({images[0]!r}) and an unnamed array ({arrays[0]!r})",
            hint="give arrays as name=path.npy next to images, or arrays only",
        )
    if arrays:
        if len(infos) != 1:
            raise InputError(
                f"an unnamed array ({arrays[0]!r}) is ambiguous: the model has {len(infos)} "
                f"inputs: {listing}",
                hint="give each input as name=path.npy",
            )
        if len(arrays) > 1 or named:
            raise InputError(
                f"model input {names[0]!r} is given {len(arrays) + len(named)} arrays",
                hint="give one .npy per input; stack a batch into a single array",
            )
        named[names[0]] = arrays[0]

    feeds: dict[str, np.ndarray] = {}
    pre: Preprocess | None = None
    image_input: str | None = None
    target = next((i for i in infos if detect_layout(i) is not None), None)
    if images:
        if target is None:
            raise InputError(
                f"got image files ({images[0]!r}) but the model has no image input: {listing}",
                hint="image inputs are rank 4 (NCHW or NHWC); give arrays as .npy files",
            )
        if target.name in named:
            raise InputError(
                f"model input {target.name!r} is given both images and '{named[target.name]}'"
            )
        image_input = target.name
        pre, feeds[target.name] = _image_batch(
            target, images, preset=preset, mean=mean, std=std, size=size, layout=layout,
            resize=resize,
        )

    for name, path in named.items():
        info = by_name[name]
        # An explicit layout describes the model's (first) image input, fed here as an array.
        is_image = target is not None and name == target.name
        feeds[name] = _array_feed(info, path, layout=layout if is_image else None)

    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(
            "model input(s) " + ", ".join(repr(n) for n in missing) + " not given; the model "
            f"takes {listing}",
            hint="give every input as name=path.npy (images go to the first image input)",
        )
    _check_shared_dims(infos, feeds)

    first = feeds[names[0]]
    batch = len(images) if images else (int(first.shape[0]) if first.ndim else 1)
    return PreparedInputs(
        feeds={n: feeds[n] for n in names},
        preprocess=pre,
        sources=srcs,
        batch_size=batch,
        image_input=image_input,
    )


def _split_named(s: str, names: Sequence[str], listing: str) -> tuple[str | None, str]:
    """``name=path`` -> (name, path); a plain (or existing) path -> (None, path)."""
    matches = [n for n in names if s.startswith(n + "=")]
    if matches:
        name = max(matches, key=len)
        return name, s[len(name) + 1 :]
    if "=" in s and not os.path.exists(s):
        raise InputError(
            f"'{s}': the model has no input named {s.split('=', 1)[0]!r}",
            hint=f"the model's inputs are {listing}",
        )
    return None, s


def probe_inputs(
    infos: Sequence[TensorInfo],
    samples: int = 8,
    *,
    seed: int = 0,
    size: int = 224,
    preset: str = "imagenet",
    blob: int = 8,
) -> tuple[dict[str, np.ndarray], str]:
    """A seeded probe set (for audits and diffs run without inputs) and its description.

    Image inputs (rank 4, NCHW or NHWC, 1/3/4 channels) get smooth random images: coarse blobs
    of ``blob`` pixels (0.7) plus pixel noise (0.3) in [0, 1], through ``preset`` (the model's
    input range and normalisation); other float inputs standard normal values; integer inputs
    zeros. Open dims: the batch is ``samples``, spatial dims ``size``, anything else 1; a fixed
    batch that divides ``samples`` becomes ``samples`` (the caller runs it in pieces), any other
    fixed batch is kept.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    images = False
    for info in infos:
        shape = list(info.shape) if info.shape is not None else [samples, 3, size, size]
        if shape and isinstance(shape[0], int) and 0 < shape[0] < samples and samples % shape[0] == 0:
            shape[0] = samples
        layout = detect_layout(info)
        spatial = () if layout is None else ((2, 3) if layout == "NCHW" else (1, 2))
        colour = None if layout is None else (1 if layout == "NCHW" else 3)
        dims = [
            d if isinstance(d, int) and d > 0 else (samples if a == 0 else size if a in spatial else 3 if a == colour else 1)
            for a, d in enumerate(shape)
        ]
        if layout is not None and info.dtype.kind == "f":
            c = dims[1] if layout == "NCHW" else dims[3]
            if c in (1, 3, 4):
                h, w = dims[spatial[0]], dims[spatial[1]]
                pre = Preprocess(layout=layout, channels=c, size=(h, w), preset=preset)
                batch = []
                for _ in range(dims[0]):
                    coarse = rng.uniform(size=(h // blob + 2, w // blob + 2, c))
                    blobs = np.repeat(np.repeat(coarse, blob, axis=0), blob, axis=1)[:h, :w]
                    img = np.clip(0.7 * blobs + 0.3 * rng.uniform(size=(h, w, c)), 0.0, 1.0)
                    batch.append(image_to_array(img.astype(np.float32), pre))
                feeds[info.name] = np.stack(batch).astype(info.dtype)
                images = True
                continue
        if info.dtype.kind == "f":
            feeds[info.name] = rng.standard_normal(dims).astype(info.dtype)
        else:
            feeds[info.name] = np.zeros(dims, dtype=info.dtype)
    n = next((int(v.shape[0]) for v in feeds.values() if v.ndim), samples)
    kind = f"random images ({preset} preset)" if images else "random arrays"
    return feeds, f"generated probe set: {n} {kind}, seed {seed}"


def _is_npy(path: str) -> bool:
    return path.lower().endswith(".npy")


def _reject_npz(path: str) -> None:
    if path.lower().endswith(".npz"):
        raise InputError(
            f"'{path}' is an .npz archive; onnxviz reads one array per .npy file",
            hint="save each array with np.save('name.npy', a) and pass name=name.npy",
        )


def _image_batch(
    info: TensorInfo,
    paths: Sequence[str],
    *,
    preset: str,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    size: tuple[int, int] | None,
    layout: Layout | None,
    resize: str,
) -> tuple[Preprocess, np.ndarray]:
    lay = layout or detect_layout(info) or "NCHW"
    shape = info.shape or (None,) * 4  # detect_layout() found rank 4
    c = shape[1] if lay == "NCHW" else shape[3]
    if _is_int(c) and c not in _IMAGE_CHANNELS:
        raise InputError(
            f"model input {info.name!r} {_fmt_shape(info.shape)} expects {c} channels ({lay}); "
            "images give 1, 3 or 4",
            hint="pass this input as a .npy array, or check the layout",
        )
    integer_model = info.dtype.kind in "iu"
    if integer_model and (preset != "0-255" or mean is not None or std is not None):
        raise InputError(
            f"model input {info.name!r} takes {info.dtype} pixel values, but preset {preset!r}"
            + (" with mean/std" if mean is not None or std is not None else "")
            + " gives normalised floats",
            hint="use the '0-255' preset without mean/std",
        )
    pre = Preprocess.from_model(
        info, preset=preset, mean=mean, std=std, size=size, layout=lay, resize=resize
    )
    imgs = [load_image(p, keep_alpha=pre.channels == 4) for p in paths]
    if pre.size is None:
        first = imgs[0].shape[:2]
        odd = [p for p, im in zip(paths, imgs) if im.shape[:2] != first]
        if odd:
            warnings.warn(  # stacklevel 3: the caller of prepare_inputs()
                f"model input {info.name!r} has dynamic spatial dims; {len(odd)} image(s) "
                f"(e.g. '{odd[0]}') resized to the first image's size {first[0]}x{first[1]}",
                stacklevel=3,
            )
        pre = dataclasses.replace(pre, size=first)
    batch = np.stack([image_to_array(im, pre) for im in imgs])
    if integer_model:
        limits = np.iinfo(info.dtype)
        batch = np.clip(np.rint(batch), limits.min, limits.max)
    batch = batch.astype(info.dtype)
    _check_static_dims(info, batch, f"images ({len(paths)})", lay)
    return pre, batch


def _load_npy(path: str) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise InputError(f"array file '{p}' does not exist", hint="check the path")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        raise InputError(
            f"cannot read '{p}' as a numeric .npy array: {e}",
            hint="save a plain numeric array with np.save (object arrays are not loaded)",
        ) from e
    except (OSError, EOFError) as e:
        raise InputError(
            f"cannot read array file '{p}': {e}",
            hint="the file may be truncated or not a .npy file; re-save it with np.save",
        ) from e


def _array_feed(info: TensorInfo, path: str, *, layout: Layout | None) -> np.ndarray:
    arr = _load_npy(path)
    what = f"array '{path}'"
    if arr.dtype.kind not in "biuf":
        raise InputError(
            f"{what} for model input {info.name!r} has dtype {arr.dtype}; expected numbers",
        )
    if arr.dtype.kind == "f":
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        if n_nan or n_inf:
            raise InputError(
                f"{what} for model input {info.name!r} has {n_nan} NaN and {n_inf} Inf values",
                hint="onnxviz needs finite inputs; clean the array (e.g. np.nan_to_num)",
            )
    if info.rank is not None:
        if arr.ndim == info.rank - 1:
            arr = arr[np.newaxis]
        elif arr.ndim != info.rank:
            raise InputError(
                f"model input {info.name!r} expects rank {info.rank} {_fmt_shape(info.shape)}, "
                f"got {what} of shape {arr.shape} (rank {arr.ndim})",
                hint=f"give an array of rank {info.rank} (or {info.rank - 1} without batch axis)",
            )
    lay = layout or detect_layout(info)
    if lay is not None and info.shape is not None:
        axis = 1 if lay == "NCHW" else 3
        want = info.shape[axis]
        got = arr.shape[axis]
        if _is_int(want) and got != want:
            other = arr.shape[3 if lay == "NCHW" else 1]
            hint = "check the array's layout and channel count"
            if other == want:
                alt = "NHWC" if lay == "NCHW" else "NCHW"
                perm = "(0, 3, 1, 2)" if lay == "NCHW" else "(0, 2, 3, 1)"
                hint = f"the array looks {alt}; transpose it with a.transpose{perm}"
            raise InputError(
                f"model input {info.name!r} expects {want} channels ({lay}), got array with "
                f"{got} ('{path}', shape {arr.shape})",
                hint=hint,
            )
    arr = _cast(arr, info, what)
    _check_static_dims(info, arr, what, lay)
    return arr


def _cast(arr: np.ndarray, info: TensorInfo, what: str) -> np.ndarray:
    """Cast to the model dtype, refusing lossy casts (fractional values to ints, overflow)."""
    target = info.dtype
    kind = arr.dtype.kind
    if target.kind == "f":
        if kind == "b":
            raise InputError(f"{what} is boolean but model input {info.name!r} is {target}")
        with np.errstate(over="ignore"):  # reported below, with the input's name
            out = arr.astype(target)
        if not np.all(np.isfinite(out)):
            raise InputError(
                f"{what} overflows {target} for model input {info.name!r} "
                f"(values up to {float(np.max(np.abs(arr))):g})",
                hint="rescale the array",
            )
        return out
    if target.kind in "iu":
        if kind == "b":
            raise InputError(f"{what} is boolean but model input {info.name!r} is {target}")
        if kind == "f" and not np.array_equal(arr, np.rint(arr)):
            raise InputError(
                f"model input {info.name!r} expects {target}, got {what} of {arr.dtype} with "
                "non-integer values",
                hint="save integer data (e.g. class or token ids) as an integer array",
            )
        limits = np.iinfo(target)
        if arr.size and (arr.min() < limits.min or arr.max() > limits.max):
            raise InputError(
                f"{what} has values {arr.min()}..{arr.max()} outside the range of {target} "
                f"(model input {info.name!r})"
            )
        return arr.astype(target)
    if target.kind == "b":
        if kind != "b":
            raise InputError(
                f"model input {info.name!r} expects bool, got {what} of {arr.dtype}",
                hint="save a boolean array (a.astype(bool))",
            )
        return arr.copy()
    raise InputError(f"model input {info.name!r} has unsupported dtype {target}")


def _check_static_dims(info: TensorInfo, arr: np.ndarray, what: str, layout: Layout | None) -> None:
    if info.shape is None:
        return
    if 0 in arr.shape:
        raise InputError(f"{what} for model input {info.name!r} has an empty axis: {arr.shape}")
    for axis, (want, got) in enumerate(zip(info.shape, arr.shape)):
        if axis == 0 and want == 1:
            continue  # a fixed batch of 1: onnxviz runs such models one sample at a time
        if _is_int(want) and want != got:
            if axis == 0 and what.startswith("images"):
                hint = (
                    f"the model was exported with a fixed batch of {want}; pass {want} image(s) "
                    "at a time, or re-export it with a dynamic batch axis"
                )
            else:
                hint = "the model fixes this dim; reshape or resize the data"
            role = " (batch)" if axis == 0 else (f" ({layout}[{axis}])" if layout else "")
            raise InputError(
                f"model input {info.name!r} expects shape {_fmt_shape(info.shape)}, got {what} "
                f"of shape {arr.shape}: dim {axis}{role} is {got}, expected {want}",
                hint=hint,
            )


def _check_shared_dims(infos: Sequence[TensorInfo], feeds: dict[str, np.ndarray]) -> None:
    """Inputs that share a symbolic dim (e.g. 'batch') must agree on its size."""
    seen: dict[str, tuple[str, int]] = {}
    for info in infos:
        if info.shape is None:
            continue
        arr = feeds[info.name]
        for d, n in zip(info.shape, arr.shape):
            if not isinstance(d, str):
                continue
            if d in seen and seen[d][1] != n:
                other, m = seen[d]
                raise InputError(
                    f"model inputs {other!r} and {info.name!r} share dim {d!r} but were given "
                    f"{m} and {n}",
                    hint="give arrays with the same batch (and other shared) sizes",
                )
            seen.setdefault(d, (info.name, int(n)))
