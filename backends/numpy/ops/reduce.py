"""Reductions (ReduceSum, ReduceMean, ReduceMax, ... with VJPs) and the forward-only ArgMax and
ArgMin, forward and VJP side by side.

Every ``Reduce*`` op exists in two forms: ``axes`` as an attribute (up to opset 12; ReduceSum up to
12 as well) and ``axes`` as an optional int64 input with ``noop_with_empty_axes`` (ReduceSum from
13, the others from 18). Both forms funnel through :func:`_resolve_axes`, and the single VJP per op
reads the axes from wherever the call carries them, so both directions agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np

from ..registry import Call, Grads, forward, vjp

Array = np.ndarray
Axes = tuple[int, ...]
Kernel = Callable[[Array, tuple[int, ...], bool], Array]


def _resolve_axes(
    ndim: int, axes: Optional[Sequence[int] | Array], noop_with_empty_axes: int
) -> Axes:
    """Normalised, sorted axes; empty/absent axes mean all axes, or none at all if noop.

    Reducing over no axes still applies the op's element-wise part (``|x|`` for ReduceL1, ``x*x``
    for ReduceSumSquare, ``log x`` for ReduceLogSum, ...), as the spec's function bodies do: they
    apply it before a ReduceSum that is the identity under ``noop_with_empty_axes``.
    """
    values = [] if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    if not values:
        return () if noop_with_empty_axes else tuple(range(ndim))
    return tuple(sorted({a + ndim if a < 0 else a for a in values}))


def _call_axes(call: Call) -> Axes:
    """The axes of a recorded call, from its ``axes`` input (new form) or attribute (old form)."""
    X = call.inputs[0]
    assert X is not None
    axes = call.inputs[1] if len(call.inputs) > 1 else None
    if axes is None:
        axes = call.attrs.get("axes")
    return _resolve_axes(X.ndim, axes, call.attrs.get("noop_with_empty_axes", 0))


def _expand(g: Array, X: Array, axes: tuple[int, ...], keepdims: int) -> Array:
    """A cotangent of the reduced output, broadcast back to the input's shape."""
    if not keepdims:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, X.shape)


def _reduce(kernel: Kernel, X: Array, axes: Axes, keepdims: int) -> Array:
    return np.asarray(kernel(X, axes, bool(keepdims))).astype(X.dtype, copy=False)


def _reduce_attr(
    kernel: Kernel, data: Array, axes: Optional[Sequence[int]], keepdims: int
) -> Array:
    """The attribute form (opsets 1..12, ReduceSum 1..12): absent axes = all axes."""
    return _reduce(kernel, data, _resolve_axes(data.ndim, axes, 0), keepdims)


def _reduce_input(
    kernel: Kernel, data: Array, axes: Optional[Array], keepdims: int, noop_with_empty_axes: int
) -> Array:
    """The input form (ReduceSum 13+, the others 18+)."""
    return _reduce(kernel, data, _resolve_axes(data.ndim, axes, noop_with_empty_axes), keepdims)


# ---------------------------------------------------------------------------------------------
# Kernels (X, axes, keepdims) -> reduced; dtype is restored by _reduce.


def _sum(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    return np.sum(X, axis=axes, keepdims=keepdims, dtype=X.dtype)


def _mean(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    return np.mean(X, axis=axes, keepdims=keepdims)


def _is_empty(X: Array, axes: tuple[int, ...]) -> bool:
    return any(X.shape[a] == 0 for a in axes)


def _max(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    """An empty reduction gives -inf (the type's minimum for integers), as from opset 18."""
    if _is_empty(X, axes):
        low = -np.inf if np.issubdtype(X.dtype, np.floating) else np.iinfo(X.dtype).min
        return np.max(X, axis=axes, keepdims=keepdims, initial=low)
    return np.max(X, axis=axes, keepdims=keepdims)


def _min(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    """An empty reduction gives +inf (the type's maximum for integers), as from opset 18."""
    if _is_empty(X, axes):
        high = np.inf if np.issubdtype(X.dtype, np.floating) else np.iinfo(X.dtype).max
        return np.min(X, axis=axes, keepdims=keepdims, initial=high)
    return np.min(X, axis=axes, keepdims=keepdims)


def _prod(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    return np.prod(X, axis=axes, keepdims=keepdims, dtype=X.dtype)


def _l1(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    return np.sum(np.abs(X), axis=axes, keepdims=keepdims, dtype=X.dtype)


def _l2(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    return np.sqrt(np.sum(X * X, axis=axes, keepdims=keepdims, dtype=X.dtype))


def _sum_square(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    return np.sum(X * X, axis=axes, keepdims=keepdims, dtype=X.dtype)


def _log_sum(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    return np.log(np.sum(X, axis=axes, keepdims=keepdims, dtype=X.dtype))


def _log_sum_exp(X: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    """Shifted by the max for stability (an all ``-inf`` slice gives ``-inf``, not NaN)."""
    m = np.max(X, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(X.dtype, copy=False)
    s = np.log(np.sum(np.exp(X - m), axis=axes, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axes)


@forward("ReduceSum", since=1)
def reduce_sum_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The sum over ``axes``."""
    return _reduce_attr(_sum, data, axes, keepdims)


@forward("ReduceSum", since=13)
def reduce_sum_13(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_sum, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceMean", since=1)
def reduce_mean_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The mean over ``axes``."""
    return _reduce_attr(_mean, data, axes, keepdims)


@forward("ReduceMean", since=18)
def reduce_mean_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_mean, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceMax", since=1)
def reduce_max_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The maximum (an empty reduction gives -inf or the type's minimum) over ``axes``."""
    return _reduce_attr(_max, data, axes, keepdims)


@forward("ReduceMax", since=18)
def reduce_max_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_max, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceMin", since=1)
def reduce_min_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The minimum (an empty reduction gives +inf or the type's maximum) over ``axes``."""
    return _reduce_attr(_min, data, axes, keepdims)


@forward("ReduceMin", since=18)
def reduce_min_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_min, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceProd", since=1)
def reduce_prod_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The product over ``axes``."""
    return _reduce_attr(_prod, data, axes, keepdims)


@forward("ReduceProd", since=18)
def reduce_prod_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_prod, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceL1", since=1)
def reduce_l1_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The sum of absolute values over ``axes``."""
    return _reduce_attr(_l1, data, axes, keepdims)


@forward("ReduceL1", since=18)
def reduce_l1_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_l1, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceL2", since=1)
def reduce_l2_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The Euclidean norm over ``axes``."""
    return _reduce_attr(_l2, data, axes, keepdims)


@forward("ReduceL2", since=18)
def reduce_l2_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_l2, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceSumSquare", since=1)
def reduce_sum_square_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The sum of squares over ``axes``."""
    return _reduce_attr(_sum_square, data, axes, keepdims)


@forward("ReduceSumSquare", since=18)
def reduce_sum_square_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_sum_square, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceLogSum", since=1)
def reduce_log_sum_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The log of the sum over ``axes``."""
    return _reduce_attr(_log_sum, data, axes, keepdims)


@forward("ReduceLogSum", since=18)
def reduce_log_sum_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_log_sum, data, axes, keepdims, noop_with_empty_axes)


@forward("ReduceLogSumExp", since=1)
def reduce_log_sum_exp_1(
    data: Array, *, axes: Optional[Sequence[int]] = None, keepdims: int = 1
) -> Array:
    """The log-sum-exp (max-shifted) over ``axes``."""
    return _reduce_attr(_log_sum_exp, data, axes, keepdims)


@forward("ReduceLogSumExp", since=18)
def reduce_log_sum_exp_18(
    data: Array, axes: Optional[Array] = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Array:
    return _reduce_input(_log_sum_exp, data, axes, keepdims, noop_with_empty_axes)


# ---------------------------------------------------------------------------------------------
# VJPs: one per op, serving both forms.


def _reduce_vjp(
    call: Call, gY: Optional[Array], local: Callable[[Array, Array, tuple[int, ...]], Array]
) -> Grads:
    """``local(g, X, axes)`` maps the cotangent (already broadcast to X's shape) to dX."""
    X = call.inputs[0]
    assert X is not None
    rest = (None,) * (len(call.inputs) - 1)
    if gY is None or not call.needs[0]:
        return (None, *rest)
    axes = _call_axes(call)
    keepdims = call.attrs.get("keepdims", 1)
    g = _expand(gY, X, axes, keepdims)
    return (np.asarray(local(g, X, axes)).astype(X.dtype, copy=False), *rest)


def _kept(call: Call, Y: Array, axes: tuple[int, ...]) -> Array:
    """The output with the reduced axes kept as size 1."""
    return Y if call.attrs.get("keepdims", 1) else np.expand_dims(Y, axes)


@vjp("ReduceSum")
def reduce_sum_vjp(call: Call, gY: Optional[Array]) -> Grads:
    return _reduce_vjp(call, gY, lambda g, X, axes: g.copy())


@vjp("ReduceMean")
def reduce_mean_vjp(call: Call, gY: Optional[Array]) -> Grads:
    def local(g: Array, X: Array, axes: tuple[int, ...]) -> Array:
        return g / max(1, int(np.prod([X.shape[a] for a in axes])))

    return _reduce_vjp(call, gY, local)


def _extreme_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """The cotangent goes to the elements equal to the extreme, split evenly among ties.

    Splitting (rather than picking the first) keeps the rule symmetric in the tied inputs and
    makes it the average of the one-sided derivatives; away from ties it is the exact gradient.
    """

    def local(g: Array, X: Array, axes: tuple[int, ...]) -> Array:
        mask = X == _kept(call, call.outputs[0], axes)
        count = np.sum(mask, axis=axes, keepdims=True)
        return g * mask / np.maximum(count, 1)

    return _reduce_vjp(call, gY, local)


@vjp("ReduceMax")
def reduce_max_vjp(call: Call, gY: Optional[Array]) -> Grads:
    return _extreme_vjp(call, gY)


@vjp("ReduceMin")
def reduce_min_vjp(call: Call, gY: Optional[Array]) -> Grads:
    return _extreme_vjp(call, gY)


@vjp("ReduceProd")
def reduce_prod_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """Exact products of all *other* elements (prefix times suffix cumulative products), so
    zeros in the input are handled without dividing by them."""

    def local(g: Array, X: Array, axes: tuple[int, ...]) -> Array:
        others = [a for a in range(X.ndim) if a not in axes]
        moved = np.transpose(X, others + list(axes))
        flat = moved.reshape(moved.shape[: len(others)] + (-1,))
        ones = np.ones(flat.shape[:-1] + (1,), dtype=X.dtype)
        before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
        after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
        excl = np.transpose((before * after).reshape(moved.shape), np.argsort(others + list(axes)))
        return g * excl

    return _reduce_vjp(call, gY, local)


@vjp("ReduceL1")
def reduce_l1_vjp(call: Call, gY: Optional[Array]) -> Grads:
    return _reduce_vjp(call, gY, lambda g, X, axes: g * np.sign(X))


@vjp("ReduceL2")
def reduce_l2_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """``g * x / ||x||``; a zero-norm slice gets zero gradient (the subgradient of minimal norm)."""

    def local(g: Array, X: Array, axes: tuple[int, ...]) -> Array:
        norm = _kept(call, call.outputs[0], axes)
        return g * X / np.where(norm > 0, norm, 1) * (norm > 0)

    return _reduce_vjp(call, gY, local)


@vjp("ReduceSumSquare")
def reduce_sum_square_vjp(call: Call, gY: Optional[Array]) -> Grads:
    return _reduce_vjp(call, gY, lambda g, X, axes: 2 * g * X)


@vjp("ReduceLogSum")
def reduce_log_sum_vjp(call: Call, gY: Optional[Array]) -> Grads:
    return _reduce_vjp(call, gY, lambda g, X, axes: g / np.sum(X, axis=axes, keepdims=True))


@vjp("ReduceLogSumExp")
def reduce_log_sum_exp_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """``g * softmax(x)`` over the reduced axes, from the recorded output."""
    return _reduce_vjp(
        call, gY, lambda g, X, axes: g * np.exp(X - _kept(call, call.outputs[0], axes))
    )


# ---------------------------------------------------------------------------------------------
# ArgMax / ArgMin (forward only: NON_DIFFERENTIABLE)


def _arg_extreme(
    fn: Callable[..., Array], data: Array, axis: int, keepdims: int, select_last_index: int
) -> Array:
    axis = axis + data.ndim if axis < 0 else axis
    if select_last_index:
        n = data.shape[axis]
        index = n - 1 - fn(np.flip(data, axis=axis), axis=axis, keepdims=bool(keepdims))
    else:
        index = fn(data, axis=axis, keepdims=bool(keepdims))
    return np.asarray(index, dtype=np.int64)


@forward("ArgMax", since=1)
def arg_max(data: Array, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Array:
    """int64 index of the maximum along ``axis``; ties go to the first (or, with
    ``select_last_index=1`` from opset 12, the last) occurrence."""
    return _arg_extreme(np.argmax, data, axis, keepdims, select_last_index)


@forward("ArgMin", since=1)
def arg_min(data: Array, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Array:
    """int64 index of the minimum along ``axis``; ties as for ArgMax."""
    return _arg_extreme(np.argmin, data, axis, keepdims, select_last_index)
