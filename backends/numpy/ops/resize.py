"""Resize and Upsample: forward and VJP side by side.

Every interpolation mode of Resize is separable: along each resized axis the output is a fixed
linear map of the input, an ``(out_len, in_len)`` matrix built from the coordinate transform and
the interpolation kernel (nearest: one tap; linear: 2; cubic: 4; with antialias the kernel is
stretched by ``1 / scale`` when downscaling). The forward applies one matrix per resized axis
(nearest uses the equivalent ``np.take``), and the VJP applies the transposed matrices, which is
exact. ``tf_crop_and_resize`` overwrites samples outside the input with ``extrapolation_value``;
those outputs get no gradient. One helper (:func:`_plan`) builds the matrices for both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxviz.errors import OnnxvizError

from ..registry import Call, Grads, forward, vjp

Array = np.ndarray


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _given(value: Array | None) -> bool:
    """Optional inputs may be missing or empty tensors (Resize-11 passes empty scales with sizes)."""
    return value is not None and np.asarray(value).size > 0


@dataclass(frozen=True)
class _Axis:
    """How one axis is resized: the interpolation matrix (out_len x in_len), the nearest indices
    (when the mode is nearest), and which outputs fall outside the input (tf_crop_and_resize)."""

    axis: int
    matrix: Array
    index: Array | None
    outside: Array | None


@dataclass(frozen=True)
class _Options:
    mode: str = "nearest"
    transform: str = "half_pixel"
    nearest: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False


def _source_coords(
    opts: _Options, out_len: int, in_len: int, scale: float, roi: tuple[float, float]
) -> Array:
    """``x_original`` for every output position, per the coordinate_transformation_mode.

    Evaluated in float32, as written in the spec and as onnxruntime does: a coordinate that is
    mathematically a tie or an integer (roi 0.1 * 5 = 0.5, 0.5 / (1 / 7) - 0.5 = 3) then rounds
    the same way in both, instead of depending on float64 noise.
    """
    f32 = np.float32
    x = np.arange(out_len, dtype=f32)
    scale, in_len = f32(scale), f32(in_len)
    mode = opts.transform
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = f32(out_len) / (in_len * scale)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros(out_len, dtype=f32)
    if mode == "align_corners":
        return x * (in_len - 1) / f32(out_len - 1) if out_len > 1 else np.zeros(out_len, dtype=f32)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, end = f32(roi[0]), f32(roi[1])
        if out_len > 1:
            return start * (in_len - 1) + x * (end - start) * (in_len - 1) / (out_len - 1)
        return np.full(out_len, 0.5 * (start + end) * (in_len - 1), dtype=f32)
    raise OnnxvizError(f"Resize: unknown coordinate_transformation_mode {mode!r}")


def _nearest_index(opts: _Options, coords: Array, scale: float) -> Array:
    frac = coords - np.floor(coords)
    rule = opts.nearest
    if rule == "round_prefer_floor":
        return np.where(frac == 0.5, np.floor(coords), np.round(coords))
    if rule == "round_prefer_ceil":
        return np.where(frac == 0.5, np.ceil(coords), np.round(coords))
    if rule == "floor":
        return np.floor(coords)
    if rule == "legacy":
        # Resize-10 / Upsample define no rounding; onnxruntime floors when upscaling and takes
        # the ceiling when downscaling an axis, and the numpy engine follows it.
        return np.ceil(coords) if scale < 1 else np.floor(coords)
    if rule == "ceil":
        return np.ceil(coords)
    raise OnnxvizError(f"Resize: unknown nearest_mode {rule!r}")


def _kernel(opts: _Options, d: Array) -> Array:
    """The interpolation kernel at distance ``d`` (triangle for linear, Keys' cubic with ``a``)."""
    d = np.abs(d)
    if opts.mode == "linear":
        return np.maximum(1 - d, 0)
    a = opts.cubic_a
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _axis_matrix(opts: _Options, coords: Array, in_len: int, scale: float) -> tuple[Array, Array | None]:
    """The (out_len x in_len) interpolation matrix and, for nearest, the source indices.

    Taps outside the input are clamped to the edge, or with ``exclude_outside`` dropped and the
    remaining weights renormalised to sum to one.
    """
    coords = coords.astype(np.float64)
    out_len = coords.size
    rows = np.arange(out_len)
    matrix = np.zeros((out_len, in_len))
    if opts.mode == "nearest":
        index = np.clip(_nearest_index(opts, coords, scale), 0, in_len - 1).astype(np.int64)
        matrix[rows, index] = 1.0
        return matrix, index
    if opts.mode not in ("linear", "cubic"):
        raise OnnxvizError(f"Resize: unknown mode {opts.mode!r}", hint="use nearest, linear or cubic")
    stretch = min(scale, 1.0) if opts.antialias else 1.0
    radius = (1.0 if opts.mode == "linear" else 2.0) / stretch
    reach = int(np.ceil(radius))
    base = np.floor(coords).astype(np.int64)[:, None]
    taps = base + np.arange(-reach + 1, reach + 1)[None, :]
    weights = _kernel(opts, (taps - coords[:, None]) * stretch)
    if opts.exclude_outside:
        weights = np.where((taps < 0) | (taps >= in_len), 0.0, weights)
    total = weights.sum(axis=1, keepdims=True)
    # a row whose taps all lie outside (tf_crop_and_resize with exclude_outside) is extrapolated
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)
    np.add.at(matrix, (np.broadcast_to(rows[:, None], taps.shape), np.clip(taps, 0, in_len - 1)), weights)
    return matrix, None


def _plan(
    shape: tuple[int, ...],
    out_shape: list[int],
    scales: list[float],
    rois: list[tuple[float, float]],
    opts: _Options,
) -> list[_Axis]:
    """One :class:`_Axis` per axis that actually changes (an identity map is skipped)."""
    plans = []
    for a, (n_in, n_out) in enumerate(zip(shape, out_shape)):
        if n_in == n_out and scales[a] == 1 and rois[a] == (0, 1):
            continue  # e.g. tf_half_pixel_for_nn would shift an unscaled axis by half a pixel
        coords = _source_coords(opts, n_out, n_in, scales[a], rois[a])
        outside = None
        if opts.transform == "tf_crop_and_resize":
            outside = (coords < 0) | (coords > n_in - 1)
            outside = outside if outside.any() else None
        matrix, index = _axis_matrix(opts, coords, n_in, scales[a])
        if outside is None and n_in == n_out and np.array_equal(matrix, np.eye(n_in)):
            continue
        plans.append(_Axis(a, matrix, index, outside))
    return plans


def _apply(x: Array, plans: list[_Axis], extrapolation: float) -> Array:
    for p in plans:
        if p.index is not None:
            x = np.take(x, p.index, axis=p.axis)
        else:
            x = np.moveaxis(np.tensordot(x, p.matrix.astype(x.dtype), axes=([p.axis], [1])), -1, p.axis)
    mask = _outside_mask(plans, x.ndim)
    if mask is not None:
        x = np.where(mask, np.asarray(extrapolation, dtype=x.dtype), x)
    return x if plans else x.copy()


def _outside_mask(plans: list[_Axis], rank: int) -> Array | None:
    mask = None
    for p in plans:
        if p.outside is not None:
            shape = [1] * rank
            shape[p.axis] = p.outside.size
            m = p.outside.reshape(shape)
            mask = m if mask is None else mask | m
    return mask


def _apply_transposed(g: Array, plans: list[_Axis]) -> Array:
    mask = _outside_mask(plans, g.ndim)
    if mask is not None:
        g = np.where(mask, 0, g)
    for p in plans:
        g = np.moveaxis(np.tensordot(g, p.matrix.astype(g.dtype), axes=([p.axis], [0])), -1, p.axis)
    return g


# --- sizes and scales ---------------------------------------------------------------------------


def _targets(
    shape: tuple[int, ...],
    roi: Array | None,
    scales: Array | None,
    sizes: Array | None,
    axes: list[int] | None,
    policy: str,
    transform: str,
) -> tuple[list[int], list[float], list[tuple[float, float]]]:
    """Output shape, per-axis scale and per-axis roi from the op's inputs (axes: opset 18).

    Scales are float32 and output sizes floors of float32 products, as in onnxruntime (there
    10 * 0.7f is 7; in float64 it would be 6.99...).
    """
    rank = len(shape)
    axes = list(range(rank)) if axes is None else [a + rank if a < 0 else a for a in axes]
    f32 = np.float32
    out, scale = list(shape), [f32(1)] * rank
    rois = [(f32(0), f32(1))] * rank
    if _given(roi) and transform == "tf_crop_and_resize":
        r = np.asarray(roi, dtype=np.float32).reshape(-1)
        for i, a in enumerate(axes):
            rois[a] = (r[i], r[i + len(axes)])
    if _given(sizes):
        wanted = [int(s) for s in np.asarray(sizes).reshape(-1)]
        if policy == "stretch":
            for a, n in zip(axes, wanted):
                out[a], scale[a] = n, f32(n) / f32(shape[a])
        else:
            ratios = [f32(n) / f32(shape[a]) for a, n in zip(axes, wanted)]
            common = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                out[a], scale[a] = int(np.floor(common * f32(shape[a]) + f32(0.5))), common
    elif _given(scales):
        given = np.asarray(scales, dtype=np.float32).reshape(-1)
        for a, s in zip(axes, given):
            start, end = rois[a]
            extent = f32(shape[a]) * (end - start) if transform == "tf_crop_and_resize" else f32(shape[a])
            out[a], scale[a] = int(np.floor(extent * s)), s
    else:
        raise OnnxvizError("Resize needs either 'scales' or 'sizes'", hint="the model is malformed")
    return out, scale, rois


def _resize_plan(
    X: Array, roi: Array | None, scales: Array | None, sizes: Array | None, attrs: dict[str, Any]
) -> list[_Axis]:
    axes = attrs.get("axes")
    transform = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    out, scale, rois = _targets(
        X.shape, roi, scales, sizes, None if axes is None else [int(a) for a in axes],
        _text(attrs.get("keep_aspect_ratio_policy", "stretch")), transform,
    )
    opts = _Options(
        mode=_text(attrs.get("mode", "nearest")),
        transform=transform,
        nearest=_text(attrs.get("nearest_mode", "round_prefer_floor")),
        cubic_a=float(attrs.get("cubic_coeff_a", -0.75)),
        exclude_outside=bool(attrs.get("exclude_outside", 0)),
        antialias=bool(attrs.get("antialias", 0)),
    )
    return _plan(X.shape, out, scale, rois, opts)


def _legacy_plan(X: Array, scales: Any, mode: bytes | str) -> list[_Axis]:
    """Upsample-7/9 and Resize-10: asymmetric transform (x_original = x / scale), nearest takes
    the floor (the ceiling on a downscaled axis, as onnxruntime), linear clamps to the edge; the
    output is ``floor(in * scale)``."""
    s = [np.float32(v) for v in np.asarray(scales, dtype=np.float32).reshape(-1)]
    out = [int(np.floor(np.float32(n) * f)) for n, f in zip(X.shape, s)]
    opts = _Options(mode=_text(mode), transform="asymmetric", nearest="legacy")
    return _plan(X.shape, out, s, [(0.0, 1.0)] * X.ndim, opts)


# --- Resize -----------------------------------------------------------------------------------


@forward("Resize", since=10)
def resize_10(X: Array, scales: Array, *, mode: bytes | str = "nearest") -> Array:
    """Resize-10: scales input; nearest or linear with the asymmetric transform."""
    return _apply(X, _legacy_plan(X, scales, mode), 0.0)


@forward("Resize", since=11)
def resize_11(
    X: Array,
    roi: Array | None = None,
    scales: Array | None = None,
    sizes: Array | None = None,
    *,
    coordinate_transformation_mode: bytes | str = "half_pixel",
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    extrapolation_value: float = 0.0,
    mode: bytes | str = "nearest",
    nearest_mode: bytes | str = "round_prefer_floor",
) -> Array:
    """Resize-11/13: roi, scales, sizes inputs (one of scales/sizes; empty means absent)."""
    attrs = {
        "coordinate_transformation_mode": coordinate_transformation_mode,
        "cubic_coeff_a": cubic_coeff_a,
        "exclude_outside": exclude_outside,
        "mode": mode,
        "nearest_mode": nearest_mode,
    }
    return _apply(X, _resize_plan(X, roi, scales, sizes, attrs), extrapolation_value)


@forward("Resize", since=18)
def resize_18(
    X: Array,
    roi: Array | None = None,
    scales: Array | None = None,
    sizes: Array | None = None,
    *,
    antialias: int = 0,
    axes: list[int] | None = None,
    coordinate_transformation_mode: bytes | str = "half_pixel",
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    extrapolation_value: float = 0.0,
    keep_aspect_ratio_policy: bytes | str = "stretch",
    mode: bytes | str = "nearest",
    nearest_mode: bytes | str = "round_prefer_floor",
) -> Array:
    """Resize-18/19: adds antialias, axes and keep_aspect_ratio_policy (not_larger/not_smaller
    use one common scale, output ``round_half_up(scale * in)``); 19 adds half_pixel_symmetric."""
    attrs = {
        "antialias": antialias,
        "axes": axes,
        "coordinate_transformation_mode": coordinate_transformation_mode,
        "cubic_coeff_a": cubic_coeff_a,
        "exclude_outside": exclude_outside,
        "keep_aspect_ratio_policy": keep_aspect_ratio_policy,
        "mode": mode,
        "nearest_mode": nearest_mode,
    }
    return _apply(X, _resize_plan(X, roi, scales, sizes, attrs), extrapolation_value)


@vjp("Resize", since=10)
def resize_vjp(call: Call, gY: Array | None) -> Grads:
    """The transposed interpolation matrices applied to the cotangent; roi/scales/sizes get none."""
    X = call.inputs[0]
    if len(call.inputs) == 2:  # Resize-10: (X, scales); from 11 on roi comes before scales
        plans = _legacy_plan(X, call.inputs[1], call.attrs.get("mode", "nearest"))
    else:
        roi, scales, sizes = (list(call.inputs[1:]) + [None, None, None])[:3]
        plans = _resize_plan(X, roi, scales, sizes, dict(call.attrs))
    return (_apply_transposed(gY, plans), *(None,) * (len(call.inputs) - 1))


# --- Upsample ---------------------------------------------------------------------------------


@forward("Upsample", since=7)
def upsample_7(X: Array, *, scales: list[float], mode: bytes | str = "nearest") -> Array:
    """Upsample-7: scales attribute (each >= 1); nearest or linear, as Resize-10."""
    return _apply(X, _legacy_plan(X, scales, mode), 0.0)


@forward("Upsample", since=9)
def upsample_9(X: Array, scales: Array, *, mode: bytes | str = "nearest") -> Array:
    """Upsample-9/10: scales input."""
    return _apply(X, _legacy_plan(X, scales, mode), 0.0)


@vjp("Upsample", since=7)
def upsample_vjp(call: Call, gY: Array | None) -> Grads:
    X = call.inputs[0]
    scales = call.inputs[1] if len(call.inputs) > 1 else call.attrs["scales"]
    plans = _legacy_plan(X, scales, call.attrs.get("mode", "nearest"))
    return (_apply_transposed(gY, plans), *(None,) * (len(call.inputs) - 1))
