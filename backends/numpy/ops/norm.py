"""Normalization ops: BatchNormalization (inference), InstanceNormalization, LayerNormalization,
GroupNormalization, LRN and MeanVarianceNormalization, forward and VJP side by side.

Every standardization ``xhat = (x - mean) * rstd`` over some axes shares one pair of helpers
(:func:`_moments` for the statistics, :func:`_standardize_vjp` for the backward through them), so
the forward and backward directions use the same axes and epsilon by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from onnxviz.errors import OnnxvizError

from ..registry import Call, Grads, forward, unbroadcast, vjp

Array = np.ndarray

# TensorProto element types that stash_type may name (FLOAT, FLOAT16, DOUBLE).
_STASH_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64}


def _stash_dtype(dtype: np.dtype, stash_type: int) -> np.dtype:
    """Precision of the statistics: at least ``stash_type``'s, never below the input's.

    The spec casts everything to ``stash_type`` (float32 by default); we never *downcast*, so a
    float64 model keeps float64 statistics (which is what a float64 gradient check needs).
    """
    return np.promote_types(dtype, _STASH_DTYPES.get(int(stash_type), np.float32))


def _moments(X: Array, axes: tuple[int, ...], epsilon: float) -> tuple[Array, Array]:
    """Mean and reciprocal standard deviation ``1/sqrt(var + eps)`` over ``axes`` (keepdims)."""
    mean = X.mean(axis=axes, keepdims=True)
    centered = X - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    return mean, 1.0 / np.sqrt(var + epsilon)


def _standardize_vjp(g_xhat: Array, xhat: Array, rstd: Array, axes: tuple[int, ...]) -> Array:
    """Backward of ``xhat = (x - mean(x)) * (var(x) + eps)^-1/2`` over ``axes``."""
    mean_g = g_xhat.mean(axis=axes, keepdims=True)
    mean_gx = (g_xhat * xhat).mean(axis=axes, keepdims=True)
    return rstd * (g_xhat - mean_g - xhat * mean_gx)


def _channel_view(p: Array, ndim: int) -> Array:
    """A per-channel vector ``(C,)`` reshaped to broadcast against ``(N, C, D1, ...)``."""
    return p.reshape((-1,) + (1,) * max(ndim - 2, 0))


# ---------------------------------------------------------------------------------------------
# BatchNormalization (inference form)


def _bn_param_view(p: Array, X: Array, spatial: int) -> Array:
    """Per-channel parameters (spatial=1) or per-activation ``(C, D1, ...)`` ones (spatial=0)."""
    if spatial or X.ndim < 2:
        return _channel_view(p, X.ndim)
    return p.reshape(X.shape[1:])


def _batch_norm(
    X: Array, scale: Array, B: Array, mean: Array, var: Array, epsilon: float, spatial: int
) -> Array:
    s, b, m, v = (_bn_param_view(p, X, spatial) for p in (scale, B, mean, var))
    factor = (s / np.sqrt(v + epsilon)).astype(X.dtype, copy=False)
    return ((X - m) * factor + b).astype(X.dtype, copy=False)


@forward("BatchNormalization", since=7)
def batch_normalization_7(
    X: Array, scale: Array, B: Array, mean: Array, var: Array,
    *, epsilon: float = 1e-5, momentum: float = 0.9, spatial: int = 1,
) -> Array:
    """Inference form ``Y = scale * (X - mean) / sqrt(var + eps) + B`` over axis 1.

    ``spatial=0`` means the parameters are per activation, shaped ``X.shape[1:]``. A training
    node (recognisable here only by its extra outputs) cannot be told apart; it is computed with
    the given statistics.
    """
    return _batch_norm(X, scale, B, mean, var, epsilon, spatial)


@forward("BatchNormalization", since=9)
def batch_normalization_9(
    X: Array, scale: Array, B: Array, mean: Array, var: Array,
    *, epsilon: float = 1e-5, momentum: float = 0.9,
) -> Array:
    """Inference form over axis 1 (the ``spatial`` attribute is gone: always per channel)."""
    return _batch_norm(X, scale, B, mean, var, epsilon, 1)


@forward("BatchNormalization", since=14)
def batch_normalization_14(
    X: Array, scale: Array, B: Array, input_mean: Array, input_var: Array,
    *, epsilon: float = 1e-5, momentum: float = 0.9, training_mode: int = 0,
) -> Array:
    """Inference form over axis 1; serves opset 15 too (which only widened the parameter types).

    ``training_mode=1`` (batch statistics and running-average outputs) is refused: an
    explanation should describe the deployed model, whose statistics are the stored ones.
    """
    if training_mode:
        raise OnnxvizError(
            "BatchNormalization with training_mode=1 is not supported by the numpy engine "
            f"(input shape {tuple(X.shape)})",
            hint="export the model in eval mode (model.eval() / training=TrainingMode.EVAL) so "
            "BatchNormalization uses its stored mean and variance",
        )
    return _batch_norm(X, scale, B, input_mean, input_var, epsilon, 1)


@vjp("BatchNormalization", since=7)
def batch_normalization_vjp(call: Call, gY: Optional[Array], *unused: Optional[Array]) -> Grads:
    """Gradients for X, scale, B, mean and var of the inference form (statistics are inputs)."""
    X, scale, _, mean, var = call.inputs[:5]
    assert X is not None and scale is not None and mean is not None and var is not None
    if gY is None:
        return (None,) * len(call.inputs)
    eps = call.attrs.get("epsilon", 1e-5)
    spatial = call.attrs.get("spatial", 1) if call.opset < 9 else 1
    s, m, v = (_bn_param_view(p, X, spatial) for p in (scale, mean, var))
    rstd = 1.0 / np.sqrt(v + eps)
    needs = call.needs

    def reduce_to(g: Array, p: Array) -> Array:
        view = _bn_param_view(p, X, spatial)
        return unbroadcast(g, view.shape).reshape(p.shape)

    g_sum = reduce_to(gY, mean) if needs[2] or needs[3] else None
    g_xc = reduce_to(gY * (X - m), var) if needs[1] or needs[4] else None
    r = rstd.reshape(scale.shape)
    return (
        gY * (s * rstd) if needs[0] else None,
        g_xc * r if needs[1] and g_xc is not None else None,
        g_sum if needs[2] else None,
        -g_sum * scale * r if needs[3] and g_sum is not None else None,
        -0.5 * g_xc * scale * r**3 if needs[4] and g_xc is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# InstanceNormalization


@forward("InstanceNormalization", since=6)
def instance_normalization(input: Array, scale: Array, B: Array, *, epsilon: float = 1e-5) -> Array:
    """Per sample and channel: standardize over the spatial axes, then per-channel affine."""
    axes = tuple(range(2, input.ndim))
    mean, rstd = _moments(input, axes, epsilon)
    xhat = (input - mean) * rstd
    return xhat * _channel_view(scale, input.ndim) + _channel_view(B, input.ndim)


@vjp("InstanceNormalization", since=6)
def instance_normalization_vjp(call: Call, gY: Optional[Array]) -> Grads:
    X, scale, B = call.inputs
    assert X is not None and scale is not None and B is not None
    if gY is None:
        return (None, None, None)
    axes = tuple(range(2, X.ndim))
    mean, rstd = _moments(X, axes, call.attrs.get("epsilon", 1e-5))
    xhat = (X - mean) * rstd
    sview = _channel_view(scale, X.ndim)
    return (
        _standardize_vjp(gY * sview, xhat, rstd, axes) if call.needs[0] else None,
        unbroadcast(gY * xhat, sview.shape).reshape(scale.shape) if call.needs[1] else None,
        unbroadcast(gY, sview.shape).reshape(B.shape) if call.needs[2] else None,
    )


# ---------------------------------------------------------------------------------------------
# LayerNormalization


def _layer_norm_stats(
    X: Array, axis: int, epsilon: float, stash_type: int
) -> tuple[tuple[int, ...], Array, Array, Array]:
    axis = axis + X.ndim if axis < 0 else axis
    axes = tuple(range(axis, X.ndim))
    Xs = X.astype(_stash_dtype(X.dtype, stash_type), copy=False)
    mean, rstd = _moments(Xs, axes, epsilon)
    return axes, mean, rstd, (Xs - mean) * rstd


@forward("LayerNormalization", since=17)
def layer_normalization(
    X: Array, Scale: Array, B: Optional[Array] = None,
    *, axis: int = -1, epsilon: float = 1e-5, stash_type: int = 1,
) -> tuple[Array, Array, Array]:
    """Standardize over axes ``[axis, rank)``, then ``* Scale + B`` (unidirectional broadcast).

    Returns ``(Y, Mean, InvStdDev)``; the statistics keep the reduced axes as size 1 and are in
    the stash precision (float32 for float16 input; the input's own for float32/float64).
    """
    _, mean, rstd, xhat = _layer_norm_stats(X, axis, epsilon, stash_type)
    Y = xhat.astype(X.dtype, copy=False) * Scale
    if B is not None:
        Y = Y + B
    return Y.astype(X.dtype, copy=False), mean, rstd


@vjp("LayerNormalization", since=17)
def layer_normalization_vjp(
    call: Call, gY: Optional[Array], gMean: Optional[Array] = None, gInvStd: Optional[Array] = None
) -> Grads:
    """Gradients for X, Scale and B; also propagates cotangents of the Mean/InvStdDev outputs."""
    X, Scale = call.inputs[0], call.inputs[1]
    B = call.inputs[2] if len(call.inputs) > 2 else None
    assert X is not None and Scale is not None
    attrs = call.attrs
    axes, mean, rstd, xhat = _layer_norm_stats(
        X, attrs.get("axis", -1), attrs.get("epsilon", 1e-5), attrs.get("stash_type", 1)
    )
    count = int(np.prod([X.shape[a] for a in axes]))
    gX = None
    if call.needs[0]:
        gX = np.zeros(X.shape, dtype=xhat.dtype)
        if gY is not None:
            gX = gX + _standardize_vjp(gY * Scale, xhat, rstd, axes)
        if gMean is not None:
            gX = gX + gMean / count
        if gInvStd is not None:
            # d rstd / dX = -rstd^3 (X - mean) / count
            gX = gX - gInvStd * rstd**3 * (X - mean) / count
        gX = gX.astype(X.dtype, copy=False)
    grads: list[Optional[Array]] = [gX, None]
    if call.needs[1] and gY is not None:
        grads[1] = unbroadcast(gY * xhat, Scale.shape)
    if B is not None:
        grads.append(unbroadcast(gY, B.shape) if call.needs[2] and gY is not None else None)
    grads.extend([None] * (len(call.inputs) - len(grads)))
    return tuple(grads)


# ---------------------------------------------------------------------------------------------
# GroupNormalization


def _group_norm_stats(
    X: Array, num_groups: int, epsilon: float, stash_type: int
) -> tuple[Array, Array, tuple[int, ...]]:
    """``(xhat, rstd, grouped shape)`` with X viewed as ``(N, G, C/G * D1 * ...)``."""
    N, C = X.shape[0], X.shape[1]
    if C % num_groups:
        raise OnnxvizError(
            f"GroupNormalization: {C} channels are not divisible by num_groups={num_groups}",
            hint="check the model's GroupNormalization attributes",
        )
    Xg = X.reshape(N, num_groups, -1).astype(_stash_dtype(X.dtype, stash_type), copy=False)
    mean, rstd = _moments(Xg, (2,), epsilon)
    return (Xg - mean) * rstd, rstd, Xg.shape


def _group_affine(p: Array, C: int, num_groups: int, per_group: bool, ndim: int) -> Array:
    return _channel_view(np.repeat(p, C // num_groups) if per_group else p, ndim)


def _group_normalization(
    X: Array, scale: Array, bias: Array, num_groups: int, epsilon: float, stash_type: int,
    per_group: bool,
) -> Array:
    xhat, _, _ = _group_norm_stats(X, num_groups, epsilon, stash_type)
    C = X.shape[1]
    Y = xhat.reshape(X.shape).astype(X.dtype, copy=False)
    Y = Y * _group_affine(scale, C, num_groups, per_group, X.ndim)
    return (Y + _group_affine(bias, C, num_groups, per_group, X.ndim)).astype(X.dtype, copy=False)


@forward("GroupNormalization", since=18)
def group_normalization_18(
    X: Array, scale: Array, bias: Array, *, num_groups: int, epsilon: float = 1e-5
) -> Array:
    """Opset 18: statistics per sample and group; ``scale``/``bias`` are per *group* ``(G,)``."""
    return _group_normalization(X, scale, bias, num_groups, epsilon, 1, True)


@forward("GroupNormalization", since=21)
def group_normalization_21(
    X: Array, scale: Array, bias: Array, *, num_groups: int, epsilon: float = 1e-5,
    stash_type: int = 1,
) -> Array:
    """Opset 21: statistics per sample and group; ``scale``/``bias`` are per *channel* ``(C,)``."""
    return _group_normalization(X, scale, bias, num_groups, epsilon, stash_type, False)


@vjp("GroupNormalization", since=18)
def group_normalization_vjp(call: Call, gY: Optional[Array]) -> Grads:
    X, scale, bias = call.inputs
    assert X is not None and scale is not None and bias is not None
    if gY is None:
        return (None, None, None)
    G = int(call.attrs["num_groups"])
    per_group = call.opset < 21
    xhat, rstd, gshape = _group_norm_stats(
        X, G, call.attrs.get("epsilon", 1e-5), call.attrs.get("stash_type", 1)
    )
    C = X.shape[1]
    sview = _group_affine(scale, C, G, per_group, X.ndim)

    def per_param(g: Array) -> Array:
        per_channel = unbroadcast(g, sview.shape).reshape(C)
        return per_channel.reshape(G, C // G).sum(axis=1) if per_group else per_channel

    gX = None
    if call.needs[0]:
        g_xhat = (gY * sview).reshape(gshape)
        gX = _standardize_vjp(g_xhat, xhat, rstd, (2,)).reshape(X.shape).astype(X.dtype)
    return (
        gX,
        per_param(gY * xhat.reshape(X.shape)) if call.needs[1] else None,
        per_param(gY) if call.needs[2] else None,
    )


# ---------------------------------------------------------------------------------------------
# LRN


def _channel_window_sum(v: Array, before: int, after: int) -> Array:
    """``out[:, c] = sum(v[:, c - before : c + after + 1])`` with zero padding (one add per tap)."""
    C = v.shape[1]
    pad = [(0, 0)] * v.ndim
    pad[1] = (before, after)
    padded = np.pad(v, pad)
    out = np.zeros_like(v)
    for k in range(before + after + 1):
        out = out + padded[:, k : k + C]
    return out


def _lrn_window(size: int) -> tuple[int, int]:
    return (size - 1) // 2, size // 2  # floor((size-1)/2) before, ceil((size-1)/2) after


def _lrn_denominator(X: Array, size: int, alpha: float, bias: float) -> Array:
    before, after = _lrn_window(size)
    return bias + (alpha / size) * _channel_window_sum(X * X, before, after)


@forward("LRN", since=1)
def lrn(
    X: Array, *, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0
) -> Array:
    """``Y = X / (bias + alpha/size * sum of squares over a channel window)^beta``.

    The window around channel ``c`` is ``[c - floor((size-1)/2), c + ceil((size-1)/2)]``.
    """
    D = _lrn_denominator(X, size, alpha, bias)
    return (X * D ** (-beta)).astype(X.dtype, copy=False)


@vjp("LRN", since=1)
def lrn_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """Exact: the direct term plus the adjoint window (swapped before/after) of the sum."""
    (X,) = call.inputs
    assert X is not None
    if gY is None or not call.needs[0]:
        return (None,)
    size = int(call.attrs["size"])
    alpha, beta = call.attrs.get("alpha", 1e-4), call.attrs.get("beta", 0.75)
    D = _lrn_denominator(X, size, alpha, call.attrs.get("bias", 1.0))
    before, after = _lrn_window(size)
    t = gY * X * D ** (-beta - 1.0)
    back = _channel_window_sum(t, after, before)
    return ((gY * D ** (-beta) - (2.0 * alpha * beta / size) * X * back).astype(X.dtype),)


# ---------------------------------------------------------------------------------------------
# MeanVarianceNormalization

_MVN_EPSILON = 1e-9  # the spec's function body adds it to the standard deviation


def _mvn_stats(X: Array, axes: Sequence[int]) -> tuple[tuple[int, ...], Array, Array]:
    axes_t = tuple(sorted(a + X.ndim if a < 0 else a for a in axes))
    centered = X - X.mean(axis=axes_t, keepdims=True)
    std = np.sqrt((centered * centered).mean(axis=axes_t, keepdims=True))
    return axes_t, centered, std


@forward("MeanVarianceNormalization", since=9)
def mean_variance_normalization(X: Array, *, axes: Sequence[int] = (0, 2, 3)) -> Array:
    """``(X - E[X]) / (sqrt(E[(X - E[X])^2]) + 1e-9)`` over ``axes``, as the spec's function body.

    The variance is computed as the mean squared deviation (not ``E[X^2] - E[X]^2``, which is
    equal in exact arithmetic but can go negative in floating point).
    """
    _, centered, std = _mvn_stats(X, axes)
    return (centered / (std + _MVN_EPSILON)).astype(X.dtype, copy=False)


@vjp("MeanVarianceNormalization", since=9)
def mean_variance_normalization_vjp(call: Call, gY: Optional[Array]) -> Grads:
    (X,) = call.inputs
    assert X is not None
    if gY is None or not call.needs[0]:
        return (None,)
    axes, centered, std = _mvn_stats(X, call.attrs.get("axes", (0, 2, 3)))
    q = 1.0 / (std + _MVN_EPSILON)
    mean_g = gY.mean(axis=axes, keepdims=True)
    mean_gd = (gY * centered).mean(axis=axes, keepdims=True)
    safe_std = np.where(std > 0, std, 1.0)
    gX = q * (gY - mean_g) - (q * q / safe_std) * mean_gd * centered
    return (gX.astype(X.dtype, copy=False),)
