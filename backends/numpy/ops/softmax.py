"""Softmax and LogSoftmax: forward and VJP side by side.

Opsets 1 and 11 normalise over the flattened block of axes from ``axis`` on (the input coerced to
2-D at ``axis``, default 1); opset 13 normalises over the single ``axis`` (default -1).
"""

from __future__ import annotations

import numpy as np

from ..registry import Call, Grads, forward, vjp

Array = np.ndarray


# --- Softmax, LogSoftmax -----------------------------------------------------------------------


def _softmax_axes(ndim: int, axis: int, opset: int) -> int | tuple[int, ...]:
    """Opsets 1 and 11 coerce the input to 2-D at ``axis`` and normalise over the flattened
    trailing block, i.e. over every axis from ``axis`` on; opset 13 normalises over one axis."""
    if axis < 0:
        axis += ndim
    return axis if opset >= 13 else tuple(range(axis, max(ndim, axis)))


def _softmax(X: Array, axes: int | tuple[int, ...]) -> Array:
    out = np.subtract(X, X.max(axis=axes, keepdims=True))
    np.exp(out, out=out)
    out /= out.sum(axis=axes, keepdims=True)
    return out


def _log_softmax(X: Array, axes: int | tuple[int, ...]) -> Array:
    out = np.subtract(X, X.max(axis=axes, keepdims=True))
    out -= np.log(np.exp(out).sum(axis=axes, keepdims=True))
    return out


def _softmax_vjp(Y: Array, gY: Array, axes: int | tuple[int, ...]) -> Array:
    """``Y * (g - sum(g * Y))`` over the normalised axes."""
    t = np.multiply(gY, Y)
    s = t.sum(axis=axes, keepdims=True)
    np.subtract(gY, s, out=t)
    t *= Y
    return t


def _log_softmax_vjp(Y: Array, gY: Array, axes: int | tuple[int, ...]) -> Array:
    """``g - exp(Y) * sum(g)`` over the normalised axes."""
    t = np.exp(Y)
    t *= gY.sum(axis=axes, keepdims=True)
    np.subtract(gY, t, out=t)
    return t


@forward("Softmax", since=1)
def softmax_1(input: Array, *, axis: int = 1) -> Array:
    return _softmax(input, _softmax_axes(input.ndim, axis, 1))


@vjp("Softmax", since=1)
def softmax_1_vjp(call: Call, gY: Array) -> Grads:
    axes = _softmax_axes(gY.ndim, call.attrs.get("axis", 1), 1)
    return (_softmax_vjp(call.outputs[0], gY, axes),)


@forward("Softmax", since=13)
def softmax(input: Array, *, axis: int = -1) -> Array:
    return _softmax(input, _softmax_axes(input.ndim, axis, 13))


@vjp("Softmax", since=13)
def softmax_vjp(call: Call, gY: Array) -> Grads:
    axes = _softmax_axes(gY.ndim, call.attrs.get("axis", -1), 13)
    return (_softmax_vjp(call.outputs[0], gY, axes),)


@forward("LogSoftmax", since=1)
def log_softmax_1(input: Array, *, axis: int = 1) -> Array:
    return _log_softmax(input, _softmax_axes(input.ndim, axis, 1))


@vjp("LogSoftmax", since=1)
def log_softmax_1_vjp(call: Call, gY: Array) -> Grads:
    axes = _softmax_axes(gY.ndim, call.attrs.get("axis", 1), 1)
    return (_log_softmax_vjp(call.outputs[0], gY, axes),)


@forward("LogSoftmax", since=13)
def log_softmax(input: Array, *, axis: int = -1) -> Array:
    return _log_softmax(input, _softmax_axes(input.ndim, axis, 13))


@vjp("LogSoftmax", since=13)
def log_softmax_vjp(call: Call, gY: Array) -> Grads:
    axes = _softmax_axes(gY.ndim, call.attrs.get("axis", -1), 13)
    return (_log_softmax_vjp(call.outputs[0], gY, axes),)
