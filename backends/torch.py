"""Optional PyTorch backend: a second opinion on the numpy engine's values and gradients.

Design
------
The graph is interpreted here, op by op, with ``torch`` / ``torch.nn.functional``, and the
backward is torch autograd. onnx2torch and onnx2pytorch are deliberately *not* used: they fail on
graphs whose weights are ``Constant`` nodes or constant subgraphs (paddle2onnx, the onnx light
models, unoptimised tf2onnx exports), and they import torchvision, which does not import beside
the CPU torch wheel this project installs. Interpreting the graph ourselves also keeps the second
opinion independent: every rule below was written from the ONNX spec (attributes, defaults, and
the semantics at the model's opset, e.g. Softmax before opset 13 coerces its input to 2-D at
``axis``), not translated from the numpy engine.

How a run goes: inputs to a node come from :attr:`Graph.constants` (initializers and folded
constant subgraphs, as numpy arrays) or from earlier nodes; ``graph.nodes`` is walked in order
(ONNX order is topological), only the ancestors of the requested tensors, skipping nodes whose
outputs are all constant. With ``dtype=float64`` every floating tensor runs in float64 (a
``Cast`` to float16/float32, a float ``ConstantOfShape`` or a float32 constant is brought to it);
with float32 the float inputs are float32 and every other tensor keeps the model's own type, as in
onnxruntime. Integer and boolean tensors keep their ONNX type as torch tensors, and shape-like
inputs are read into python ints where torch wants ints.

Where an op's gradient depends on a convention (ties, kinks), torch's convention applies:

- ``Relu`` at 0 has gradient 0; ``LeakyRelu``/``PRelu`` at 0 take the negative slope.
- ``MaxPool`` routes the gradient of each window to one maximum (torch picks one); the numpy
  engine may split ties differently, so compare them away from ties.
- ``Max``/``Min`` split the gradient evenly between tied inputs; ``ReduceMax``/``GlobalMaxPool``
  (``amax``) split it evenly between tied elements.
- ``Clip`` passes the gradient where ``min <= x <= max`` (boundaries included).

``torch`` is imported when a :class:`TorchBackend` is made, not when this module is imported, so
``onnxviz`` works without it; no global torch state (default dtype, threads, grad mode outside a
call) is changed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ExecutionError, InputError, OnnxvizError, TargetError
from .numpy.engine import GradResult, Seed

__all__ = ["TorchBackend", "SUPPORTED_OPS", "supports"]

# Filled by _import_torch() when the first TorchBackend is made; the rules below use them.
torch: Any = None
F: Any = None

Tensor = Any  # torch.Tensor, which cannot be named before torch is imported

_INSTALL_HINT = "pip install 'onnxviz[torch]'"


def _import_torch() -> None:
    global torch, F
    if torch is not None:
        return
    try:
        import torch as _torch
        import torch.nn.functional as _functional
    except ModuleNotFoundError as e:
        raise BackendUnavailableError("PyTorch is not installed", hint=_INSTALL_HINT) from e
    torch, F = _torch, _functional


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class _Rule:
    fn: Callable[..., Any]
    since: int
    #: Split before opset 18 splits into as many parts as the node has outputs: the only rule
    #: that needs to know the node, and it gets ``num_outputs`` for that.
    wants_num_outputs: bool = False


_RULES: dict[str, list[_Rule]] = {}


def _rule(op_type: str, *, since: int = 1, wants_num_outputs: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the torch forward of ``op_type`` for opsets ``>= since``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        versions = _RULES.setdefault(op_type, [])
        if any(r.since == since for r in versions):
            raise ValueError(f"torch rule for {op_type!r} registered twice for since={since}")
        versions.append(_Rule(fn, since, wants_num_outputs))
        versions.sort(key=lambda r: r.since)
        return fn

    return register


def _lookup(op_type: str, opset: int) -> _Rule | None:
    best = None
    for r in _RULES.get(op_type, ()):
        if r.since <= opset:
            best = r
    return best


def supports(op_type: str, opset: int) -> bool:
    """Whether this backend has a rule for ``op_type`` at ``opset``."""
    return _lookup(op_type, opset) is not None


# ------------------------------------------------------------------------------------ helpers
def _ints(value: Any) -> list[int]:
    """A shape-like tensor, array or list as python ints."""
    if value is None:
        return []
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _given(value: Any) -> bool:
    """Optional inputs may be absent or empty (Resize-11 passes an empty ``scales`` with ``sizes``)."""
    return value is not None and int(np.prod(tuple(value.shape))) > 0


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _spatial_pads(
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    auto_pad: str,
    pads: Sequence[int] | None,
) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis for Conv and the pools, ``auto_pad`` resolved."""
    n = len(kernel)
    mode = _text(auto_pad)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out: list[tuple[int, int]] = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            target = -(-size // s)
            total = max(0, (target - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            out.append((small, total - small) if mode == "SAME_UPPER" else (total - small, small))
        return out
    if mode == "VALID":
        return [(0, 0)] * n
    if mode not in ("NOTSET", ""):
        raise OnnxvizError(f"unknown auto_pad {mode!r}", hint="use NOTSET, SAME_UPPER, SAME_LOWER or VALID")
    p = list(pads) if pads else [0] * (2 * n)
    return [(int(p[i]), int(p[i + n])) for i in range(n)]


def _torch_pad_arg(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """(begin, end) pairs for the trailing axes, in F.pad's last-axis-first order."""
    flat: list[int] = []
    for begin, end in reversed(pairs):
        flat += [begin, end]
    return flat


def _fn_nd(kind: str, n: int) -> Callable[..., Any]:
    table = {
        "conv": (F.conv1d, F.conv2d, F.conv3d),
        "conv_transpose": (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d),
        "max_pool": (F.max_pool1d, F.max_pool2d, F.max_pool3d),
    }
    if not 1 <= n <= 3:
        raise OnnxvizError(f"{kind} over {n} spatial axes is not supported", hint="1-D to 3-D only")
    return table[kind][n - 1]


def _channel_view(t: Tensor, rank: int) -> Tensor:
    """A per-channel [C] parameter shaped to broadcast against [N, C, ...] of ``rank``."""
    if t.ndim == 1:
        return t.reshape((1, -1) + (1,) * (rank - 2))
    return t.unsqueeze(0)  # BatchNormalization-7 with spatial=0: [C, D1, ...] parameters


# ------------------------------------------------------------------------------------ conv
@_rule("Conv")
def conv(
    X: Tensor,
    W: Tensor,
    B: Tensor | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations: Sequence[int] | None = None,
    group: int = 1,
    kernel_shape: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
) -> Tensor:
    """Conv-1/11: asymmetric pads go through F.pad (torch's ``padding`` is symmetric)."""
    n = W.ndim - 2
    kernel = list(W.shape[2:])
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    pairs = _spatial_pads(list(X.shape[2:]), kernel, strides, dilations, auto_pad, pads)
    if all(b == e for b, e in pairs):
        padding = [b for b, _ in pairs]
    else:
        X = F.pad(X, _torch_pad_arg(pairs))
        padding = [0] * n
    return _fn_nd("conv", n)(X, W, B, stride=strides, padding=padding, dilation=dilations, groups=group)


@_rule("ConvTranspose")
def conv_transpose(
    X: Tensor,
    W: Tensor,
    B: Tensor | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations: Sequence[int] | None = None,
    group: int = 1,
    kernel_shape: Sequence[int] | None = None,
    output_padding: Sequence[int] | None = None,
    output_shape: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
) -> Tensor:
    """ConvTranspose-1/11: the unpadded transposed conv, then cropped (or zero-extended) to the
    ONNX output window ``[pad_begin, pad_begin + out)``; the bias is added last, so positions no
    window reaches hold the bias, as onnxruntime gives.

    With ``output_shape`` or SAME_* the total padding ``s*(in-1) + output_padding + (k-1)*d + 1 -
    out`` is split as the spec says (SAME_UPPER puts ``total // 2`` first, everything else
    ``total - total // 2``); a negative total is clamped to 0, as onnxruntime does.
    """
    n = W.ndim - 2
    kernel = list(W.shape[2:])
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    adj = list(output_padding or [0] * n)
    size = list(X.shape[2:])
    full = [s * (i - 1) + (k - 1) * d + 1 for s, i, k, d in zip(strides, size, kernel, dilations)]
    mode = _text(auto_pad)
    if output_shape or mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [int(v) for v in output_shape[-n:]] if output_shape else [i * s for i, s in zip(size, strides)]
        begins = []
        for f, a, o in zip(full, adj, out):
            total = max(0, f + a - o)
            begins.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
    else:
        pairs = _spatial_pads(size, kernel, strides, dilations, "VALID" if mode == "VALID" else "NOTSET", pads)
        begins = [b for b, _ in pairs]
        out = [f + a - b - e for f, a, (b, e) in zip(full, adj, pairs)]
    Y = _fn_nd("conv_transpose", n)(X, W, None, stride=strides, groups=group, dilation=dilations)
    Y = F.pad(Y, _torch_pad_arg([(-b, b + o - f) for b, o, f in zip(begins, out, full)]))
    if B is not None:
        Y = Y + _channel_view(B, Y.ndim)
    return Y


# ------------------------------------------------------------------------------------ matmul
@_rule("Gemm")
def gemm(
    A: Tensor,
    B: Tensor,
    C: Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,
    transB: int = 0,
) -> Tensor:
    a = A.transpose(0, 1) if transA else A
    b = B.transpose(0, 1) if transB else B
    Y = a @ b
    if alpha != 1.0:
        Y = Y * alpha
    if C is not None:
        Y = Y + (C * beta if beta != 1.0 else C)
    return Y


@_rule("MatMul")
def matmul(A: Tensor, B: Tensor) -> Tensor:
    return torch.matmul(A, B)


@_rule("Einsum", since=12)
def einsum(*Inputs: Tensor, equation: str) -> Tensor:
    return torch.einsum(_text(equation).replace(" ", ""), *Inputs)


# ------------------------------------------------------------------------------------ elementwise
@_rule("Add")
def add(A: Tensor, B: Tensor) -> Tensor:
    return A + B


@_rule("Sub")
def sub(A: Tensor, B: Tensor) -> Tensor:
    return A - B


@_rule("Mul")
def mul(A: Tensor, B: Tensor) -> Tensor:
    return A * B


@_rule("Div")
def div(A: Tensor, B: Tensor) -> Tensor:
    """Integer Div truncates (C semantics, as onnxruntime computes shape arithmetic)."""
    if A.is_floating_point() or B.is_floating_point():
        return A / B
    return torch.div(A, B, rounding_mode="trunc")


@_rule("Pow")
def pow_(X: Tensor, Y: Tensor) -> Tensor:
    """The output has X's type (Pow-12 allows an integer or float exponent of another type)."""
    return torch.pow(X, Y).to(X.dtype)


@_rule("Sqrt")
def sqrt(X: Tensor) -> Tensor:
    return torch.sqrt(X)


@_rule("Exp")
def exp(input: Tensor) -> Tensor:
    return torch.exp(input)


@_rule("Log")
def log(input: Tensor) -> Tensor:
    return torch.log(input)


@_rule("Neg")
def neg(X: Tensor) -> Tensor:
    return -X


@_rule("Abs")
def abs_(X: Tensor) -> Tensor:
    return torch.abs(X)


@_rule("Reciprocal")
def reciprocal(X: Tensor) -> Tensor:
    return torch.reciprocal(X)


@_rule("Floor")
def floor(X: Tensor) -> Tensor:
    return torch.floor(X)


@_rule("Ceil")
def ceil(X: Tensor) -> Tensor:
    return torch.ceil(X)


@_rule("Round", since=11)
def round_(X: Tensor) -> Tensor:
    return torch.round(X)  # half to even, as the spec says


@_rule("Sign", since=9)
def sign(input: Tensor) -> Tensor:
    return torch.sign(input)


@_rule("Erf", since=9)
def erf(input: Tensor) -> Tensor:
    return torch.erf(input)


@_rule("Min")
def min_(*data_0: Tensor) -> Tensor:
    return functools.reduce(torch.minimum, data_0)


@_rule("Max")
def max_(*data_0: Tensor) -> Tensor:
    return functools.reduce(torch.maximum, data_0)


@_rule("Sum")
def sum_(*data_0: Tensor) -> Tensor:
    return functools.reduce(torch.add, data_0)


@_rule("Mean")
def mean(*data_0: Tensor) -> Tensor:
    return functools.reduce(torch.add, data_0) / len(data_0)


@_rule("Clip")
def clip_6(input: Tensor, *, min: float = -math.inf, max: float = math.inf) -> Tensor:  # noqa: A002
    """Clip-6: bounds as attributes."""
    return torch.clamp(input, min=min, max=max)


@_rule("Clip", since=11)
def clip_11(input: Tensor, min: Tensor | None = None, max: Tensor | None = None) -> Tensor:  # noqa: A002
    """Clip-11/12/13: optional bounds as scalar inputs (absent or empty means unbounded)."""
    lo = min.reshape(()).to(input.dtype) if _given(min) else None
    hi = max.reshape(()).to(input.dtype) if _given(max) else None
    if lo is None and hi is None:
        return input
    return torch.clamp(input, min=lo, max=hi)


# ------------------------------------------------------------------------------------ comparison, logic
@_rule("Equal")
def equal(A: Tensor, B: Tensor) -> Tensor:
    return torch.eq(A, B)


@_rule("Greater")
def greater(A: Tensor, B: Tensor) -> Tensor:
    return torch.gt(A, B)


@_rule("GreaterOrEqual", since=12)
def greater_or_equal(A: Tensor, B: Tensor) -> Tensor:
    return torch.ge(A, B)


@_rule("Less")
def less(A: Tensor, B: Tensor) -> Tensor:
    return torch.lt(A, B)


@_rule("LessOrEqual", since=12)
def less_or_equal(A: Tensor, B: Tensor) -> Tensor:
    return torch.le(A, B)


@_rule("Not")
def not_(X: Tensor) -> Tensor:
    return torch.logical_not(X)


@_rule("And")
def and_(A: Tensor, B: Tensor) -> Tensor:
    return torch.logical_and(A, B)


@_rule("Or")
def or_(A: Tensor, B: Tensor) -> Tensor:
    return torch.logical_or(A, B)


@_rule("Xor")
def xor(A: Tensor, B: Tensor) -> Tensor:
    return torch.logical_xor(A, B)


@_rule("Where", since=9)
def where(condition: Tensor, X: Tensor, Y: Tensor) -> Tensor:
    return torch.where(condition.to(torch.bool), X, Y)


# ------------------------------------------------------------------------------------ activations
@_rule("Relu")
def relu(X: Tensor) -> Tensor:
    return torch.relu(X)


@_rule("LeakyRelu")
def leaky_relu(X: Tensor, *, alpha: float = 0.01) -> Tensor:
    return F.leaky_relu(X, negative_slope=alpha)


@_rule("PRelu")
def prelu(X: Tensor, slope: Tensor) -> Tensor:
    """``slope`` broadcasts to X (numpy-style, unlike F.prelu's per-channel weight)."""
    return torch.where(X > 0, X, X * slope)


@_rule("Elu")
def elu(X: Tensor, *, alpha: float = 1.0) -> Tensor:
    return F.elu(X, alpha=alpha)


@_rule("Celu", since=12)
def celu(X: Tensor, *, alpha: float = 1.0) -> Tensor:
    return F.celu(X, alpha=alpha)


@_rule("Selu")
def selu(X: Tensor, *, alpha: float = 1.67326319217681884765625, gamma: float = 1.05070102214813232421875) -> Tensor:
    return gamma * F.elu(X, alpha=alpha)


@_rule("ThresholdedRelu", since=10)
def thresholded_relu(X: Tensor, *, alpha: float = 1.0) -> Tensor:
    return torch.where(X > alpha, X, torch.zeros_like(X))


@_rule("Sigmoid")
def sigmoid(X: Tensor) -> Tensor:
    return torch.sigmoid(X)


@_rule("HardSigmoid")
def hard_sigmoid(X: Tensor, *, alpha: float = 0.2, beta: float = 0.5) -> Tensor:
    return torch.clamp(X * alpha + beta, 0.0, 1.0)


@_rule("HardSwish", since=14)
def hard_swish(X: Tensor) -> Tensor:
    """``x * max(0, min(1, x/6 + 1/2))``, written as the spec writes it."""
    return X * torch.clamp(X * (1.0 / 6.0) + 0.5, 0.0, 1.0)


@_rule("Tanh")
def tanh(input: Tensor) -> Tensor:
    return torch.tanh(input)


@_rule("Softplus")
def softplus(X: Tensor) -> Tensor:
    """``log(1 + exp(x))`` without F.softplus's linear cut-off at 20 (exact for every x)."""
    return torch.logaddexp(X, torch.zeros_like(X))


@_rule("Softsign")
def softsign(input: Tensor) -> Tensor:
    return input / (1 + torch.abs(input))


@_rule("Mish", since=18)
def mish(X: Tensor) -> Tensor:
    return X * torch.tanh(torch.logaddexp(X, torch.zeros_like(X)))


@_rule("Gelu", since=20)
def gelu(X: Tensor, *, approximate: str = "none") -> Tensor:
    return F.gelu(X, approximate=_text(approximate))


def _coerced_2d(x: Tensor, axis: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Softmax-1/11 semantics: flatten to [prod(shape[:axis]), prod(shape[axis:])], apply on dim 1."""
    axis = _axis(axis, x.ndim)
    rows = int(np.prod(tuple(x.shape[:axis]), dtype=np.int64))
    return fn(x.reshape(rows, -1) if x.numel() else x.reshape(rows, 0)).reshape(x.shape)


@_rule("Softmax")
def softmax_1(input: Tensor, *, axis: int = 1) -> Tensor:
    """Softmax-1/11: the input is coerced to 2-D at ``axis`` (a 4-D map sums to one over C*H*W)."""
    return _coerced_2d(input, axis, lambda t: torch.softmax(t, dim=1))


@_rule("Softmax", since=13)
def softmax_13(input: Tensor, *, axis: int = -1) -> Tensor:
    return torch.softmax(input, dim=axis)


@_rule("LogSoftmax")
def log_softmax_1(input: Tensor, *, axis: int = 1) -> Tensor:
    return _coerced_2d(input, axis, lambda t: torch.log_softmax(t, dim=1))


@_rule("LogSoftmax", since=13)
def log_softmax_13(input: Tensor, *, axis: int = -1) -> Tensor:
    return torch.log_softmax(input, dim=axis)


# ------------------------------------------------------------------------------------ pooling
def _pool_pads(
    X: Tensor,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    auto_pad: str,
    pads: Sequence[int] | None,
    ceil_mode: int,
) -> list[tuple[int, int, int]]:
    """(begin, end, extra) per spatial axis: the declared padding and, with ``ceil_mode``, the
    overhang the last window needs beyond it. A last window that would start in the end padding
    is dropped (the rule torch uses and ONNX adopted)."""
    sizes = list(X.shape[2:])
    pairs = _spatial_pads(sizes, kernel, strides, dilations, auto_pad, pads)
    out = []
    for size, k, s, d, (b, e) in zip(sizes, kernel, strides, dilations, pairs):
        reach = (k - 1) * d + 1
        span = size + b + e - reach
        if ceil_mode and _text(auto_pad) in ("NOTSET", "", "VALID"):
            count = -(-span // s) + 1
            if (count - 1) * s >= size + b:
                count -= 1
        else:
            count = span // s + 1
        out.append((b, e, max(0, (count - 1) * s + reach - (size + b + e))))
    return out


@_rule("MaxPool")
def max_pool(
    X: Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations: Sequence[int] | None = None,
    kernel_shape: Sequence[int],
    pads: Sequence[int] | None = None,
    storage_order: int = 0,
    strides: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """MaxPool-1..12 with its Indices output: padding is explicit with -inf, so pads may be
    asymmetric or larger than torch allows; torch routes each window's gradient to one maximum.
    Integer inputs (MaxPool-12 int8/uint8) are pooled in float64, which is exact for them."""
    n = len(kernel_shape)
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    geo = _pool_pads(X, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    work = X if X.is_floating_point() else X.to(torch.float64)
    if any(b or e or x for b, e, x in geo):
        work = F.pad(work, _torch_pad_arg([(b, e + x) for b, e, x in geo]), value=-math.inf)
    Y, where = _fn_nd("max_pool", n)(work, list(kernel_shape), stride=strides, dilation=dilations, return_indices=True)
    return Y.to(X.dtype), _onnx_indices(where, X.shape, work.shape[2:], [b for b, _, _ in geo], storage_order)


def _onnx_indices(where: Tensor, shape: Sequence[int], padded: Sequence[int], begins: Sequence[int], storage_order: int) -> Tensor:
    """torch's per-(N, C) indices into the padded map -> ONNX's flat indices into the unpadded
    input [N, C, ...] (row-major, or column-major over the spatial axes with storage_order=1)."""
    N, C, *sizes = shape
    coords = []
    rest = where
    for extent in reversed(padded):
        coords.append(rest % extent)
        rest = torch.div(rest, extent, rounding_mode="floor")
    coords = [c - b for c, b in zip(reversed(coords), begins)]
    flat = torch.zeros_like(where)
    if storage_order:
        for k in reversed(range(len(sizes))):
            flat = flat * sizes[k] + coords[k]
    else:
        for c, extent in zip(coords, sizes):
            flat = flat * extent + c
    plane = int(np.prod(sizes, dtype=np.int64))
    base = torch.arange(N * C, dtype=torch.int64).reshape((N, C) + (1,) * len(sizes)) * plane
    return flat + base


def _window_sum(x: Tensor, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> Tensor:
    """Sum over every window of an [M, 1, ...] tensor: a conv with a ones kernel (handles dilation)."""
    ones = torch.ones((1, 1, *kernel), dtype=x.dtype)
    return _fn_nd("conv", len(kernel))(x, ones, stride=list(strides), dilation=list(dilations))


@_rule("AveragePool")
def average_pool(
    X: Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    dilations: Sequence[int] | None = None,
    kernel_shape: Sequence[int],
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
) -> Tensor:
    """AveragePool-7..19: window sums over the zero-padded input divided by the number of cells
    that count: real cells, plus the declared pads with ``count_include_pad``; never the ceil-mode
    overhang beyond the pads (onnxruntime clips windows at the padded edge)."""
    n = len(kernel_shape)
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    geo = _pool_pads(X, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    N, C, *sizes = X.shape
    flat = X.reshape(N * C, 1, *sizes)
    padded = F.pad(flat, _torch_pad_arg([(b, e + x) for b, e, x in geo]))
    total = _window_sum(padded, kernel_shape, strides, dilations)
    mask = torch.ones((1, 1, *sizes), dtype=X.dtype)
    if count_include_pad:
        mask = F.pad(F.pad(mask, _torch_pad_arg([(b, e) for b, e, _ in geo]), value=1.0),
                     _torch_pad_arg([(0, x) for _, _, x in geo]))
    else:
        mask = F.pad(mask, _torch_pad_arg([(b, e + x) for b, e, x in geo]))
    count = _window_sum(mask, kernel_shape, strides, dilations)
    Y = total / count
    return Y.reshape(N, C, *Y.shape[2:])


@_rule("GlobalAveragePool")
def global_average_pool(X: Tensor) -> Tensor:
    return X.mean(dim=tuple(range(2, X.ndim)), keepdim=True)


@_rule("GlobalMaxPool")
def global_max_pool(X: Tensor) -> Tensor:
    return torch.amax(X, dim=tuple(range(2, X.ndim)), keepdim=True)


# ------------------------------------------------------------------------------------ normalization
@_rule("BatchNormalization")
def batch_normalization(
    X: Tensor,
    scale: Tensor,
    B: Tensor,
    input_mean: Tensor,
    input_var: Tensor,
    *,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    spatial: int = 1,
    training_mode: int = 0,
) -> Tensor:
    """Inference BatchNormalization (7/9/14/15) with the running statistics. ``training_mode=1``
    (14+) normalizes with the batch statistics instead; the running-statistics outputs are not
    produced."""
    r = X.ndim
    if training_mode:
        dims = [0, *range(2, r)]
        m = X.mean(dim=dims, keepdim=True)
        v = ((X - m) ** 2).mean(dim=dims, keepdim=True)
    else:
        m, v = _channel_view(input_mean, r), _channel_view(input_var, r)
    return (X - m) / torch.sqrt(v + epsilon) * _channel_view(scale, r) + _channel_view(B, r)


@_rule("InstanceNormalization")
def instance_normalization(input: Tensor, scale: Tensor, B: Tensor, *, epsilon: float = 1e-5) -> Tensor:
    dims = tuple(range(2, input.ndim))
    m = input.mean(dim=dims, keepdim=True)
    v = ((input - m) ** 2).mean(dim=dims, keepdim=True)
    r = input.ndim
    return (input - m) / torch.sqrt(v + epsilon) * _channel_view(scale, r) + _channel_view(B, r)


@_rule("LayerNormalization", since=17)
def layer_normalization(
    X: Tensor,
    Scale: Tensor,
    B: Tensor | None = None,
    *,
    axis: int = -1,
    epsilon: float = 1e-5,
    stash_type: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Normalize over ``axis..`` (Scale and B broadcast to those axes); outputs Y, Mean, InvStdDev.
    ``stash_type`` is moot: the statistics are computed in the run's dtype."""
    dims = tuple(range(_axis(axis, X.ndim), X.ndim))
    m = X.mean(dim=dims, keepdim=True)
    inv = torch.rsqrt(((X - m) ** 2).mean(dim=dims, keepdim=True) + epsilon)
    Y = (X - m) * inv * Scale
    if B is not None:
        Y = Y + B
    return Y, m, inv


@_rule("LRN")
def lrn(X: Tensor, *, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, size: int) -> Tensor:
    """Across channels: the window around c is [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    front = (size - 1) // 2
    sq = (X * X).movedim(1, -1)
    window = F.pad(sq, [front, size - 1 - front]).unfold(-1, size, 1).sum(-1).movedim(-1, 1)
    return X / (bias + (alpha / size) * window) ** beta


# ------------------------------------------------------------------------------------ reductions
def _reduce(
    fn: Callable[..., Tensor], data: Tensor, axes: Any, keepdims: int, noop_with_empty_axes: int = 0
) -> Tensor:
    axes = _ints(axes) if axes is not None else []
    if not axes:
        if noop_with_empty_axes:
            return data
        axes = list(range(data.ndim))
    if not axes:  # a 0-d tensor
        return data
    return fn(data, dim=[_axis(a, data.ndim) for a in axes], keepdim=bool(keepdims))


@_rule("ReduceSum")
def reduce_sum_1(data: Tensor, *, axes: Sequence[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(torch.sum, data, axes, keepdims)


@_rule("ReduceSum", since=13)
def reduce_sum_13(data: Tensor, axes: Tensor | None = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(torch.sum, data, axes, keepdims, noop_with_empty_axes)


@_rule("ReduceMean")
def reduce_mean_1(data: Tensor, *, axes: Sequence[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(torch.mean, data, axes, keepdims)


@_rule("ReduceMean", since=18)
def reduce_mean_18(data: Tensor, axes: Tensor | None = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(torch.mean, data, axes, keepdims, noop_with_empty_axes)


@_rule("ReduceMax")
def reduce_max_1(data: Tensor, *, axes: Sequence[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(torch.amax, data, axes, keepdims)


@_rule("ReduceMax", since=18)
def reduce_max_18(data: Tensor, axes: Tensor | None = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(torch.amax, data, axes, keepdims, noop_with_empty_axes)


@_rule("ReduceMin")
def reduce_min_1(data: Tensor, *, axes: Sequence[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(torch.amin, data, axes, keepdims)


@_rule("ReduceMin", since=18)
def reduce_min_18(data: Tensor, axes: Tensor | None = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(torch.amin, data, axes, keepdims, noop_with_empty_axes)


# ------------------------------------------------------------------------------------ shape and layout
@_rule("Identity")
def identity(input: Tensor) -> Tensor:
    return input


@_rule("Dropout")
def dropout_7(data: Tensor, *, ratio: float = 0.5) -> tuple[Tensor, Tensor]:
    """Inference Dropout: the identity. The spec leaves the test-mode mask open before opset 12;
    the masks follow onnxruntime: zeros of the input's type (7-9), all false (10-11), all true (12+)."""
    return data, torch.zeros(data.shape, dtype=data.dtype)


@_rule("Dropout", since=10)
def dropout_10(data: Tensor, *, ratio: float = 0.5) -> tuple[Tensor, Tensor]:
    return data, torch.zeros(data.shape, dtype=torch.bool)


@_rule("Dropout", since=12)
def dropout_12(
    data: Tensor, ratio: Tensor | None = None, training_mode: Tensor | None = None, *, seed: int | None = None
) -> tuple[Tensor, Tensor]:
    if training_mode is not None and bool(training_mode.reshape(())):
        raise BackendUnavailableError(
            "Dropout with training_mode=true is random; the torch backend runs inference only",
            hint="export the model in eval mode",
        )
    return data, torch.ones(data.shape, dtype=torch.bool)


@_rule("Constant")
def constant(
    *,
    value: np.ndarray | None = None,
    value_float: float | None = None,
    value_floats: Sequence[float] | None = None,
    value_int: int | None = None,
    value_ints: Sequence[int] | None = None,
) -> Tensor:
    if value is not None:
        return torch.from_numpy(np.array(value))
    if value_float is not None:
        return torch.tensor(value_float, dtype=torch.float32)
    if value_floats is not None:
        return torch.tensor(list(value_floats), dtype=torch.float32)
    if value_int is not None:
        return torch.tensor(value_int, dtype=torch.int64)
    if value_ints is not None:
        return torch.tensor(list(value_ints), dtype=torch.int64)
    raise OnnxvizError("Constant without a numeric value", hint="string and sparse constants are not supported")


@_rule("ConstantOfShape", since=9)
def constant_of_shape(input: Tensor, *, value: np.ndarray | None = None) -> Tensor:
    fill = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value).reshape(-1)
    return torch.from_numpy(np.full(_ints(input), fill[0], dtype=fill.dtype))


@_rule("Shape")
def shape(data: Tensor, *, start: int = 0, end: int | None = None) -> Tensor:
    """Shape-1/15: ``start``/``end`` clamp like python slices."""
    return torch.tensor(list(data.shape)[start:end], dtype=torch.int64)


@_rule("Size")
def size(data: Tensor) -> Tensor:
    return torch.tensor(data.numel(), dtype=torch.int64)


def _torch_dtype(np_dtype: np.dtype) -> Any:
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


@_rule("Cast")
def cast(input: Tensor, *, to: int, saturate: int = 1, round_mode: str = "up") -> Tensor:
    from onnx import helper

    try:
        target = _torch_dtype(np.dtype(helper.tensor_dtype_to_np_dtype(to)))
    except (TypeError, KeyError, ValueError) as e:
        raise OnnxvizError(f"Cast to ONNX type {to} has no torch equivalent", hint="float, int and bool casts only") from e
    return input.to(target)


@_rule("CastLike", since=15)
def cast_like(input: Tensor, target_type: Tensor, *, saturate: int = 1, round_mode: str = "up") -> Tensor:
    return input.to(target_type.dtype)


@_rule("Range", since=11)
def range_(start: Tensor, limit: Tensor, delta: Tensor) -> Tensor:
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@_rule("Reshape", since=5)
def reshape(data: Tensor, shape: Tensor, *, allowzero: int = 0) -> Tensor:
    """0 copies the input's dimension unless ``allowzero`` (14+); -1 is inferred."""
    dims = _ints(shape)
    if not allowzero:
        dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return data.reshape(dims)


@_rule("Flatten")
def flatten(input: Tensor, *, axis: int = 1) -> Tensor:
    axis = _axis(axis, input.ndim)
    rows = int(np.prod(tuple(input.shape[:axis]), dtype=np.int64))
    cols = int(np.prod(tuple(input.shape[axis:]), dtype=np.int64))
    return input.reshape(rows, cols)


@_rule("Transpose")
def transpose(data: Tensor, *, perm: Sequence[int] | None = None) -> Tensor:
    return data.permute(list(perm) if perm is not None else list(range(data.ndim))[::-1])


def _squeeze(data: Tensor, axes: list[int]) -> Tensor:
    if not axes:
        return data.reshape([d for d in data.shape if d != 1])
    drop = {_axis(a, data.ndim) for a in axes}
    return data.reshape([d for i, d in enumerate(data.shape) if i not in drop])


@_rule("Squeeze")
def squeeze_1(data: Tensor, *, axes: Sequence[int] | None = None) -> Tensor:
    return _squeeze(data, list(axes or []))


@_rule("Squeeze", since=13)
def squeeze_13(data: Tensor, axes: Tensor | None = None) -> Tensor:
    return _squeeze(data, _ints(axes))


def _unsqueeze(data: Tensor, axes: list[int]) -> Tensor:
    rank = data.ndim + len(axes)
    new = {_axis(a, rank) for a in axes}
    dims = iter(data.shape)
    return data.reshape([1 if i in new else next(dims) for i in range(rank)])


@_rule("Unsqueeze")
def unsqueeze_1(data: Tensor, *, axes: Sequence[int]) -> Tensor:
    return _unsqueeze(data, list(axes))


@_rule("Unsqueeze", since=13)
def unsqueeze_13(data: Tensor, axes: Tensor) -> Tensor:
    return _unsqueeze(data, _ints(axes))


@_rule("Expand", since=8)
def expand(input: Tensor, shape: Tensor) -> Tensor:
    """Bidirectional broadcast: the output may be larger than ``shape`` where input dims are."""
    out = torch.broadcast_shapes(tuple(input.shape), tuple(_ints(shape)))
    return input.expand(out)


@_rule("Tile", since=6)
def tile(input: Tensor, repeats: Tensor) -> Tensor:
    return input.repeat(*_ints(repeats)) if input.ndim else input


@_rule("Concat")
def concat(*inputs: Tensor, axis: int) -> Tensor:
    return torch.cat(list(inputs), dim=axis)


def _split(input: Tensor, axis: int, sizes: list[int] | None, num_outputs: int | None) -> tuple[Tensor, ...]:
    length = input.shape[_axis(axis, input.ndim)]
    if not sizes:
        if not num_outputs:
            raise OnnxvizError("Split needs 'split' sizes or a number of outputs", hint="the model may be invalid")
        chunk = -(-length // num_outputs)
        sizes = [min(chunk, length - i * chunk) for i in range(num_outputs)]
    return tuple(torch.split(input, sizes, dim=axis))


@_rule("Split", wants_num_outputs=True)
def split_2(input: Tensor, *, axis: int = 0, split: Sequence[int] | None = None, num_outputs: int | None = None) -> tuple[Tensor, ...]:
    """Split-2/11: sizes as an attribute, else equal parts, one per node output."""
    return _split(input, axis, list(split) if split else None, num_outputs)


@_rule("Split", since=13, wants_num_outputs=True)
def split_13(input: Tensor, split: Tensor | None = None, *, axis: int = 0, num_outputs: int | None = None) -> tuple[Tensor, ...]:
    """Split-13/18: sizes as an input; else ``num_outputs`` parts (the attribute from 18, the
    node's output count before), the last one smaller when the length does not divide."""
    return _split(input, axis, _ints(split) if _given(split) else None, num_outputs)


def _slice(data: Tensor, starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None) -> Tensor:
    """ONNX Slice: negative indices count from the end, then clamp (to [0, dim] for a positive
    step, [-1, dim-1] for a negative one); negative steps walk backwards."""
    axes = [_axis(a, data.ndim) for a in axes] if axes else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    out = data
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = data.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index = torch.arange(start, end, step, dtype=torch.int64)
        if step == 1:
            out = out.narrow(axis, start, max(0, end - start))
        else:
            out = out.index_select(axis, index)
    return out


@_rule("Slice")
def slice_1(data: Tensor, *, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None = None) -> Tensor:
    return _slice(data, list(starts), list(ends), list(axes) if axes else None, None)


@_rule("Slice", since=10)
def slice_10(
    data: Tensor, starts: Tensor, ends: Tensor, axes: Tensor | None = None, steps: Tensor | None = None
) -> Tensor:
    return _slice(data, _ints(starts), _ints(ends), _ints(axes) if _given(axes) else None,
                  _ints(steps) if _given(steps) else None)


@_rule("Gather")
def gather(data: Tensor, indices: Tensor, *, axis: int = 0) -> Tensor:
    axis = _axis(axis, data.ndim)
    dim = data.shape[axis]
    idx = indices.to(torch.int64)
    idx = torch.where(idx < 0, idx + dim, idx)
    picked = data.index_select(axis, idx.reshape(-1))
    return picked.reshape(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1 :]))


@_rule("GatherElements", since=11)
def gather_elements(data: Tensor, indices: Tensor, *, axis: int = 0) -> Tensor:
    axis = _axis(axis, data.ndim)
    idx = indices.to(torch.int64)
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    return torch.gather(data, axis, idx)


def _edge_indices(mode: str, n: int, begin: int, end: int) -> np.ndarray:
    """Source index of every output position along one axis for reflect/edge/wrap padding."""
    i = np.arange(-begin, n + end)
    if mode == "edge":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(i)
        period = 2 * (n - 1)
        i = np.mod(i, period)
        return np.where(i >= n, period - i, i)
    raise OnnxvizError(f"Pad mode {mode!r} is not supported", hint="use constant, reflect, edge or wrap")


def _pad(data: Tensor, pads: list[int], value: float, axes: list[int] | None, mode: str) -> Tensor:
    r = data.ndim
    axes = [_axis(a, r) for a in axes] if axes else list(range(r))
    n = len(axes)
    per_axis = {a: (pads[k], pads[k + n]) for k, a in enumerate(axes)}
    mode = _text(mode)
    if mode == "constant":
        pairs = _torch_pad_arg([per_axis.get(a, (0, 0)) for a in range(r)])
        if hasattr(value, "requires_grad") and value.requires_grad:
            # A differentiated fill value: pad with 0 and add value * (padded positions).
            border = F.pad(torch.zeros(data.shape, dtype=data.dtype), pairs, value=1.0)
            return F.pad(data, pairs) + value.reshape(()) * border
        return F.pad(data, pairs, mode="constant", value=float(value) if hasattr(value, "item") else value)
    out = data
    for a, (b, e) in per_axis.items():
        if b or e:
            index = torch.from_numpy(_edge_indices(mode, data.shape[a], b, e).astype(np.int64))
            out = out.index_select(a, index)
    return out


@_rule("Pad", since=2)
def pad_2(data: Tensor, *, mode: str = "constant", pads: Sequence[int], value: float = 0.0) -> Tensor:
    return _pad(data, list(pads), value, None, mode)


@_rule("Pad", since=11)
def pad_11(
    data: Tensor,
    pads: Tensor,
    constant_value: Tensor | None = None,
    axes: Tensor | None = None,
    *,
    mode: str = "constant",
) -> Tensor:
    value = constant_value.reshape(()) if _given(constant_value) else 0
    if not getattr(value, "requires_grad", False) and hasattr(value, "item"):
        value = value.item()
    return _pad(data, _ints(pads), value, _ints(axes) if _given(axes) else None, mode)


# ------------------------------------------------------------------------------------ resize
def _source_coords(mode: str, out_len: int, in_len: int, scale: float) -> np.ndarray:
    """``x_original`` of every output position per coordinate_transformation_mode, in float32 as
    the spec and onnxruntime evaluate it (so ties round the same way)."""
    f32 = np.float32
    x = np.arange(out_len, dtype=f32)
    s, n = f32(scale), f32(in_len)
    if mode == "half_pixel":
        return (x + f32(0.5)) / s - f32(0.5)
    if mode == "pytorch_half_pixel":
        return (x + f32(0.5)) / s - f32(0.5) if out_len > 1 else np.zeros(out_len, dtype=f32)
    if mode == "align_corners":
        return x * (n - 1) / f32(out_len - 1) if out_len > 1 else np.zeros(out_len, dtype=f32)
    if mode == "asymmetric":
        return x / s
    if mode == "half_pixel_symmetric":
        offset = n / 2 * (1 - f32(out_len) / (n * s))
        return offset + (x + f32(0.5)) / s - f32(0.5)
    if mode == "tf_half_pixel_for_nn":
        return (x + f32(0.5)) / s
    raise BackendUnavailableError(
        f"Resize with coordinate_transformation_mode {mode!r} has no torch rule",
        hint="the numpy backend may still work (backend='numpy')",
    )


def _nearest(rule: str, coords: np.ndarray, scale: float) -> np.ndarray:
    c = coords.astype(np.float64)
    frac = c - np.floor(c)
    if rule == "round_prefer_floor":
        return np.where(frac == 0.5, np.floor(c), np.round(c))
    if rule == "round_prefer_ceil":
        return np.where(frac == 0.5, np.ceil(c), np.round(c))
    if rule == "floor":
        return np.floor(c)
    if rule == "ceil":
        return np.ceil(c)
    if rule == "legacy":
        # Upsample and Resize-10 name no rounding; onnxruntime floors when upscaling an axis and
        # takes the ceiling when downscaling it.
        return np.ceil(c) if scale < 1 else np.floor(c)
    raise OnnxvizError(f"Resize: unknown nearest_mode {rule!r}")


def _resize(
    X: Tensor,
    scales: list[float] | None,
    sizes: list[int] | None,
    *,
    mode: str,
    transform: str,
    nearest_mode: str,
    axes: list[int] | None = None,
    policy: str = "stretch",
    antialias: int = 0,
) -> Tensor:
    """Separable resize: along each resized axis, nearest is an index_select and linear the blend
    of two index_selects with fixed weights (taps clamped to the edge), so the gradient is exact."""
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    if mode not in ("nearest", "linear"):
        raise BackendUnavailableError(
            f"Resize mode {mode!r} has no torch rule (nearest and linear only)",
            hint="the numpy backend may still work (backend='numpy')",
        )
    r = X.ndim
    axes = [_axis(a, r) for a in axes] if axes else list(range(r))
    in_sizes = [X.shape[a] for a in axes]
    if sizes:
        out_sizes = list(sizes)
        if policy in ("not_larger", "not_smaller"):
            ratios = [o / i for o, i in zip(out_sizes, in_sizes)]
            s = min(ratios) if policy == "not_larger" else max(ratios)
            out_sizes = [int(math.floor(s * i + 0.5)) for i in in_sizes]
            scale_list = [s] * len(axes)
        else:
            scale_list = [o / i for o, i in zip(out_sizes, in_sizes)]
    elif scales:
        scale_list = list(scales)
        out_sizes = [int(np.float32(i) * np.float32(s)) for i, s in zip(in_sizes, scale_list)]
    else:
        raise OnnxvizError("Resize needs scales or sizes", hint="the model may be invalid")
    out = X
    for a, n, o, s in zip(axes, in_sizes, out_sizes, scale_list):
        if o == n and s == 1:
            continue
        if antialias and mode == "linear" and s < 1:
            raise BackendUnavailableError(
                "antialiased linear downscaling has no torch rule",
                hint="the numpy backend may still work (backend='numpy')",
            )
        coords = _source_coords(transform, o, n, s)
        if mode == "nearest":
            index = np.clip(_nearest(nearest_mode, coords, s), 0, n - 1).astype(np.int64)
            out = out.index_select(a, torch.from_numpy(index))
            continue
        c = coords.astype(np.float64)
        base = np.floor(c)
        w1 = c - base
        i0 = np.clip(base, 0, n - 1).astype(np.int64)
        i1 = np.clip(base + 1, 0, n - 1).astype(np.int64)
        shape = [1] * r
        shape[a] = o
        w1t = torch.from_numpy(w1).to(out.dtype).reshape(shape)
        out = out.index_select(a, torch.from_numpy(i0)) * (1 - w1t) + out.index_select(a, torch.from_numpy(i1)) * w1t
    return out


def _floats(t: Tensor | None) -> list[float] | None:
    return [float(v) for v in t.detach().reshape(-1).tolist()] if _given(t) else None


@_rule("Upsample", since=7)
def upsample_7(X: Tensor, *, mode: str = "nearest", scales: Sequence[float]) -> Tensor:
    return _resize(X, list(scales), None, mode=_text(mode), transform="asymmetric", nearest_mode="legacy")


@_rule("Upsample", since=9)
def upsample_9(X: Tensor, scales: Tensor, *, mode: str = "nearest") -> Tensor:
    return _resize(X, _floats(scales), None, mode=_text(mode), transform="asymmetric", nearest_mode="legacy")


@_rule("Resize", since=10)
def resize_10(X: Tensor, scales: Tensor, *, mode: str = "nearest") -> Tensor:
    """Resize-10 is Upsample-9 under a new name: asymmetric coordinates."""
    return _resize(X, _floats(scales), None, mode=_text(mode), transform="asymmetric", nearest_mode="legacy")


@_rule("Resize", since=11)
def resize_11(
    X: Tensor,
    roi: Tensor | None = None,
    scales: Tensor | None = None,
    sizes: Tensor | None = None,
    *,
    antialias: int = 0,
    axes: Sequence[int] | None = None,
    coordinate_transformation_mode: str = "half_pixel",
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    extrapolation_value: float = 0.0,
    keep_aspect_ratio_policy: str = "stretch",
    mode: str = "nearest",
    nearest_mode: str = "round_prefer_floor",
) -> Tensor:
    """Resize-11..19, nearest and linear, for every coordinate mode but tf_crop_and_resize."""
    return _resize(
        X,
        _floats(scales),
        _ints(sizes) if _given(sizes) else None,
        mode=_text(mode),
        transform=_text(coordinate_transformation_mode),
        nearest_mode=_text(nearest_mode),
        axes=list(axes) if axes else None,
        policy=_text(keep_aspect_ratio_policy),
        antialias=antialias,
    )


#: Every op type with a rule at some opset (see :func:`supports` for a given opset).
SUPPORTED_OPS: frozenset[str] = frozenset(_RULES)


# ------------------------------------------------------------------------------------ backend
class TorchBackend:
    """Run a graph in torch and differentiate it with torch autograd (stateless between calls)."""

    def __init__(self, graph: Any) -> None:
        _import_torch()
        self.graph = graph

    # ------------------------------------------------------------------ public API
    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        dtype: np.dtype | type = np.float32,
    ) -> dict[str, np.ndarray]:
        """Torch forward pass: the values of ``outputs`` (default: the graph outputs)."""
        dtype = np.dtype(dtype)
        outputs = tuple(outputs) if outputs is not None else self.graph.output_names
        self._check_names(outputs, "requested")
        with torch.no_grad():
            env = self._forward(feeds, set(outputs), (), dtype)
        return {name: _to_numpy(env[name]) for name in outputs}

    def value_and_grad(
        self,
        feeds: Mapping[str, np.ndarray],
        seeds: Mapping[str, Seed],
        wrt: Sequence[str],
        *,
        values: Sequence[str] = (),
        dtype: np.dtype | type = np.float32,
    ) -> GradResult:
        """Values of the seeded and requested tensors and the gradients of ``sum_t <seed_t, t>``
        w.r.t. each ``wrt`` tensor (a graph input or an intermediate), by torch autograd.

        An intermediate ``wrt`` tensor that already depends on another ``wrt`` tensor is
        differentiated in place (so the gradient w.r.t. the upstream one is the total derivative,
        as in the numpy engine); otherwise it is made a leaf where it is produced. A ``wrt``
        tensor the seeds do not depend on gets zeros.
        """
        dtype = np.dtype(dtype)
        wrt = tuple(wrt)
        self._check_names(wrt, "wrt")
        self._check_names(tuple(seeds), "objective")
        self._check_names(tuple(values), "requested")
        targets = set(seeds) | set(values) | set(wrt)
        with torch.enable_grad():
            env = self._forward(feeds, targets, wrt, dtype)
            outs, cots = [], []
            for name, seed in seeds.items():
                t = env[name]
                value = _to_numpy(t)
                s = np.asarray(seed(value) if callable(seed) else seed)
                if s.shape != value.shape:
                    try:
                        s = np.broadcast_to(s, value.shape)
                    except ValueError as e:
                        raise TargetError(
                            f"seed for {name!r} has shape {list(s.shape)}, the tensor has {list(value.shape)}",
                            hint="give a cotangent of the tensor's shape",
                        ) from e
                if t.requires_grad:
                    outs.append(t)
                    cots.append(torch.from_numpy(np.array(s, dtype=value.dtype)))
            leaves = [env[name] for name in wrt]
            grads: Sequence[Any] = [None] * len(leaves)
            if outs:
                grads = torch.autograd.grad(outs, leaves, grad_outputs=cots, allow_unused=True)
        result = {
            name: (np.zeros(tuple(t.shape), dtype=_to_numpy(t).dtype) if g is None else _to_numpy(g))
            for name, t, g in zip(wrt, leaves, grads)
        }
        out_values = {name: _to_numpy(env[name]) for name in dict.fromkeys(tuple(seeds) + tuple(values))}
        return GradResult(out_values, result)

    def gradient(
        self,
        feeds: Mapping[str, np.ndarray],
        seeds: Mapping[str, Seed],
        wrt: str,
        *,
        dtype: np.dtype | type = np.float32,
    ) -> np.ndarray:
        """The gradient of ``sum_t <seed_t, t>`` w.r.t. one tensor."""
        return self.value_and_grad(feeds, seeds, (wrt,), dtype=dtype).grads[wrt]

    # ------------------------------------------------------------------ internals
    def _check_names(self, names: Sequence[str], what: str) -> None:
        g = self.graph
        for name in names:
            if name not in g.dynamic:
                known = name in g.producer or name in g.initializers
                raise TargetError(
                    f"{what} tensor {name!r} " + ("does not depend on any input" if known else "is not in the graph"),
                    hint="`onnxviz inspect MODEL` lists the tensors; gradients exist only for input-dependent ones",
                )

    def _input(self, value: Any, dtype: np.dtype) -> Tensor:
        array = np.array(value, copy=True)  # never share memory with the caller's array
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(dtype, copy=False)
        return torch.from_numpy(array)

    def _constant(self, value: np.ndarray, dtype: np.dtype) -> Tensor:
        if dtype == np.float64 and np.issubdtype(value.dtype, np.floating) and value.dtype != dtype:
            return torch.from_numpy(value.astype(dtype))
        if not value.flags.writeable or not value.flags.c_contiguous:
            value = np.ascontiguousarray(value).copy()
        # Shares memory with graph.constants; the rules never write into their inputs.
        return torch.from_numpy(value)

    def _forward(
        self, feeds: Mapping[str, np.ndarray], targets: set[str], wrt: Sequence[str], dtype: np.dtype
    ) -> dict[str, Tensor]:
        g = self.graph
        nodes = [n for n in g.ancestors(targets) if any(o in g.dynamic for o in n.outputs)]
        self._check_supported(nodes)
        float_type = _torch_dtype(dtype)
        # float64 runs every float tensor in float64; float32 keeps the model's own float types
        # (a Cast to double stays double, as in onnxruntime).
        promote = dtype == np.float64
        onnx_double = 11  # TensorProto.DOUBLE
        wrt_set = set(wrt)
        env: dict[str, Tensor] = {}
        for info in g.inputs:
            if info.name not in feeds:
                raise InputError(
                    f"missing model input {info.name!r}; the model takes {list(g.input_names)}",
                    hint="give one array per model input",
                )
            t = self._input(feeds[info.name], dtype)
            if info.name in wrt_set:
                self._check_float(t, info.name)
                t.requires_grad_()
            env[info.name] = t
        last_use: dict[str, int] = {}
        for k, n in enumerate(nodes):
            for name in n.inputs:
                if name:
                    last_use[name] = k
        consts = g.constants
        for k, n in enumerate(nodes):
            args: list[Tensor | None] = []
            for name in n.inputs:
                if not name:
                    args.append(None)
                elif name in env:
                    args.append(env[name])
                elif name in consts:
                    args.append(self._constant(consts[name], dtype))
                else:
                    raise ExecutionError(
                        f"node {n.label!r} ({n.op_type}) needs tensor {name!r}, which nothing produced",
                        hint="the model may be invalid; check it with onnx.checker",
                    )
            while args and args[-1] is None:
                args.pop()  # trailing optional inputs fall back to the rule's defaults
            rule = _lookup(n.op_type, g.opset)
            assert rule is not None  # _check_supported ran
            attrs = dict(n.attrs)
            if promote and n.op_type == "Cast" and _is_float_type(attrs.get("to")):
                # float64 runs keep float64: no rounding to float32/float16 midway.
                attrs["to"] = onnx_double
            if rule.wants_num_outputs and "num_outputs" not in attrs:
                attrs["num_outputs"] = len(n.outputs)
            try:
                result = rule.fn(*args, **attrs)
            except OnnxvizError:
                raise
            except Exception as e:
                shapes = [None if a is None else list(a.shape) for a in args]
                raise ExecutionError(
                    f"torch forward of node {n.label!r} ({n.op_type}, opset {g.opset}) failed on input shapes "
                    f"{shapes}: {e}",
                    hint="check the input shape; if it is right, this is a bug in onnxviz's torch backend",
                ) from e
            outs = result if isinstance(result, tuple) else (result,)
            for j, name in enumerate(n.outputs):
                if not name:
                    continue
                if j >= len(outs):
                    if name in targets or any(name in m.inputs for m in nodes[k + 1 :]):
                        raise BackendUnavailableError(
                            f"output {j} ({name!r}) of node {n.label!r} ({n.op_type}, opset {g.opset}) "
                            "is not produced by the torch backend",
                            hint="the numpy backend may still work (backend='numpy')",
                        )
                    continue
                t = outs[j]
                if promote and t.is_floating_point() and t.dtype != float_type:
                    t = t.to(float_type)
                if name in wrt_set:
                    self._check_float(t, name)
                    if not t.requires_grad:
                        # Nothing upstream is differentiated: make it a leaf where it is produced.
                        t = t.detach().requires_grad_()
                env[name] = t
            for name in n.inputs:
                if name and last_use.get(name) == k and name in env and name not in targets:
                    del env[name]
        return env

    def _check_supported(self, nodes: Sequence[Any]) -> None:
        opset = self.graph.opset
        for n in nodes:
            if n.domain not in ("", "ai.onnx") or _lookup(n.op_type, opset) is None:
                domain = f" (domain {n.domain!r})" if n.domain not in ("", "ai.onnx") else ""
                raise BackendUnavailableError(
                    f"op {n.op_type!r}{domain} (opset {opset}) at node {n.label!r} has no rule in the torch backend",
                    hint="the numpy backend (backend='numpy') may still work for this model",
                )

    @staticmethod
    def _check_float(t: Tensor, name: str) -> None:
        if not t.is_floating_point():
            raise TargetError(
                f"cannot differentiate w.r.t. {name!r}: it is a {t.dtype} tensor",
                hint="gradients exist only for floating-point tensors",
            )


def _is_float_type(onnx_type: Any) -> bool:
    # FLOAT16, FLOAT, DOUBLE, BFLOAT16 in TensorProto's numbering.
    return onnx_type in (1, 10, 11, 16)


def _to_numpy(t: Tensor) -> np.ndarray:
    return np.array(t.detach().cpu().numpy(), copy=True)
