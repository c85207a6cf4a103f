"""Activation ops: forward and VJP side by side.

Pointwise activations (Relu and its relatives, the sigmoid family, Tanh, Softplus, Softsign,
Mish, Gelu), Clip, and the normalising Softmax/LogSoftmax. At a kink (Relu at 0, Clip at a
bound) the VJP takes the one-sided derivative stated in each docstring; the test samplers stay
away from kinks. Versions that only widened the type list share one registration; ``since`` is
the first version without the legacy ``consumed_inputs`` attribute.

Branches are selected arithmetically (``min``/``max``, multiplying by a boolean mask) rather than
with ``np.where``, ``copyto(where=)`` or masked ufuncs: on the random sign patterns of feature
maps those are about ten times slower than one more vectorised pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special

from onnxviz.errors import OnnxvizError

from ..registry import Call, Grads, forward, unbroadcast, vjp

Array = np.ndarray

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _sigmoid(X: Array) -> Array:
    """``1 / (1 + exp(-x))`` in one buffer. For x << 0, ``exp(-x)`` overflows to inf and the
    result is a correct 0; short of that it keeps full relative precision (no ``1 - ...``)."""
    out = np.negative(X)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


def _two_slopes(g: Array, upper: Array, high: float | Array, low: float | Array) -> Array:
    """``g * (high if upper else low)`` as ``g * (low + (high - low) * upper)``."""
    t = np.multiply(upper, np.subtract(high, low, dtype=g.dtype), dtype=g.dtype)
    t += low
    t *= g
    return t


# --- the Relu family ---------------------------------------------------------------------------


def relu_into(X: Array, out: Array | None = None) -> Array:
    """``max(X, 0)`` into ``out`` (``out=X`` runs in place, as the engine's fused steps do).

    Floats go through ``clip(X, 0, inf)``: numpy's ``maximum`` against a scalar has no SIMD loop
    (measured 3.4x slower than ``clip`` on a float32 256x56x56 map). Values are identical, NaN
    included; only a ``-0.0`` input stays ``-0.0`` instead of becoming ``+0.0`` (they compare
    equal, and the VJP's ``Y > 0`` cannot tell them apart).
    """
    if X.dtype.kind == "f":
        return np.clip(X, 0, np.inf, out=out)
    return np.maximum(X, 0, out=out)


@forward("Relu", since=6)
def relu(X: Array) -> Array:
    return relu_into(X)


@vjp("Relu", since=6)
def relu_vjp(call: Call, gY: Array) -> Grads:
    """``g * (Y > 0)``: zero at X == 0. Uses only the output, so the engine may free the input."""
    return (np.multiply(gY, call.outputs[0] > 0),)


@forward("LeakyRelu", since=6)
def leaky_relu(X: Array, *, alpha: float = 0.01) -> Array:
    """``max(x, alpha x)`` for alpha <= 1, ``min(x, alpha x)`` for alpha > 1."""
    out = np.multiply(X, alpha)
    return (np.maximum if alpha <= 1 else np.minimum)(out, X, out=out)


@vjp("LeakyRelu", since=6)
def leaky_relu_vjp(call: Call, gY: Array) -> Grads:
    """Slope 1 for X >= 0 (as the forward's branch), ``alpha`` below."""
    alpha = call.attrs.get("alpha", 0.01)
    return (_two_slopes(gY, call.inputs[0] >= 0, 1.0, alpha),)



@forward("PRelu", since=6)
def prelu(X: Array, slope: Array) -> Array:
    """``slope * x`` for x < 0, with ``slope`` broadcast unidirectionally to X (numpy rules from
    the right, so the opset-7-era ``[C, 1, 1]`` slope of an NCHW input is per channel; PRelu-6's
    same-shape or one-element slope is a special case)."""
    if np.broadcast_shapes(X.shape, slope.shape) != X.shape:
        raise OnnxvizError(
            f"PRelu: slope of shape {slope.shape} does not broadcast to the input {X.shape}",
            hint="PRelu broadcasts the slope unidirectionally: e.g. [C, 1, 1] for an NCHW input",
        )
    out = np.minimum(X, 0)
    out *= slope
    out += np.maximum(X, 0)
    return out


@vjp("PRelu", since=6)
def prelu_vjp(call: Call, gY: Array) -> Grads:
    X, slope = call.inputs
    gX = _two_slopes(gY, X >= 0, 1.0, slope) if call.needs[0] else None
    gS = None
    if call.needs[1]:
        t = np.minimum(X, 0)
        t *= gY
        gS = unbroadcast(t, slope.shape)
    return gX, gS


@forward("ThresholdedRelu", since=10)
def thresholded_relu(X: Array, *, alpha: float = 1.0) -> Array:
    return np.multiply(X, X > alpha)


@vjp("ThresholdedRelu", since=10)
def thresholded_relu_vjp(call: Call, gY: Array) -> Grads:
    return (np.multiply(gY, call.inputs[0] > call.attrs.get("alpha", 1.0)),)


def _exp_linear(X: Array, alpha: float, scale: float, inner: float) -> Array:
    """``scale * x`` for x > 0, ``scale * alpha * expm1(x / inner)`` otherwise (Elu, Selu, Celu)."""
    out = np.minimum(X, 0)
    if inner != 1.0:
        out *= 1.0 / inner
    np.expm1(out, out=out)
    out *= scale * alpha
    linear = np.maximum(X, 0)
    if scale != 1.0:
        linear *= scale
    out += linear
    return out


def _exp_linear_vjp(call: Call, gY: Array, alpha: float, scale: float, inner: float) -> Grads:
    """Below 0 the derivative is ``scale * alpha * exp(x / inner) / inner = (Y + scale*alpha) /
    inner``, read off the output; above 0 it is ``scale``."""
    t = np.add(call.outputs[0], scale * alpha)
    if inner != 1.0:
        t *= 1.0 / inner
    t -= scale  # (below - scale) * [x <= 0] + scale
    t *= call.inputs[0] <= 0
    t += scale
    t *= gY
    return (t,)


@forward("Elu", since=6)
def elu(X: Array, *, alpha: float = 1.0) -> Array:
    return _exp_linear(X, alpha, 1.0, 1.0)


@vjp("Elu", since=6)
def elu_vjp(call: Call, gY: Array) -> Grads:
    return _exp_linear_vjp(call, gY, call.attrs.get("alpha", 1.0), 1.0, 1.0)


_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875


@forward("Selu", since=6)
def selu(X: Array, *, alpha: float = _SELU_ALPHA, gamma: float = _SELU_GAMMA) -> Array:
    return _exp_linear(X, alpha, gamma, 1.0)


@vjp("Selu", since=6)
def selu_vjp(call: Call, gY: Array) -> Grads:
    a = call.attrs
    return _exp_linear_vjp(call, gY, a.get("alpha", _SELU_ALPHA), a.get("gamma", _SELU_GAMMA), 1.0)


@forward("Celu", since=12)
def celu(X: Array, *, alpha: float = 1.0) -> Array:
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`` (for alpha > 0, as the spec needs)."""
    return _exp_linear(X, alpha, 1.0, alpha)


@vjp("Celu", since=12)
def celu_vjp(call: Call, gY: Array) -> Grads:
    alpha = call.attrs.get("alpha", 1.0)
    return _exp_linear_vjp(call, gY, alpha, 1.0, alpha)


# --- smooth pointwise --------------------------------------------------------------------------


@forward("Sigmoid", since=6)
def sigmoid(X: Array) -> Array:
    return _sigmoid(X)


@vjp("Sigmoid", since=6)
def sigmoid_vjp(call: Call, gY: Array) -> Grads:
    Y = call.outputs[0]
    t = np.subtract(1, Y)
    t *= Y
    t *= gY
    return (t,)


@forward("HardSigmoid", since=6)
def hard_sigmoid(X: Array, *, alpha: float = 0.2, beta: float = 0.5) -> Array:
    out = np.multiply(X, alpha)
    out += beta
    np.clip(out, 0, 1, out=out)
    return out


@vjp("HardSigmoid", since=6)
def hard_sigmoid_vjp(call: Call, gY: Array) -> Grads:
    """``alpha`` where the output is strictly inside (0, 1), zero where it is clipped."""
    Y = call.outputs[0]
    inside = Y > 0
    inside &= Y < 1
    t = np.multiply(gY, inside)
    t *= call.attrs.get("alpha", 0.2)
    return (t,)


@forward("HardSwish", since=14)
def hard_swish(X: Array) -> Array:
    """``x * max(0, min(1, x / 6 + 1 / 2))``."""
    out = np.multiply(X, 1.0 / 6.0)
    out += 0.5
    np.clip(out, 0, 1, out=out)
    out *= X
    return out


@vjp("HardSwish", since=14)
def hard_swish_vjp(call: Call, gY: Array) -> Grads:
    """``x / 3 + 1 / 2`` on (-3, 3), 0 below, 1 above."""
    X = call.inputs[0]
    t = np.multiply(X, 1.0 / 3.0)
    t += 0.5
    inside = X > -3
    inside &= X < 3
    t *= inside
    t += X >= 3
    t *= gY
    return (t,)


@forward("Tanh", since=6)
def tanh(input: Array) -> Array:
    return np.tanh(input)


@vjp("Tanh", since=6)
def tanh_vjp(call: Call, gY: Array) -> Grads:
    t = np.square(call.outputs[0])
    np.subtract(1, t, out=t)
    t *= gY
    return (t,)


def _softplus(X: Array) -> Array:
    """``log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``: no overflow, full precision in both
    tails, and much faster than ``np.logaddexp`` (which has no vectorised loop)."""
    t = np.abs(X)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    t += np.maximum(X, 0)
    return t


def _sigmoid_from_softplus(sp: Array) -> Array:
    """``sigmoid(x) = 1 - exp(-softplus(x)) = -expm1(-sp)``, overwriting ``sp``."""
    np.negative(sp, out=sp)
    np.expm1(sp, out=sp)
    return np.negative(sp, out=sp)


@forward("Softplus", since=1)
def softplus(X: Array) -> Array:
    return _softplus(X)


@vjp("Softplus", since=1)
def softplus_vjp(call: Call, gY: Array) -> Grads:
    """``sigmoid(x) * g``, with the sigmoid read off the output."""
    t = _sigmoid_from_softplus(np.copy(call.outputs[0]))
    t *= gY
    return (t,)


@forward("Softsign", since=1)
def softsign(input: Array) -> Array:
    d = np.abs(input)
    d += 1
    return np.divide(input, d, out=d)


@vjp("Softsign", since=1)
def softsign_vjp(call: Call, gY: Array) -> Grads:
    d = np.abs(call.inputs[0])
    d += 1
    np.square(d, out=d)
    return (np.divide(gY, d, out=d),)


@forward("Mish", since=18)
def mish(X: Array) -> Array:
    t = _softplus(X)
    np.tanh(t, out=t)
    t *= X
    return t


@vjp("Mish", since=18)
def mish_vjp(call: Call, gY: Array) -> Grads:
    """``tanh(sp) + x * (1 - tanh(sp)^2) * sigmoid(x)`` with ``sp = softplus(x)``."""
    X = call.inputs[0]
    sp = _softplus(X)
    th = np.tanh(sp)
    t = np.square(th)
    np.subtract(1, t, out=t)
    t *= X
    t *= _sigmoid_from_softplus(sp)
    t += th
    t *= gY
    return (t,)


def _gelu_tanh_arg(X: Array) -> Array:
    """``sqrt(2/pi) * (x + 0.044715 x^3)``, the argument of tanh in Gelu's approximation."""
    t = np.square(X)
    t *= _GELU_CUBIC
    t += 1
    t *= X
    t *= _SQRT_2_OVER_PI
    return t


@forward("Gelu", since=20)
def gelu(X: Array, *, approximate: bytes | str = "none") -> Array:
    """Exact ``x * Phi(x)`` (approximate="none") or the tanh approximation
    ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`` (approximate="tanh")."""
    if _text(approximate) == "tanh":
        t = _gelu_tanh_arg(X)
        np.tanh(t, out=t)
    else:
        t = special.erf(np.multiply(X, _SQRT_HALF))
    t += 1
    t *= X
    t *= 0.5
    return t


@vjp("Gelu", since=20)
def gelu_vjp(call: Call, gY: Array) -> Grads:
    X = call.inputs[0]
    if _text(call.attrs.get("approximate", "none")) == "tanh":
        # d/dx = (1 + th)/2 + x/2 * (1 - th^2) * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)
        th = np.tanh(_gelu_tanh_arg(X))
        t = np.square(X)
        t *= 3 * _GELU_CUBIC
        t += 1
        t *= X
        t *= 0.5 * _SQRT_2_OVER_PI
        t *= 1 - np.square(th)
        th += 1
        th *= 0.5
    else:
        # d/dx = Phi(x) + x * phi(x), with Phi(x) = Y / x read off the output (Phi(0) = 1/2):
        # no second (slow, scalar) erf pass.
        t = np.square(X)
        t *= -0.5
        np.exp(t, out=t)
        t *= _INV_SQRT_2PI
        t *= X
        zero = X == 0
        th = np.add(X, zero)
        np.divide(call.outputs[0], th, out=th)
        if zero.any():
            th[zero] = 0.5
    t += th
    t *= gY
    return (t,)


# --- Clip --------------------------------------------------------------------------------------


_FLT_MAX = 3.4028234663852886e38  # numeric_limits<float>::max(), Clip-6's default bounds


def _clip_masks(
    X: Array, lo: Array | float | None, hi: Array | float | None
) -> tuple[Array | None, Array | None]:
    """Where ``Min(hi, Max(X, lo))`` took ``lo`` (``X < lo <= hi``) and where it took ``hi``
    (``Max(X, lo) > hi``: everywhere when lo > hi); elsewhere it copied X, bounds included."""
    above = None if hi is None else (X > hi if lo is None else np.maximum(X, lo) > hi)
    below = None if lo is None else X < lo
    if below is not None and above is not None:
        below &= ~above
    return below, above


def _clip_input_grad(gY: Array, below: Array | None, above: Array | None) -> Array:
    if below is None and above is None:
        return gY
    kept = ~below if above is None else (~above if below is None else ~(below | above))
    return np.multiply(gY, kept)


def clip_into(
    X: Array, lo: Array | float | None, hi: Array | float | None, out: Array | None = None
) -> Array:
    """``Min(hi, Max(X, lo))`` into ``out`` (``out=X`` runs in place); a missing bound is no bound.

    Floats go through one ``np.clip`` (the same values as ``maximum`` then ``minimum``, NaN and
    ``lo > hi`` included, in one SIMD pass instead of two scalar-broadcast ones, which numpy runs
    3-7x slower); a ``-0.0`` input clipped at a bound of 0 stays ``-0.0``.
    """
    if lo is None and hi is None:
        if out is None or out is X:
            return X
        np.copyto(out, X)
        return out
    if X.dtype.kind == "f":
        return np.clip(X, -np.inf if lo is None else lo, np.inf if hi is None else hi, out=out)
    y = np.maximum(X, lo, out=out) if lo is not None else np.minimum(X, hi, out=out)
    if lo is not None and hi is not None:
        np.minimum(y, hi, out=y)
    return y


def clip_bounds(
    opset: int, inputs: Sequence[Array | None], attrs: Mapping[str, Any]
) -> tuple[Any, Any]:
    """The ``(min, max)`` a Clip node's registered forward uses (attributes before opset 11,
    optional inputs from then on; ``None`` is no bound)."""
    if opset < 11:
        return attrs.get("min", -_FLT_MAX), attrs.get("max", _FLT_MAX)
    return (*inputs, None, None)[:2]


@forward("Clip", since=6)
def clip_6(input: Array, *, min: float = -_FLT_MAX, max: float = _FLT_MAX) -> Array:
    """Clip-6: the bounds are attributes."""
    return clip_into(input, min, max)


@vjp("Clip", since=6)
def clip_6_vjp(call: Call, gY: Array) -> Grads:
    """Gradient to the input where ``min <= x <= max`` (bounds included), zero where clipped."""
    lo, hi = call.attrs.get("min", -_FLT_MAX), call.attrs.get("max", _FLT_MAX)
    return (_clip_input_grad(gY, *_clip_masks(call.inputs[0], lo, hi)),)


@forward("Clip", since=11)
def clip(input: Array, min: Array | None = None, max: Array | None = None) -> Array:
    """``Min(max, Max(input, min))``; a missing bound is no bound. With min > max every element
    becomes max, as the spec says."""
    return clip_into(input, min, max)


@vjp("Clip", since=11)
def clip_vjp(call: Call, gY: Array) -> Grads:
    """Each output element's cotangent goes to whichever of input, min, max it was copied from
    (see :func:`_clip_masks`); ``min`` and ``max`` are scalars, so theirs are sums."""
    X, lo, hi = (*call.inputs, None, None)[:3]
    below, above = _clip_masks(X, lo, hi)
    needs = (*call.needs, False, False)
    gX = _clip_input_grad(gY, below, above) if needs[0] else None
    gLo = gHi = None
    if needs[1] and below is not None:
        gLo = np.multiply(gY, below).sum(dtype=gY.dtype).reshape(lo.shape)
    if needs[2] and above is not None:
        gHi = np.multiply(gY, above).sum(dtype=gY.dtype).reshape(hi.shape)
    return (gX, gLo, gHi)[: len(call.inputs)]
