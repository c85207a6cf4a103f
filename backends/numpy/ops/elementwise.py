"""Elementwise ops: forward and VJP side by side.

Arithmetic (Add, Sub, Mul, Div, Pow), unary maths (Sqrt, Exp, Log, Neg, Abs, Reciprocal, Erf),
the variadic Sum, Mean, Min and Max, and Where, all with multidirectional (numpy) broadcasting:
every binary VJP sums the cotangent back to each input's shape with :func:`unbroadcast`.
Comparisons, logic and rounding (Equal ... IsInf) are forward only (see NON_DIFFERENTIABLE).

Old versions (Add-7 vs Add-14, Max-8 vs Max-13, ...) differ only in their type lists, so one
registration serves them all; versions before 7 (legacy ``broadcast``/``axis`` attributes) and
before 8 for the variadic ops (no broadcasting) are covered as a superset where the signature
is the same.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from ..registry import Call, Grads, forward, unbroadcast, vjp

Array = np.ndarray

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


# --- arithmetic --------------------------------------------------------------------------------


@forward("Add", since=7)
def add(A: Array, B: Array) -> Array:
    return np.add(A, B)


@vjp("Add", since=7)
def add_vjp(call: Call, gC: Array) -> Grads:
    A, B = call.inputs
    return (
        unbroadcast(gC, A.shape) if call.needs[0] else None,
        unbroadcast(gC, B.shape) if call.needs[1] else None,
    )


@forward("Sub", since=7)
def sub(A: Array, B: Array) -> Array:
    return np.subtract(A, B)


@vjp("Sub", since=7)
def sub_vjp(call: Call, gC: Array) -> Grads:
    A, B = call.inputs
    return (
        unbroadcast(gC, A.shape) if call.needs[0] else None,
        np.negative(unbroadcast(gC, B.shape)) if call.needs[1] else None,
    )


@forward("Mul", since=7)
def mul(A: Array, B: Array) -> Array:
    return np.multiply(A, B)


@vjp("Mul", since=7)
def mul_vjp(call: Call, gC: Array) -> Grads:
    A, B = call.inputs
    return (
        unbroadcast(np.multiply(gC, B), A.shape) if call.needs[0] else None,
        unbroadcast(np.multiply(gC, A), B.shape) if call.needs[1] else None,
    )


@forward("Div", since=7)
def div(A: Array, B: Array) -> Array:
    """True division for floats; for integers the quotient truncates toward zero (as in C, and as
    shape subgraphs expect), not numpy's floor division. ``A - fmod(A, B)`` is an exact multiple
    of ``B``, so the floor division that follows is exact and rounds nowhere."""
    if np.issubdtype(A.dtype, np.integer) and np.issubdtype(B.dtype, np.integer):
        return np.floor_divide(np.subtract(A, np.fmod(A, B)), B)
    return np.divide(A, B)


@vjp("Div", since=7)
def div_vjp(call: Call, gC: Array) -> Grads:
    A, B = call.inputs
    q = np.divide(gC, B)  # dC/dA = 1/B; dC/dB = -A/B^2 = -(1/B) * C
    gA = unbroadcast(q, A.shape) if call.needs[0] else None
    gB = None
    if call.needs[1]:
        t = np.multiply(q, call.outputs[0])
        np.negative(t, out=t)
        gB = unbroadcast(t, B.shape)
    return gA, gB


def _pow_exponent(X: Array, Y: Array) -> Array:
    """Pow-12+ allows an exponent of another numeric type; the result has the base's type, so a
    float base takes the exponent cast to its own type (numpy would upcast float32**int64)."""
    if Y.dtype != X.dtype and np.issubdtype(X.dtype, np.floating):
        return Y.astype(X.dtype)
    return Y


@forward("Pow", since=7)
def pow_(X: Array, Y: Array) -> Array:
    """``X ** Y`` in the base's type (an integer base with a float exponent: computed in float64
    and truncated back, as a C cast would)."""
    if np.issubdtype(X.dtype, np.integer) and not np.issubdtype(Y.dtype, np.integer):
        return np.power(X.astype(np.float64), Y).astype(X.dtype)
    return np.power(X, _pow_exponent(X, Y))


@vjp("Pow", since=7)
def pow_vjp(call: Call, gZ: Array) -> Grads:
    """d/dX = Y X^(Y-1); d/dY = X^Y log X, taken as zero where X <= 0 (there X^Y is real only
    for integer Y, where it is not differentiable in Y). An integer exponent gets no gradient."""
    X, Y = call.inputs
    Yx = _pow_exponent(X, Y)
    gX = gY = None
    if call.needs[0]:
        t = np.power(X, Yx - 1)
        t *= Yx
        t *= gZ
        gX = unbroadcast(t, X.shape)
    if call.needs[1] and all(np.issubdtype(v.dtype, np.floating) for v in (X, Y)):
        log_x = np.maximum(X, np.finfo(X.dtype).tiny)  # log X where X > 0, else 0
        np.log(log_x, out=log_x)
        log_x *= X > 0
        t = np.multiply(gZ, call.outputs[0])
        t *= log_x
        gY = unbroadcast(t, Y.shape)
    return gX, gY


# --- unary maths -------------------------------------------------------------------------------


@forward("Sqrt", since=6)
def sqrt(X: Array) -> Array:
    return np.sqrt(X)


@vjp("Sqrt", since=6)
def sqrt_vjp(call: Call, gY: Array) -> Grads:
    t = np.divide(gY, call.outputs[0])
    t *= 0.5
    return (t,)


@forward("Exp", since=6)
def exp(input: Array) -> Array:
    return np.exp(input)


@vjp("Exp", since=6)
def exp_vjp(call: Call, gY: Array) -> Grads:
    return (np.multiply(gY, call.outputs[0]),)


@forward("Log", since=6)
def log(input: Array) -> Array:
    return np.log(input)


@vjp("Log", since=6)
def log_vjp(call: Call, gY: Array) -> Grads:
    return (np.divide(gY, call.inputs[0]),)


@forward("Neg", since=6)
def neg(X: Array) -> Array:
    return np.negative(X)


@vjp("Neg", since=6)
def neg_vjp(call: Call, gY: Array) -> Grads:
    return (np.negative(gY),)


@forward("Abs", since=6)
def abs_(X: Array) -> Array:
    return np.abs(X)


@vjp("Abs", since=6)
def abs_vjp(call: Call, gY: Array) -> Grads:
    """``sign(X) * g``: zero at X == 0 (the subgradient of least norm)."""
    t = np.sign(call.inputs[0])
    t *= gY
    return (t,)


@forward("Reciprocal", since=6)
def reciprocal(X: Array) -> Array:
    return np.reciprocal(X)


@vjp("Reciprocal", since=6)
def reciprocal_vjp(call: Call, gY: Array) -> Grads:
    t = np.square(call.outputs[0])  # d(1/x)/dx = -1/x^2 = -Y^2
    t *= gY
    np.negative(t, out=t)
    return (t,)


@forward("Erf", since=9)
def erf(input: Array) -> Array:
    return special.erf(input).astype(input.dtype, copy=False)


@vjp("Erf", since=9)
def erf_vjp(call: Call, gY: Array) -> Grads:
    t = np.square(call.inputs[0])
    np.negative(t, out=t)
    np.exp(t, out=t)
    t *= _TWO_OVER_SQRT_PI
    t *= gY
    return (t,)


# --- variadic ----------------------------------------------------------------------------------


def _fold(ufunc: np.ufunc, data: tuple[Array, ...]) -> Array:
    """Apply a binary ufunc across all inputs with multidirectional broadcasting, in one buffer."""
    if len(data) == 1:
        return data[0]
    out = ufunc(data[0], data[1])
    shape = np.broadcast_shapes(*(x.shape for x in data))
    if out.shape != shape:
        out = np.broadcast_to(out, shape).copy()
    for x in data[2:]:
        ufunc(out, x, out=out)
    return out


def _each(call: Call, g: Array) -> Grads:
    """The cotangent summed back to every needed input's shape."""
    return tuple(
        unbroadcast(g, x.shape) if need else None for x, need in zip(call.inputs, call.needs)
    )


@forward("Sum", since=6)
def sum_(*data_0: Array) -> Array:
    return _fold(np.add, data_0)


@vjp("Sum", since=6)
def sum_vjp(call: Call, gY: Array) -> Grads:
    return _each(call, gY)


@forward("Mean", since=6)
def mean(*data_0: Array) -> Array:
    out = _fold(np.add, data_0)
    return out / len(data_0) if out is data_0[0] else np.divide(out, len(data_0), out=out)


@vjp("Mean", since=6)
def mean_vjp(call: Call, gY: Array) -> Grads:
    return _each(call, np.divide(gY, len(call.inputs)))


@forward("Min", since=6)
def min_(*data_0: Array) -> Array:
    return _fold(np.minimum, data_0)


@forward("Max", since=6)
def max_(*data_0: Array) -> Array:
    return _fold(np.maximum, data_0)


@vjp("Min", since=6)
def min_vjp(call: Call, gY: Array) -> Grads:
    return _extremum_vjp(call, gY)


@vjp("Max", since=6)
def max_vjp(call: Call, gY: Array) -> Grads:
    return _extremum_vjp(call, gY)


def _extremum_vjp(call: Call, g: Array) -> Grads:
    """Each output element's cotangent goes to the input(s) that attain the extremum there; on a
    tie it is split evenly between the tied inputs. An even split keeps the rule symmetric in
    the inputs (no order dependence) and is the mean of the one-sided derivatives, as in
    PyTorch's ``max(a, b)`` and TensorFlow's ``reduce_max``; all of it still flows back."""
    if len(call.inputs) == 1:
        return (g if call.needs[0] else None,)
    y = call.outputs[0]
    hits = [np.equal(x, y) for x in call.inputs]
    count = np.zeros(y.shape, dtype=g.dtype)
    for hit in hits:
        count += hit
    share = np.divide(g, count, out=count)
    return tuple(
        unbroadcast(np.multiply(share, hit), x.shape) if need else None
        for x, hit, need in zip(call.inputs, hits, call.needs)
    )


@forward("Where", since=9)
def where(condition: Array, X: Array, Y: Array) -> Array:
    return np.where(condition, X, Y)


@vjp("Where", since=9)
def where_vjp(call: Call, gZ: Array) -> Grads:
    """The cotangent goes to X where the condition holds and to Y elsewhere; none to condition.
    (Masks multiply rather than select, which is much faster; only a non-finite cotangent would
    tell the difference.)"""
    condition, X, Y = call.inputs
    return (
        None,
        unbroadcast(np.multiply(gZ, condition), X.shape) if call.needs[1] else None,
        unbroadcast(np.multiply(gZ, ~condition), Y.shape) if call.needs[2] else None,
    )


# --- comparison, logic, rounding (forward only: NON_DIFFERENTIABLE) -----------------------------


@forward("Equal", since=7)
def equal(A: Array, B: Array) -> Array:
    return np.equal(A, B)


@forward("Greater", since=7)
def greater(A: Array, B: Array) -> Array:
    return np.greater(A, B)


@forward("Less", since=7)
def less(A: Array, B: Array) -> Array:
    return np.less(A, B)


@forward("GreaterOrEqual", since=12)
def greater_or_equal(A: Array, B: Array) -> Array:
    return np.greater_equal(A, B)


@forward("LessOrEqual", since=12)
def less_or_equal(A: Array, B: Array) -> Array:
    return np.less_equal(A, B)


@forward("Not", since=1)
def not_(X: Array) -> Array:
    return np.logical_not(X)


@forward("And", since=7)
def and_(A: Array, B: Array) -> Array:
    return np.logical_and(A, B)


@forward("Or", since=7)
def or_(A: Array, B: Array) -> Array:
    return np.logical_or(A, B)


@forward("Xor", since=7)
def xor(A: Array, B: Array) -> Array:
    return np.logical_xor(A, B)


@forward("Sign", since=9)
def sign(input: Array) -> Array:
    return np.sign(input)


@forward("Floor", since=6)
def floor(X: Array) -> Array:
    return np.floor(X)


@forward("Ceil", since=6)
def ceil(X: Array) -> Array:
    return np.ceil(X)


@forward("Round", since=11)
def round_(X: Array) -> Array:
    """Round half to even, as the spec says (``np.rint``)."""
    return np.rint(X)


@forward("IsNaN", since=9)
def isnan(X: Array) -> Array:
    return np.isnan(X)


@forward("IsInf", since=10)
def isinf(X: Array, *, detect_negative: int = 1, detect_positive: int = 1) -> Array:
    if detect_negative and detect_positive:
        return np.isinf(X)
    if detect_positive:
        return np.isposinf(X)
    if detect_negative:
        return np.isneginf(X)
    return np.zeros(X.shape, dtype=bool)
