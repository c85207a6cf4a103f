"""Vector-Jacobian emitters of the compiled backward (:mod:`onnxviz.backends.ortgrad`).

One small function per op type appends the backward nodes of one forward node to the ONNX graph
being built, through :class:`GraphBuilder`; :data:`EMITTERS` maps op types to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExecutionError, UnsupportedOpError
from ..graph import Node

__all__ = ["EMITTERS", "Emitter", "GraphBuilder", "Grads"]

_FALLBACK_HINT = (
    "the numpy gradient engine (Model.value_and_grad) still differentiates this model; "
    "the compiled onnxruntime backward covers the common CNN ops only"
)

Grads = tuple[str | None, ...]
#: An emitter appends the backward nodes of one forward node: it gets the builder, the node and
#: one cotangent tensor name per output (``None`` where the cotangent is zero) and returns one
#: gradient tensor name per input (``None`` where there is none or it is not needed).
Emitter = Callable[["GraphBuilder", Node, Grads], Grads]
EMITTERS: dict[str, Emitter] = {}


def emitter(*op_types: str) -> Callable[[Emitter], Emitter]:
    def register(fn: Emitter) -> Emitter:
        for op in op_types:
            if op in EMITTERS:
                raise ValueError(f"a VJP emitter for {op!r} is already registered")
            EMITTERS[op] = fn
        return fn

    return register


def _unsupported(node: Node, opset: int, reason: str) -> UnsupportedOpError:
    return UnsupportedOpError(node.op_type, node.label, opset, reason=reason, hint=_FALLBACK_HINT)


# ---------------------------------------------------------------------------------- the builder


#: Constants of at least this many bytes reach onnxruntime as external initializers (their numpy
#: buffers handed over when the session is created) instead of TensorProto bytes: serializing,
#: measuring and copying a ResNet-50's ~200 MB of forward and backward weights as protobuf took
#: about a second of every compile. Smaller ones stay inline (shape inference reads those).
EXTERNAL_BYTES = 1024


def initializer(value: np.ndarray, name: str, external: dict[str, np.ndarray]) -> onnx.TensorProto:
    """``value`` as an initializer: inline when small, else a placeholder with an external-data
    reference (name, dtype and dims only) whose buffer is kept in ``external`` under ``name``."""
    value = np.asarray(value)
    if value.nbytes < EXTERNAL_BYTES or value.dtype.kind not in "biuf":
        return numpy_helper.from_array(value, name)
    t = onnx.TensorProto()
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
    t.dims.extend(value.shape)
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, text in (("location", "onnxviz-in-memory"), ("offset", "0"), ("length", str(value.nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, text
    external[name] = np.ascontiguousarray(value)
    return t


class GraphBuilder:
    """Appends nodes and constants to the backward model; knows every tensor's static shape."""

    def __init__(self, opset: int, shapes: Mapping[str, tuple[int, ...]], consts: Mapping[str, np.ndarray],
                 reach: set[str], external: dict[str, np.ndarray] | None = None) -> None:
        self.opset = opset
        self.shapes = dict(shapes)
        self.consts: dict[str, np.ndarray] = dict(consts)
        self.reach = reach
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        #: Buffers of the large initializers (see :func:`initializer`).
        self.external: dict[str, np.ndarray] = {} if external is None else external
        self._count = 0
        #: Tensors whose gradients are outputs of the model (they must stay materialized).
        self.keep: set[str] = set()
        #: ``out -> (g, factor)`` for each ``out = g * factor`` by a constant per-channel factor
        #: (a BatchNormalization VJP), which a following conv VJP may fold into its weights.
        self.scaled: dict[str, tuple[str, np.ndarray]] = {}

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}__vjp{self._count}"

    def needs(self, node: Node, k: int) -> bool:
        """Whether the gradient w.r.t. input ``k`` of ``node`` is wanted."""
        return k < len(node.inputs) and bool(node.inputs[k]) and node.inputs[k] in self.reach

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.shapes:
            return self.shapes[name]
        if name in self.consts:
            return tuple(self.consts[name].shape)
        raise ExecutionError(f"no static shape known for tensor {name!r}",
                             hint="this is a bug in onnxviz's compiled backward; use the numpy engine")

    def constant(self, node: Node, k: int, what: str) -> np.ndarray:
        name = node.inputs[k] if k < len(node.inputs) else ""
        if name and name in self.consts:
            return self.consts[name]
        raise _unsupported(node, self.opset, f"has a non-constant {what}, which the compiled backward needs constant")

    def const(self, value: Any, hint: str = "c", dtype: Any = np.float32) -> str:
        name = self.fresh(hint)
        self.initializers.append(initializer(np.asarray(value, dtype=dtype), name, self.external))
        self.shapes[name] = tuple(np.shape(value))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        outs = [self.fresh(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=outs[0], **attrs))
        return outs[0] if n_out == 1 else outs

    def reshape(self, g: str, shape: Sequence[int]) -> str:
        # a static target: a 0 in it is an empty axis, not "copy the input's dim" (allowzero)
        attrs = {"allowzero": 1} if 0 in shape else {}
        return self.op("Reshape", [g, self.const(np.array(shape, dtype=np.int64), "shape", np.int64)], **attrs)

    def unbroadcast(self, g: str, out_shape: Sequence[int], in_shape: Sequence[int]) -> str:
        """Sum ``g`` (of the broadcast output's shape) back to an operand's shape."""
        out_shape, in_shape = tuple(out_shape), tuple(in_shape)
        if out_shape == in_shape:
            return g
        lead = len(out_shape) - len(in_shape)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(in_shape) if d == 1 and out_shape[lead + i] != 1]
        if axes:
            g = self.op("ReduceSum", [g, self.const(np.array(axes, dtype=np.int64), "axes", np.int64)], keepdims=1)
        return self.reshape(g, in_shape)

    def unscaled(self, g: str, node: Node) -> tuple[str, np.ndarray | None]:
        """``(g0, factor)`` when ``g = g0 * factor`` per channel was emitted for ``node``'s output
        alone (the Mul is then dropped: the caller folds ``factor`` into its weights), else
        ``(g, None)``."""
        if g not in self.scaled or node.outputs[0] in self.keep:
            return g, None
        g0, factor = self.scaled.pop(g)
        mul = next(k for k, n in enumerate(self.nodes) if n.output[0] == g)
        const = self.nodes[mul].input[1]
        del self.nodes[mul]
        self.initializers = [t for t in self.initializers if t.name != const]
        self.external.pop(const, None)
        return g0, factor

    def masked(self, mask: str, g: str) -> str:
        """``g`` where ``mask``, else 0: a same-shape Mul by the cast mask (onnxruntime's Where with
        a broadcast scalar is several times slower)."""
        return self.op("Mul", [g, self.op("Cast", [mask], to=TensorProto.FLOAT)])


# --------------------------------------------------------------------------------- the emitters


def _ints(b: GraphBuilder, values: Sequence[int], hint: str) -> str:
    """An int64 1-D constant (axes, pads, starts, ...)."""
    return b.const(np.array(list(values), dtype=np.int64), hint, np.int64)


def _axes(b: GraphBuilder, axes: Sequence[int]) -> str:
    return _ints(b, axes, "axes")


def _slice(b: GraphBuilder, t: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
           steps: Sequence[int] | None = None) -> str:
    inputs = [t, _ints(b, starts, "starts"), _ints(b, ends, "ends"), _axes(b, axes)]
    return b.op("Slice", inputs + ([_ints(b, steps, "steps")] if steps is not None else []))


def _reverse(b: GraphBuilder, t: str, axis: int) -> str:
    """``t`` read backwards along ``axis``."""
    return _slice(b, t, [-1], [-(2 ** 63)], [axis], [-1])


def _reduce_mean(b: GraphBuilder, x: str, axes: Sequence[int]) -> str:
    """ReduceMean keeping dims, in the model's opset's form (axes an input from opset 18)."""
    if b.opset >= 18:
        return b.op("ReduceMean", [x, _axes(b, axes)], keepdims=1)
    return b.op("ReduceMean", [x], axes=list(axes), keepdims=1)


def _zeros(b: GraphBuilder, shape: Sequence[int]) -> str:
    return b.op("ConstantOfShape", [_ints(b, shape, "shape")],
                value=numpy_helper.from_array(np.zeros(1, dtype=np.float32)))


def _float_mask(b: GraphBuilder, condition: str) -> str:
    return b.op("Cast", [condition], to=TensorProto.FLOAT)


def _spatial_geometry(b: GraphBuilder, node: Node, x_shape: Sequence[int], y_shape: Sequence[int],
                      kernel: Sequence[int], dilations: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """strides, explicit pads and the ConvTranspose output_padding that gives back X's size."""
    nd = len(kernel)
    strides = list(node.attrs.get("strides") or [1] * nd)
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    xs, ys = list(x_shape[2:]), list(y_shape[2:])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads_begin, pads_end = [], []
        for i in range(nd):
            total = max((ys[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - xs[i], 0)
            small = total // 2
            begin = small if auto_pad == "SAME_UPPER" else total - small
            pads_begin.append(begin)
            pads_end.append(total - begin)
        pads = pads_begin + pads_end
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = list(node.attrs.get("pads") or [0] * (2 * nd))
    output_padding = []
    for i in range(nd):
        covered = (ys[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - pads[i] - pads[nd + i]
        extra = xs[i] - covered
        if extra < 0 or (extra >= strides[i] and extra >= dilations[i]):
            raise _unsupported(node, b.opset, f"has a geometry ConvTranspose cannot invert (axis {i}: "
                               f"input {xs[i]}, output {ys[i]}, output_padding {extra})")
        output_padding.append(extra)
    return strides, pads, output_padding


@emitter("Conv")
def conv_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Input gradient only: for stride 1 and constant weights, a ``Conv`` of the cotangent with the
    flipped, channel-swapped kernel; otherwise ``ConvTranspose`` with the same weights, group,
    strides, dilations and pads, and the ``output_padding`` that restores X's size (the rows a
    strided conv never read)."""
    (g,) = gouts[:1]
    if b.needs(node, 1) or b.needs(node, 2):
        raise _unsupported(node, b.opset, "needs a weight or bias gradient, which the compiled backward lacks")
    if g is None or not b.needs(node, 0):
        return (None,) * len(node.inputs)
    x, w = node.inputs[0], node.inputs[1]
    w_shape = b.shape(w)
    nd = len(w_shape) - 2
    g, factor = b.unscaled(g, node) if w in b.consts else (g, None)
    weights = np.asarray(b.consts[w]) if w in b.consts else None
    if factor is not None and weights is not None:  # the following BatchNormalization's scale, folded in
        weights = (weights.astype(np.float64) * factor.reshape((-1,) + (1,) * (nd + 1))).astype(np.float32)
    kernel = list(node.attrs.get("kernel_shape") or w_shape[2:])
    dilations = list(node.attrs.get("dilations") or [1] * nd)
    if node.attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER") and any(d != 1 for d in dilations):
        raise _unsupported(node, b.opset, "is dilated with auto_pad SAME, which onnxruntime's Conv refuses")
    strides, pads, output_padding = _spatial_geometry(b, node, b.shape(x), b.shape(node.outputs[0]), kernel, dilations)
    group = int(node.attrs.get("group", 1))
    back_pads = [dilations[i % nd] * (kernel[i % nd] - 1) - p for i, p in enumerate(pads)]
    if all(s == 1 for s in strides) and min(back_pads) >= 0 and weights is not None:
        # Stride 1: the input gradient is a correlation of G with the flipped kernel, in and out
        # channels swapped per group, and pads d*(k-1) - p. onnxruntime's Conv kernels (its
        # depthwise ones above all) are several times faster than its ConvTranspose.
        wt = weights
        m, cg = wt.shape[:2]
        wt = wt.reshape(group, m // group, cg, *wt.shape[2:]).swapaxes(1, 2).reshape(cg * group, m // group, *wt.shape[2:])
        wt = np.ascontiguousarray(wt[(slice(None), slice(None)) + (slice(None, None, -1),) * nd])
        gx = b.op("Conv", [g, b.const(wt, "w_flip", wt.dtype)], group=group, pads=back_pads,
                  dilations=dilations, kernel_shape=kernel)
    else:
        if factor is not None and weights is not None:
            w = b.const(weights, "w_bn", np.float32)
        gx = b.op("ConvTranspose", [g, w], group=group, strides=strides, pads=pads,
                  dilations=dilations, kernel_shape=kernel, output_padding=output_padding)
    return (gx,) + (None,) * (len(node.inputs) - 1)


def _step(b: GraphBuilder, y: str, bound: float, above: bool) -> str:
    """The 0/1 mask ``Y > bound`` (``above``) or ``Y < bound`` as one ``HardSigmoid``:
    ``clip(a * Y + c, 0, 1)`` with ``a = ±2**k`` and ``c = ∓bound * 2**k``.

    With a power of two and ``|bound| * 2**k < 2**127`` both products are exact, so the sum is
    zero exactly at the bound and has the sign of ``Y - bound`` elsewhere; ``k`` is large enough
    that one ulp of the bound times ``2**k`` is far above 1, so the mask is exactly 0 or 1 (for a
    zero bound: 1 for every normal ``Y > 0``, a fraction for subnormals below ``2**-126``).
    Unlike a comparison and a cast, ``HardSigmoid`` and the ``Mul`` that applies the mask run in
    onnxruntime's blocked NCHWc layout, which saves two layout reorders per activation.
    """
    exponent = 0 if bound == 0 else int(np.frexp(np.float32(abs(bound)))[1])
    k = min(126, 126 - exponent)
    scale = float(np.ldexp(1.0, k))
    alpha = scale if above else -scale
    return b.op("HardSigmoid", [y], alpha=alpha, beta=float(-alpha * np.float32(bound)))


@emitter("Relu")
def relu_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """``G * (Y > 0)``, the mask as a :func:`_step` of the output."""
    return (b.op("Mul", [gouts[0], _step(b, node.outputs[0], 0.0, above=True)]),)


@emitter("LeakyRelu")
def leaky_relu_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    g = gouts[0]
    alpha = float(node.attrs.get("alpha", 0.01))
    mask = b.op("Cast", [b.op("GreaterOrEqual", [node.inputs[0], b.const(0.0)])], to=TensorProto.FLOAT)
    slope = b.op("Add", [b.op("Mul", [mask, b.const(1.0 - alpha)]), b.const(alpha)])
    return (b.op("Mul", [g, slope]),)


@emitter("Clip")
def clip_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Constant bounds only; the gradient passes where the output lies strictly inside (min, max).

    The mask reads the output, not the input, so onnxruntime can still fuse the producing Conv
    with the Clip. It differs from the numpy rule (bounds included) only where X equals a bound
    exactly, as the Relu rule (``Y > 0``) does at 0.
    """
    if b.needs(node, 1) or b.needs(node, 2):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its bounds")
    y = node.outputs[0]
    lo = float(b.constant(node, 1, "min")) if len(node.inputs) > 1 and node.inputs[1] else None
    hi = float(b.constant(node, 2, "max")) if len(node.inputs) > 2 and node.inputs[2] else None
    if lo is not None and hi is not None and lo >= hi:
        raise _unsupported(node, b.opset, "has min >= max")
    g = gouts[0]
    if lo is not None:
        g = b.op("Mul", [g, _step(b, y, lo, above=True)])
    if hi is not None:
        g = b.op("Mul", [g, _step(b, y, hi, above=False)])
    return (g,) + (None,) * (len(node.inputs) - 1)


@emitter("Sigmoid")
def sigmoid_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    y = node.outputs[0]
    return (b.op("Mul", [b.op("Mul", [gouts[0], y]), b.op("Sub", [b.const(1.0), y])]),)


@emitter("Tanh")
def tanh_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    y = node.outputs[0]
    return (b.op("Mul", [gouts[0], b.op("Sub", [b.const(1.0), b.op("Mul", [y, y])])]),)


@emitter("HardSigmoid")
def hard_sigmoid_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    y = node.outputs[0]
    inside = b.op("And", [b.op("Greater", [y, b.const(0.0)]), b.op("Less", [y, b.const(1.0)])])
    return (b.masked(inside, b.op("Mul", [gouts[0], b.const(float(node.attrs.get("alpha", 0.2)))])),)


@emitter("HardSwish")
def hard_swish_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """``x / 3 + 1 / 2`` on (-3, 3), 0 below, 1 from 3 on (as the numpy rule)."""
    x = node.inputs[0]
    slope = b.op("Add", [b.op("Mul", [x, b.const(1.0 / 3.0)]), b.const(0.5)])
    inside = b.op("And", [b.op("Greater", [x, b.const(-3.0)]), b.op("Less", [x, b.const(3.0)])])
    above = b.op("Cast", [b.op("GreaterOrEqual", [x, b.const(3.0)])], to=TensorProto.FLOAT)
    return (b.op("Mul", [gouts[0], b.op("Where", [inside, slope, above])]),)


@emitter("Add", "Sub", "Sum")
def add_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    g, y_shape = gouts[0], b.shape(node.outputs[0])
    out: list[str | None] = []
    for k, name in enumerate(node.inputs):
        if not b.needs(node, k) or g is None:
            out.append(None)
            continue
        gk = b.unbroadcast(g, y_shape, b.shape(name))
        out.append(b.op("Neg", [gk]) if node.op_type == "Sub" and k == 1 else gk)
    return tuple(out)


@emitter("Mul")
def mul_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    g, y_shape = gouts[0], b.shape(node.outputs[0])
    a, c = node.inputs
    ga = b.unbroadcast(b.op("Mul", [g, c]), y_shape, b.shape(a)) if b.needs(node, 0) else None
    gc = b.unbroadcast(b.op("Mul", [g, a]), y_shape, b.shape(c)) if b.needs(node, 1) else None
    return (ga, gc)


@emitter("Div")
def div_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    g, y_shape = gouts[0], b.shape(node.outputs[0])
    a, c = node.inputs
    ga = b.unbroadcast(b.op("Div", [g, c]), y_shape, b.shape(a)) if b.needs(node, 0) else None
    gc = None
    if b.needs(node, 1):  # d(a/c)/dc = -y/c
        gc = b.unbroadcast(b.op("Neg", [b.op("Div", [b.op("Mul", [g, node.outputs[0]]), c])]), y_shape, b.shape(c))
    return (ga, gc)


@emitter("BatchNormalization")
def batch_norm_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Inference mode: a per-channel scale ``scale / sqrt(var + eps)``, folded to a constant."""
    if int(node.attrs.get("training_mode", 0)) or sum(1 for o in node.outputs if o) > 1:
        raise _unsupported(node, b.opset, "is in training mode")
    if any(b.needs(node, k) for k in range(1, 5)):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its statistics or affine parameters")
    scale, var = b.constant(node, 1, "scale"), b.constant(node, 4, "variance")
    eps = float(node.attrs.get("epsilon", 1e-5))
    rank = len(b.shape(node.inputs[0]))
    factor = (scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)).reshape((-1,) + (1,) * (rank - 2))
    out = b.op("Mul", [gouts[0], b.const(factor, "bn_scale")])
    b.scaled[out] = (gouts[0], factor.reshape(-1))
    return (out, None, None, None, None)


@emitter("MaxPool")
def max_pool_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Scatter-add each output's cotangent to its argmax: onnxruntime's ``Indices`` are flat over
    the whole N*C*H*W tensor, so one ``ScatterElements(reduction="add")`` over the flattened
    input accumulates where windows overlap."""
    g = gouts[0]
    if g is None:
        return (None,)
    if int(node.attrs.get("storage_order", 0)) != 0:
        raise _unsupported(node, b.opset, "uses column-major storage_order")
    x_shape = b.shape(node.inputs[0])
    size = int(np.prod(x_shape))
    zeros = _zeros(b, [size])
    index = b.reshape(node.outputs[1], [-1])
    flat = b.op("ScatterElements", [zeros, index, b.reshape(g, [-1])], axis=0, reduction="add")
    return (b.reshape(flat, x_shape),)


@emitter("GlobalAveragePool")
def global_average_pool_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    x_shape = b.shape(node.inputs[0])
    scaled = b.op("Mul", [gouts[0], b.const(1.0 / float(np.prod(x_shape[2:])))])
    return (b.op("Expand", [scaled, b.const(np.array(x_shape, dtype=np.int64), "shape", np.int64)]),)


@emitter("AveragePool")
def average_pool_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Each window's cotangent divided by the number of positions it averages and spread back
    over them: a depthwise ``ConvTranspose`` with a constant kernel. When every window counts
    the same (``count_include_pad`` or no padding, and no ``ceil_mode`` window running past the
    padded input) the division is the kernel's weight ``1 / window size``; otherwise a constant
    of the output's spatial shape holds each window's own count (positions inside the input, or
    inside the padded input with ``count_include_pad``) and the spread cuts off what lies past
    the input. ``auto_pad`` becomes the explicit pads it implies; dilations are refused."""
    x_shape, y_shape = b.shape(node.inputs[0]), b.shape(node.outputs[0])
    kernel = list(node.attrs["kernel_shape"])
    nd = len(kernel)
    pads = list(node.attrs.get("pads") or [0] * (2 * nd))
    strides = list(node.attrs.get("strides") or [1] * nd)
    if any(d != 1 for d in node.attrs.get("dilations") or [1] * nd):
        raise _unsupported(node, b.opset, "is dilated")
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        pads = [0] * (2 * nd)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):  # the pads the output size implies
        pads = [0] * (2 * nd)
        for i in range(nd):
            total = max((y_shape[2 + i] - 1) * strides[i] + kernel[i] - x_shape[2 + i], 0)
            small = total // 2
            pads[i] = small if auto_pad == "SAME_UPPER" else total - small
            pads[nd + i] = total - pads[i]
    if not any(pads) and list(x_shape[2:]) == kernel and all(d == 1 for d in y_shape[2:]):
        # one window over the whole map (a global pool written as AveragePool, as the light
        # ResNet-50 has it): g / size broadcast back, not a depthwise ConvTranspose (12 ms
        # against ~1 at batch 13 on 2048 x 7 x 7)
        scaled = b.op("Mul", [gouts[0], b.const(1.0 / float(np.prod(kernel)))])
        return (b.op("Expand", [scaled, b.const(np.array(x_shape, dtype=np.int64), "shape", np.int64)]),)
    include = bool(int(node.attrs.get("count_include_pad", 0)))
    overhang = any((y_shape[2 + i] - 1) * strides[i] + kernel[i] > x_shape[2 + i] + pads[i] + pads[nd + i]
                   for i in range(nd))
    if not overhang and (include or not any(pads)):
        return (_spread(b, node, gouts[0], x_shape, y_shape, kernel, strides, pads, 1.0 / float(np.prod(kernel))),)
    counts = np.ones((1, 1, *y_shape[2:]))
    for i in range(nd):
        start = np.arange(y_shape[2 + i]) * strides[i] - pads[i]
        lo, hi = (-pads[i], x_shape[2 + i] + pads[nd + i]) if include else (0, x_shape[2 + i])
        # a window wholly in the padding (pads >= kernel) reads nothing and gets no gradient
        inside = np.maximum(np.minimum(start + kernel[i], hi) - np.maximum(start, lo), 1)
        counts = counts * inside.reshape((1, 1) + (1,) * i + (-1,) + (1,) * (nd - i - 1))
    scaled = b.op("Mul", [gouts[0], b.const((1.0 / counts).astype(np.float32), "avg_counts")])
    return (_spread(b, node, scaled, x_shape, y_shape, kernel, strides, pads, 1.0),)


def _spread(b: GraphBuilder, node: Node, g: str, x_shape: Sequence[int], y_shape: Sequence[int],
            kernel: list[int], strides: list[int], pads: list[int], weight: float) -> str:
    """Each output cotangent times ``weight`` added to every input position of its window: a
    depthwise ``ConvTranspose`` with a constant kernel in the pool's geometry, cut to X's size
    where ``ceil_mode`` windows run past the input."""
    nd = len(kernel)
    output_padding, crop = [], False
    for i in range(nd):
        covered = (y_shape[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[nd + i]
        extra = x_shape[2 + i] - covered
        if extra >= strides[i]:
            raise _unsupported(node, b.opset, f"has a geometry ConvTranspose cannot invert (axis {i})")
        output_padding.append(max(extra, 0))
        crop = crop or extra < 0
    channels = x_shape[1]
    w = np.full((channels, 1, *kernel), weight, dtype=np.float32)
    gx = b.op("ConvTranspose", [g, b.const(w, "avg_w")], group=channels, strides=strides, pads=pads,
              kernel_shape=kernel, output_padding=output_padding)
    if crop:
        gx = _slice(b, gx, [0] * nd, x_shape[2:], range(2, 2 + nd))
    return gx


@emitter("LRN")
def lrn_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """The numpy rule in onnxruntime ops. With ``D = bias + alpha/size * S``, ``S`` the sum of
    ``X^2`` over the channel window ``[c - floor((size-1)/2), c + ceil((size-1)/2)]``:
    ``gX = g * D^-beta - (2 alpha beta / size) * X * S'(g * X * D^(-beta-1))``, where ``S'`` sums
    over the transposed window. Both window sums are one 1x1 ``Conv`` with a 0/1 band matrix of
    ``C x C``: a few percent of the neighbouring convs' work at AlexNet's and GoogLeNet's LRN
    sizes. onnxruntime's own LRN kernel runs 4-D inputs and odd sizes only; others are refused
    here (the numpy engine covers them)."""
    x, g = node.inputs[0], gouts[0]
    x_shape = b.shape(x)
    channels, rank = x_shape[1], len(x_shape)
    size = int(node.attrs["size"])
    if size % 2 == 0 or rank != 4:
        raise _unsupported(node, b.opset, f"has {'an even size' if size % 2 == 0 else f'a {rank}-D input'}, "
                           "which onnxruntime's LRN kernel refuses")
    alpha = float(node.attrs.get("alpha", 1e-4))
    beta = float(node.attrs.get("beta", 0.75))
    bias = float(node.attrs.get("bias", 1.0))
    before, after = (size - 1) // 2, size // 2
    band = np.zeros((channels, channels), dtype=np.float32)  # band[c, c'] = 1 where c' is in c's window
    for c in range(channels):
        band[c, max(0, c - before) : min(channels, c + after + 1)] = 1.0

    def window_sum(v: str, matrix: np.ndarray) -> str:
        return b.op("Conv", [v, b.const(matrix.reshape(channels, channels, 1, 1), "lrn_band")])

    d = b.op("Add", [b.op("Mul", [window_sum(b.op("Mul", [x, x]), band), b.const(alpha / size)]), b.const(bias)])
    d_beta = b.op("Pow", [d, b.const(-beta)])
    t = b.op("Mul", [b.op("Mul", [g, x]), b.op("Div", [d_beta, d])])
    back = window_sum(t, np.ascontiguousarray(band.T))
    direct = b.op("Mul", [g, d_beta])
    return (b.op("Sub", [direct, b.op("Mul", [b.op("Mul", [x, back]), b.const(2.0 * alpha * beta / size)])]),)


def _reduced_axes(b: GraphBuilder, node: Node) -> list[int] | None:
    """The reduced axes, sorted and non-negative; ``None`` for a no-op (empty axes with
    ``noop_with_empty_axes``)."""
    rank = len(b.shape(node.inputs[0]))
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(a) for a in np.asarray(b.constant(node, 1, "axes")).ravel()]
    else:
        axes = [int(a) for a in node.attrs.get("axes") or []]
    if not axes:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return None
        axes = list(range(rank))
    return sorted(a % rank for a in axes)


@emitter("ReduceMean", "ReduceSum")
def reduce_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """``g`` (divided by the count for the mean) broadcast back over the reduced axes."""
    x_shape, y_shape = b.shape(node.inputs[0]), b.shape(node.outputs[0])
    axes = _reduced_axes(b, node)
    if axes is None:
        return (gouts[0],) + (None,) * (len(node.inputs) - 1)
    kept = tuple(1 if i in axes else d for i, d in enumerate(x_shape))
    g = b.reshape(gouts[0], kept) if tuple(y_shape) != kept else gouts[0]
    if node.op_type == "ReduceMean":
        g = b.op("Mul", [g, b.const(1.0 / float(np.prod([x_shape[a] for a in axes])))])
    gx = b.op("Expand", [g, b.const(np.array(x_shape, dtype=np.int64), "shape", np.int64)])
    return (gx,) + (None,) * (len(node.inputs) - 1)


@emitter("ReduceMax", "ReduceMin")
def reduce_extreme_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """To the elements equal to the extreme, split evenly among ties (the numpy rule)."""
    x = node.inputs[0]
    x_shape, y_shape = b.shape(x), b.shape(node.outputs[0])
    axes = _reduced_axes(b, node)
    if axes is None:
        return (gouts[0],) + (None,) * (len(node.inputs) - 1)
    kept = tuple(1 if i in axes else d for i, d in enumerate(x_shape))

    def keep(t: str) -> str:
        return b.reshape(t, kept) if tuple(y_shape) != kept else t

    hits = _float_mask(b, b.op("Equal", [x, keep(node.outputs[0])]))
    count = b.op("ReduceSum", [hits, _axes(b, axes)], keepdims=1)
    return (b.op("Mul", [hits, b.op("Div", [keep(gouts[0]), count])]),) + (None,) * (len(node.inputs) - 1)


#: Most elements of the one-hot matrix a Gather's gradient multiplies by (indices x axis size).
_GATHER_ONE_HOT = 1 << 24


@emitter("Gather")
def gather_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Constant indices: the cotangent summed into the gathered positions, as a MatMul with the
    one-hot matrix of the indices (``|indices| x axis size``) after moving the gathered axes
    last."""
    if b.needs(node, 1):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its indices")
    data = node.inputs[0]
    x_shape = b.shape(data)
    axis = int(node.attrs.get("axis", 0)) % len(x_shape)
    indices = np.asarray(b.constant(node, 1, "indices")).astype(np.int64) % x_shape[axis]
    n, dim = int(indices.size), int(x_shape[axis])
    if n * dim > _GATHER_ONE_HOT:
        raise _unsupported(node, b.opset, f"gathers {n} of {dim} entries, too many for a one-hot product")
    one_hot = np.zeros((n, dim), np.float32)
    one_hot[np.arange(n), indices.ravel()] = 1.0
    pre, post = int(np.prod(x_shape[:axis])), int(np.prod(x_shape[axis + 1:]))
    g = b.reshape(gouts[0], [pre, n, post])
    g = b.op("MatMul", [b.op("Transpose", [g], perm=[0, 2, 1]), b.const(one_hot, "gather_one_hot")])
    g = b.op("Transpose", [g], perm=[0, 2, 1])
    return (b.reshape(g, x_shape), None)


@emitter("Concat")
def concat_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    y_shape = b.shape(node.outputs[0])
    axis = int(node.attrs["axis"]) % len(y_shape)
    sizes = [b.shape(name)[axis] for name in node.inputs]
    if len(node.inputs) == 1:
        return (gouts[0],)
    parts = b.op("Split", [gouts[0], b.const(np.array(sizes, dtype=np.int64), "split", np.int64)],
                 n_out=len(sizes), axis=axis)
    return tuple(p if b.needs(node, k) else None for k, p in enumerate(parts))


@emitter("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout")
def reshape_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    return (b.reshape(gouts[0], b.shape(node.inputs[0])),) + (None,) * (len(node.inputs) - 1)


@emitter("Transpose")
def transpose_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    rank = len(b.shape(node.inputs[0]))
    perm = list(node.attrs.get("perm") or reversed(range(rank)))
    return (b.op("Transpose", [gouts[0]], perm=[int(i) for i in np.argsort(perm)]),)


@emitter("Gemm")
def gemm_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """``Y = alpha A' B' + beta C``; the input gradient ``alpha g B'^T`` (transposed back for transA)."""
    g = gouts[0]
    if b.needs(node, 1):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its B matrix")
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    bm = node.inputs[1]
    ga = None
    if b.needs(node, 0):
        if trans_a:
            ga = b.op("Gemm", [bm, g], alpha=alpha, transA=trans_b, transB=1)
        else:
            ga = b.op("Gemm", [g, bm], alpha=alpha, transA=0, transB=1 - trans_b)
    out: list[str | None] = [ga, None]
    if len(node.inputs) > 2:
        gc = None
        if b.needs(node, 2):
            gc = b.unbroadcast(b.op("Mul", [g, b.const(beta)]), b.shape(node.outputs[0]), b.shape(node.inputs[2]))
        out.append(gc)
    return tuple(out)


@emitter("MatMul")
def matmul_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    g, y_shape = gouts[0], b.shape(node.outputs[0])
    a, c = node.inputs
    sa, sc = b.shape(a), b.shape(c)
    if len(sa) < 2 or len(sc) < 2:
        raise _unsupported(node, b.opset, "has a 1-D operand")

    def t(name: str, rank: int) -> str:
        return b.op("Transpose", [name], perm=list(range(rank - 2)) + [rank - 1, rank - 2])

    ga = b.unbroadcast(b.op("MatMul", [g, t(c, len(sc))]), y_shape[:-2] + sa[-2:], sa) if b.needs(node, 0) else None
    gc = b.unbroadcast(b.op("MatMul", [t(a, len(sa)), g]), y_shape[:-2] + sc[-2:], sc) if b.needs(node, 1) else None
    return (ga, gc)


@emitter("Softmax")
def softmax_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Softmax-13 (models below opset 13 are rewritten to Flatten-Softmax-Reshape first)."""
    y, g = node.outputs[0], gouts[0]
    axis = int(node.attrs.get("axis", -1))
    dot = b.op("ReduceSum", [b.op("Mul", [g, y]), b.const(np.array([axis], dtype=np.int64), "axes", np.int64)],
               keepdims=1)
    return (b.op("Mul", [y, b.op("Sub", [g, dot])]),)


# ------------------------------------------------------------ more element-wise and shape ops
# Each rule is the numpy engine's (``backends/numpy/ops``) written in onnxruntime ops; the
# table-driven test (tests/backends/test_ortgrad_ops.py) checks every emitter against it.


@emitter("Neg")
def neg_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    return (b.op("Neg", [gouts[0]]),)


@emitter("Abs")
def abs_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """``g * sign(X)``, zero at 0."""
    return (b.op("Mul", [gouts[0], b.op("Sign", [node.inputs[0]])]),)


@emitter("Exp")
def exp_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    return (b.op("Mul", [gouts[0], node.outputs[0]]),)


@emitter("Log")
def log_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    return (b.op("Div", [gouts[0], node.inputs[0]]),)


@emitter("Sqrt")
def sqrt_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    return (b.op("Div", [b.op("Mul", [gouts[0], b.const(0.5)]), node.outputs[0]]),)


@emitter("Reciprocal")
def reciprocal_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    y = node.outputs[0]
    return (b.op("Neg", [b.op("Mul", [gouts[0], b.op("Mul", [y, y])])]),)


@emitter("Softplus")
def softplus_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    return (b.op("Mul", [gouts[0], b.op("Sigmoid", [node.inputs[0]])]),)


@emitter("Erf")
def erf_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    x = node.inputs[0]
    bell = b.op("Exp", [b.op("Neg", [b.op("Mul", [x, x])])])
    return (b.op("Mul", [gouts[0], b.op("Mul", [bell, b.const(2.0 / np.sqrt(np.pi))])]),)


@emitter("Elu", "Selu")
def exp_linear_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """``scale`` above 0; ``Y + scale * alpha`` at and below 0 (read off the output)."""
    if node.op_type == "Elu":
        alpha, scale = float(node.attrs.get("alpha", 1.0)), 1.0
    else:
        alpha = float(node.attrs.get("alpha", 1.67326319217681884765625))
        scale = float(node.attrs.get("gamma", 1.05070102214813232421875))
    x, y = node.inputs[0], node.outputs[0]
    below = _float_mask(b, b.op("LessOrEqual", [x, b.const(0.0)]))
    slope = b.op("Add", [b.op("Mul", [b.op("Add", [y, b.const(scale * alpha - scale)]), below]), b.const(scale)])
    return (b.op("Mul", [gouts[0], slope]),)


@emitter("PRelu")
def prelu_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """``g`` where ``X >= 0``, ``g * slope`` elsewhere; no slope gradient."""
    if b.needs(node, 1):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its slope")
    x, slope = node.inputs
    upper = _float_mask(b, b.op("GreaterOrEqual", [x, b.const(0.0)]))
    factor = b.op("Add", [slope, b.op("Mul", [b.op("Sub", [b.const(1.0), slope]), upper])])
    return (b.op("Mul", [gouts[0], factor]), None)


@emitter("Gelu")
def gelu_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Exact: ``Phi(x) + x phi(x)``; ``approximate="tanh"``: the derivative of the tanh form."""
    x = node.inputs[0]
    approximate = node.attrs.get("approximate", "none")
    if approximate == "tanh":
        c, k = float(np.sqrt(2.0 / np.pi)), 0.044715
        x2 = b.op("Mul", [x, x])
        inner = b.op("Mul", [b.op("Mul", [x, b.op("Add", [b.op("Mul", [x2, b.const(k)]), b.const(1.0)])]), b.const(c)])
        th = b.op("Tanh", [inner])
        half = b.op("Mul", [b.op("Add", [th, b.const(1.0)]), b.const(0.5)])
        dinner = b.op("Mul", [b.op("Add", [b.op("Mul", [x2, b.const(3 * k)]), b.const(1.0)]), b.const(c)])
        sech2 = b.op("Sub", [b.const(1.0), b.op("Mul", [th, th])])
        slope = b.op("Add", [half, b.op("Mul", [b.op("Mul", [b.op("Mul", [x, b.const(0.5)]), sech2]), dinner])])
    else:
        cdf = b.op("Mul", [b.op("Add", [b.op("Erf", [b.op("Mul", [x, b.const(1.0 / np.sqrt(2.0))])]), b.const(1.0)]),
                           b.const(0.5)])
        pdf = b.op("Mul", [b.op("Exp", [b.op("Mul", [b.op("Mul", [x, x]), b.const(-0.5)])]),
                           b.const(1.0 / np.sqrt(2.0 * np.pi))])
        slope = b.op("Add", [cdf, b.op("Mul", [x, pdf])])
    return (b.op("Mul", [gouts[0], slope]),)


@emitter("Cast")
def cast_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """A float32 -> float32 cast is the identity (the compiled backward runs float32 only)."""
    if int(node.attrs.get("to", 0)) != TensorProto.FLOAT:
        raise _unsupported(node, b.opset, "casts to another type than float32 on the gradient path")
    return (gouts[0],)


@emitter("Mean")
def mean_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    y_shape = b.shape(node.outputs[0])
    scaled = b.op("Mul", [gouts[0], b.const(1.0 / len(node.inputs))])
    return tuple(b.unbroadcast(scaled, y_shape, b.shape(name)) if b.needs(node, k) else None
                 for k, name in enumerate(node.inputs))


@emitter("Min", "Max")
def extremum_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """To the input(s) attaining the extremum, split evenly on ties (the numpy rule)."""
    g, y = gouts[0], node.outputs[0]
    if len(node.inputs) == 1:
        return (g,)
    y_shape = b.shape(y)
    hits = [_float_mask(b, b.op("Equal", [name, y])) for name in node.inputs]
    share = b.op("Div", [g, b.op("Sum", hits)])
    return tuple(b.unbroadcast(b.op("Mul", [share, hit]), y_shape, b.shape(name)) if b.needs(node, k) else None
                 for k, (name, hit) in enumerate(zip(node.inputs, hits)))


@emitter("Where")
def where_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    cond, x, other = node.inputs
    g, y_shape = gouts[0], b.shape(node.outputs[0])
    gx = gy = None
    if b.needs(node, 1):
        gx = b.unbroadcast(b.op("Mul", [g, _float_mask(b, cond)]), y_shape, b.shape(x))
    if b.needs(node, 2):
        gy = b.unbroadcast(b.op("Mul", [g, _float_mask(b, b.op("Not", [cond]))]), y_shape, b.shape(other))
    return (None, gx, gy)


@emitter("Pow")
def pow_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """``g * e * a^(e-1)`` for the base, ``g * y * log(a)`` for the exponent."""
    a, e = node.inputs
    g, y_shape = gouts[0], b.shape(node.outputs[0])
    if e in b.consts:
        ev = np.asarray(b.consts[e], dtype=np.float32)
        exponent, minus_one = b.const(ev, "pow_e"), b.const(ev - 1.0, "pow_e1")
    else:
        exponent = b.op("Cast", [e], to=TensorProto.FLOAT)
        minus_one = b.op("Sub", [exponent, b.const(1.0)])
    ga = ge = None
    if b.needs(node, 0):
        ga = b.unbroadcast(b.op("Mul", [g, b.op("Mul", [exponent, b.op("Pow", [a, minus_one])])]), y_shape, b.shape(a))
    if b.needs(node, 1):
        ge = b.unbroadcast(b.op("Mul", [g, b.op("Mul", [node.outputs[0], b.op("Log", [a])])]), y_shape, b.shape(e))
    return (ga, ge)


@emitter("LogSoftmax")
def log_softmax_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """LogSoftmax-13: ``g - softmax * sum(g)`` over the axis (models below opset 13 are
    rewritten to Flatten-LogSoftmax-Reshape first, as for Softmax)."""
    g, y = gouts[0], node.outputs[0]
    axis = int(node.attrs.get("axis", -1))
    total = b.op("ReduceSum", [g, _axes(b, [axis])], keepdims=1)
    return (b.op("Sub", [g, b.op("Mul", [b.op("Exp", [y]), total])]),)


@emitter("Expand")
def expand_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    return (b.unbroadcast(gouts[0], b.shape(node.outputs[0]), b.shape(node.inputs[0])), None)


@emitter("Tile")
def tile_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """The sum over the tiles: ``(r0, d0, r1, d1, ...)`` summed over the ``r`` axes."""
    x_shape = b.shape(node.inputs[0])
    repeats = [int(r) for r in np.asarray(b.constant(node, 1, "repeats")).ravel()]
    split = [d for pair in zip(repeats, x_shape) for d in pair]
    summed = b.op("ReduceSum", [b.reshape(gouts[0], split), _axes(b, range(0, 2 * len(x_shape), 2))], keepdims=0)
    return (b.reshape(summed, x_shape), None)


@emitter("Split")
def split_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """The pieces' cotangents concatenated back, zeros for pieces without one."""
    axis = int(node.attrs.get("axis", 0)) % len(b.shape(node.inputs[0]))
    parts = [g if g is not None else _zeros(b, b.shape(o)) for g, o in zip(gouts, node.outputs)]
    return (b.op("Concat", parts, axis=axis),) + (None,) * (len(node.inputs) - 1)


@emitter("Slice")
def slice_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Constant starts, ends, axes and steps: the cotangent put back where the slice read it,
    zeros elsewhere. Steps of 1 are one ``Pad``; another step spreads the cotangent by zero
    insertion (``Unsqueeze``, ``Pad`` of the new axis, ``Reshape``) before the ``Pad``, and a
    negative step reverses it first."""
    x_shape = b.shape(node.inputs[0])
    starts = [int(v) for v in np.asarray(b.constant(node, 1, "starts")).ravel()]
    ends = [int(v) for v in np.asarray(b.constant(node, 2, "ends")).ravel()]
    rank = len(x_shape)
    axes = ([int(v) % rank for v in np.asarray(b.constant(node, 3, "axes")).ravel()]
            if len(node.inputs) > 3 and node.inputs[3] else list(range(len(starts))))
    steps = ([int(v) for v in np.asarray(b.constant(node, 4, "steps")).ravel()]
             if len(node.inputs) > 4 and node.inputs[4] else [1] * len(starts))
    g = gouts[0]
    shape = list(b.shape(node.outputs[0]))
    pads = [0] * (2 * rank)
    for axis, start, end, step in zip(axes, starts, ends, steps):
        picked = range(*slice(start, end, step).indices(x_shape[axis]))
        if len(picked) == 0:
            return (_zeros(b, x_shape),) + (None,) * (len(node.inputs) - 1)
        if step < 0:  # read backwards: reverse the cotangent, then it is a forward slice
            g = _reverse(b, g, axis)
        first, stride, n = min(picked), abs(step), len(picked)
        span = n
        if stride > 1:  # zero insertion: (.., n, ..) -> (.., n, stride, ..) -> (.., n * stride, ..)
            g = b.op("Unsqueeze", [g, _axes(b, [axis + 1])])
            spread = [0] * (2 * (rank + 1))
            spread[rank + 1 + axis + 1] = stride - 1
            g = b.op("Pad", [g, _ints(b, spread, "pads")])
            span = n * stride
            shape[axis] = span
            g = b.reshape(g, shape)
        pads[axis], pads[rank + axis] = first, x_shape[axis] - first - span
        shape[axis] = x_shape[axis]
    if any(p < 0 for p in pads):  # the zeros inserted after the last element run past the end
        g = b.op("Pad", [g, _ints(b, [max(p, 0) for p in pads], "pads")])
        g = _slice(b, g, [0] * rank, x_shape, range(rank))
    elif any(pads):
        g = b.op("Pad", [g, _ints(b, pads, "pads")])
    return (g,) + (None,) * (len(node.inputs) - 1)


@emitter("Pad")
def pad_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Constant mode: the cotangent's interior (padding cut off, cropped borders given back as
    zeros). Reflect, edge and wrap modes (non-negative pads): axis by axis, the interior plus
    each padded row's cotangent added to the input row it copies (mirrored rows, the edge row,
    the rows from the other end)."""
    mode = node.attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise _unsupported(node, b.opset, f"pads in {mode!r} mode")
    if b.needs(node, 2):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its constant value")
    x_shape = b.shape(node.inputs[0])
    rank = len(x_shape)
    given = [int(v) for v in np.asarray(b.constant(node, 1, "pads")).ravel()]
    axes = ([int(v) % rank for v in np.asarray(b.constant(node, 3, "axes")).ravel()]
            if len(node.inputs) > 3 and node.inputs[3] else list(range(rank)))
    pads = [0] * (2 * rank)
    for k, axis in enumerate(axes):
        pads[axis], pads[rank + axis] = given[k], given[len(axes) + k]
    g = gouts[0]
    if mode != "constant":
        if any(p < 0 for p in pads):
            raise _unsupported(node, b.opset, f"crops (negative pads) in {mode!r} mode")
        shape = list(b.shape(node.outputs[0]))
        for axis in range(rank):
            longest = max(pads[axis], pads[rank + axis])
            if (mode == "reflect" and longest >= x_shape[axis]) or (mode == "wrap" and longest > x_shape[axis]):
                raise _unsupported(node, b.opset, f"pads axis {axis} by more than it holds in {mode!r} mode")
            if pads[axis] or pads[rank + axis]:
                g = _fold_pad(b, g, shape, axis, pads[axis], pads[rank + axis], x_shape[axis], mode)
                shape[axis] = x_shape[axis]
        return (g,) + (None,) * (len(node.inputs) - 1)
    crops = [max(-p, 0) for p in pads]
    if any(crops):
        g = b.op("Pad", [g, _ints(b, crops, "pads")])
    cut = [max(p, 0) for p in pads]
    if any(cut):
        y_shape = b.shape(node.outputs[0])
        ends = [y_shape[a] + crops[a] + crops[rank + a] - cut[rank + a] for a in range(rank)]
        g = _slice(b, g, cut[:rank], ends, range(rank))
    return (g,) + (None,) * (len(node.inputs) - 1)


def _fold_pad(b: GraphBuilder, g: str, shape: Sequence[int], axis: int, before: int, after: int, n: int,
              mode: str) -> str:
    """The VJP of padding ``axis`` (length ``n``) by ``before``/``after`` rows in ``mode``: the
    interior, plus each padded row added back to the input row it copied. ``shape`` is ``g``'s."""
    rank = len(shape)

    def piece(start: int, stop: int) -> str:
        return _slice(b, g, [start], [stop], [axis])

    def placed(t: str, at: int, length: int) -> str:
        """``t`` (``length`` rows along the axis) put at row ``at`` of an ``n``-row zero tensor."""
        widths = [0] * (2 * rank)
        widths[axis], widths[rank + axis] = at, n - at - length
        return b.op("Pad", [t, _ints(b, widths, "pads")])

    total = piece(before, before + n)
    extra: list[str] = []
    for side, count in (("before", before), ("after", after)):
        if not count:
            continue
        rows = piece(0, before) if side == "before" else piece(before + n, before + n + after)
        if mode == "edge":
            summed = b.op("ReduceSum", [rows, _axes(b, [axis])], keepdims=1)
            extra.append(placed(summed, 0 if side == "before" else n - 1, 1))
        elif mode == "reflect":  # row i before maps to input row count - i; row j after to n - 2 - j
            extra.append(placed(_reverse(b, rows, axis), 1 if side == "before" else n - 1 - count, count))
        else:  # wrap: row i before copies input row n - count + i; row j after copies row j
            extra.append(placed(rows, n - count if side == "before" else 0, count))
    return b.op("Sum", [total, *extra]) if extra else total


@emitter("ConvTranspose")
def conv_transpose_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Input gradient of a transposed convolution with constant weights: the ``Conv`` with the
    same weights, group, strides, dilations and pads (explicit, or those ``auto_pad`` and
    ``output_shape`` imply); its output has X's size."""
    if b.needs(node, 1) or b.needs(node, 2):
        raise _unsupported(node, b.opset, "needs a weight or bias gradient, which the compiled backward lacks")
    if node.inputs[1] not in b.consts:
        raise _unsupported(node, b.opset, "has non-constant weights")
    w_shape = b.shape(node.inputs[1])
    nd = len(w_shape) - 2
    kernel = list(node.attrs.get("kernel_shape") or w_shape[2:])
    strides = list(node.attrs.get("strides") or [1] * nd)
    dilations = list(node.attrs.get("dilations") or [1] * nd)
    pads = list(node.attrs.get("pads") or [0] * (2 * nd))
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        pads = [0] * (2 * nd)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER") or node.attrs.get("output_shape"):
        # the total padding the output size implies, split as onnxruntime does (SAME_LOWER and
        # an explicit output_shape without auto_pad put the odd one at the start, SAME_UPPER at
        # the end)
        x_shape, y_shape = b.shape(node.inputs[0]), b.shape(node.outputs[0])
        output_padding = list(node.attrs.get("output_padding") or [0] * nd)
        for i in range(nd):
            total = (strides[i] * (x_shape[2 + i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1
                     - y_shape[2 + i])
            head = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            pads[i], pads[nd + i] = head, total - head
    g = gouts[0]
    if any(p < 0 for p in pads):  # an output larger than the transposed conv covers: its extra rows get nothing
        y_shape = b.shape(node.outputs[0])
        starts = [max(-pads[i], 0) for i in range(nd)]
        ends = [y_shape[2 + i] - max(-pads[nd + i], 0) for i in range(nd)]
        g = _slice(b, g, starts, ends, range(2, 2 + nd))
        pads = [max(p, 0) for p in pads]
    attrs = {"group": int(node.attrs.get("group", 1)), "kernel_shape": kernel, "strides": strides,
             "dilations": dilations, "pads": pads}
    gx = b.op("Conv", [g, node.inputs[1]], **attrs)
    return (gx,) + (None,) * (len(node.inputs) - 1)


def _normalize_vjp(b: GraphBuilder, x: str, g: str, scale: str, axes: Sequence[int], eps: float) -> str:
    """``inv * (gs - mean(gs) - xh * mean(gs * xh))`` over ``axes``, ``gs = g * scale``,
    ``xh = (x - mean) * inv``, ``inv = 1 / sqrt(var + eps)``: the input gradient of a
    normalization with an affine scale."""
    centred = b.op("Sub", [x, _reduce_mean(b, x, axes)])
    var = _reduce_mean(b, b.op("Mul", [centred, centred]), axes)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(eps)])])])
    xh = b.op("Mul", [centred, inv])
    gs = b.op("Mul", [g, scale])
    inner = b.op("Sub", [b.op("Sub", [gs, _reduce_mean(b, gs, axes)]),
                         b.op("Mul", [xh, _reduce_mean(b, b.op("Mul", [gs, xh]), axes)])])
    return b.op("Mul", [inner, inv])


@emitter("InstanceNormalization")
def instance_norm_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    if b.needs(node, 1) or b.needs(node, 2):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its scale or bias")
    x_shape = b.shape(node.inputs[0])
    scale = b.reshape(node.inputs[1], [x_shape[1]] + [1] * (len(x_shape) - 2))
    axes = list(range(2, len(x_shape)))
    eps = float(node.attrs.get("epsilon", 1e-5))
    return (_normalize_vjp(b, node.inputs[0], gouts[0], scale, axes, eps), None, None)


@emitter("LayerNormalization")
def layer_norm_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    if any(b.needs(node, k) for k in (1, 2)):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its scale or bias")
    if gouts[0] is None or any(g is not None for g in gouts[1:]):
        raise _unsupported(node, b.opset, "has its mean or inverse deviation on the gradient path")
    rank = len(b.shape(node.inputs[0]))
    axis = int(node.attrs.get("axis", -1)) % rank
    eps = float(node.attrs.get("epsilon", 1e-5))
    gx = _normalize_vjp(b, node.inputs[0], gouts[0], node.inputs[1], list(range(axis, rank)), eps)
    return (gx,) + (None,) * (len(node.inputs) - 1)


@emitter("GlobalMaxPool")
def global_max_pool_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """To the first maximum of each map (row-major), as the numpy rule and MaxPool."""
    x_shape = b.shape(node.inputs[0])
    flat_shape = [x_shape[0], x_shape[1], int(np.prod(x_shape[2:]))]
    first = b.op("ArgMax", [b.reshape(node.inputs[0], flat_shape)], axis=2, keepdims=1)
    spread = b.op("ScatterElements", [_zeros(b, flat_shape), first, b.reshape(gouts[0], flat_shape[:2] + [1])], axis=2)
    return (b.reshape(spread, x_shape),)


@emitter("Resize")
def resize_vjp(b: GraphBuilder, node: Node, gouts: Grads) -> Grads:
    """Resize is separable (nearest, linear and cubic interpolate axis by axis), so at static
    shapes it is ``y = R_h x R_w^T`` on the last two axes for two constant matrices. Each ``R``
    is read off onnxruntime itself: the same node, run on a batch of unit vectors along that
    axis. The input gradient is then ``R_h^T g R_w``: two MatMuls. Resizing other axes,
    ``tf_crop_and_resize`` and non-constant scales or sizes are refused."""
    x_shape, y_shape = b.shape(node.inputs[0]), b.shape(node.outputs[0])
    rank = len(x_shape)
    mode = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    if mode == "tf_crop_and_resize":
        raise _unsupported(node, b.opset, "crops (tf_crop_and_resize)")
    if any(b.needs(node, k) for k in range(1, len(node.inputs))):
        raise _unsupported(node, b.opset, "needs a gradient w.r.t. its roi, scales or sizes")
    resized = [a for a in range(rank) if x_shape[a] != y_shape[a]]
    if any(a < rank - 2 for a in resized) or rank < 3:
        raise _unsupported(node, b.opset, "resizes an axis other than the last two")
    scales = np.asarray(b.constant(node, 2, "scales"), np.float32).ravel() if (
        len(node.inputs) > 2 and node.inputs[2]) else np.zeros(0, np.float32)
    if len(node.inputs) > 3 and node.inputs[3]:
        np.asarray(b.constant(node, 3, "sizes"))  # refuses a computed size
    if node.attrs.get("axes") is not None:
        raise _unsupported(node, b.opset, "gives its scales or sizes for some axes only (axes)")
    attrs = dict(node.attrs)
    g = gouts[0]
    for a in resized:
        matrix = _resize_matrix(b, node, attrs, scales, rank, a, x_shape[a], y_shape[a])  # (out, in)
        if a == rank - 1:
            g = b.op("MatMul", [g, b.const(matrix, "resize_w")])
        else:
            g = b.op("MatMul", [b.const(np.ascontiguousarray(matrix.T), "resize_h"), g])
    return (g,) + (None,) * (len(node.inputs) - 1)


def _resize_matrix(b: GraphBuilder, node: Node, attrs: Mapping[str, Any], scales: np.ndarray, rank: int,
                   axis: int, n_in: int, n_out: int) -> np.ndarray:
    """``R`` (``n_out x n_in``) with ``y = R x`` along ``axis``: the node run in onnxruntime on the
    ``n_in`` unit vectors (the batch axis enumerates them; every other axis has size 1 and is not
    resized), with the node's own scale for that axis (or its size), so the coordinate mapping
    is the node's."""
    import onnxruntime as ort

    shape_in = [1] * rank
    shape_in[0], shape_in[axis] = n_in, n_in
    basis = np.zeros(shape_in, dtype=np.float32)
    index = [slice(None)] * rank
    for j in range(n_in):
        index[0], index[axis] = j, j
        basis[tuple(index)] = 1.0
    inputs = ["x", "roi"]
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    if scales.size:
        unit = np.ones(rank, np.float32)
        unit[axis] = scales[axis]
        inputs.append("scales")
        inits.append(numpy_helper.from_array(unit, "scales"))
    else:
        sizes = np.ones(rank, np.int64)
        sizes[0], sizes[axis] = n_in, n_out
        inputs += ["", "sizes"]
        inits.append(numpy_helper.from_array(sizes, "sizes"))
    graph = helper.make_graph(
        [helper.make_node("Resize", inputs, ["y"], **attrs)], "resize_basis",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        (y,) = ort.InferenceSession(model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"]).run(None, {"x": basis})
    except Exception as e:  # onnxruntime raises its own types
        raise _unsupported(node, b.opset, f"could not be run on unit vectors ({str(e).strip()[:120]})") from e
    y = np.asarray(y).reshape(n_in, -1)
    if y.shape[1] != n_out:
        raise _unsupported(node, b.opset, "does not resize its axes independently")
    return np.ascontiguousarray(y.T)


# ------------------------------------------------------------------- upgrading older opsets

#: Ops whose versions between opset 9 and 16 differ only in types or in defaults that keep the
#: float inference semantics (checked against the onnx operator changelog).
