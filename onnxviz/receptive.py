"""Receptive fields of every tensor, computed from the graph alone.

Along one spatial axis a tensor's field is three integers: output index ``i`` sees the input
pixels ``offset + i * stride .. offset + i * stride + size - 1`` (``offset`` may be negative:
the field reaches into the padding). An op with kernel ``k``, stride ``s``, dilation ``d`` and
leading pad ``p`` applied to a tensor with field ``(size, stride, offset)`` gives::

    size'   = size + (k - 1) * d * stride
    stride' = stride * s
    offset' = offset - p * stride

(the standard composition, e.g. Araujo et al., "Computing Receptive Fields of Convolutional
Neural Networks", Distill 2019). Composing it node by node in topological order gives every
tensor's field; where branches meet (Add, Sum, Concat, Mul of two tensors) the field is the
union of the branches' fields.

Rules by op (the ``note`` of a result says which approximations were taken on its path):

* Conv, MaxPool, AveragePool, LpPool: the formula above (``auto_pad`` SAME_* needs the tensor's
  spatial size, which comes from shape inference); ``ceil_mode`` changes only the last output
  index, not any field.
* Identity-like ops (activations, BatchNormalization, Dropout, Clip, Cast, LRN, channel-wise
  Softmax, elementwise ops with constants, Split/Slice on the channel axis ...): unchanged.
* Fan-in (Add, Sum, Mul, Concat on channels, ...): the bounding box of the branches' fields.
  Exact when the strides agree and the branch fields overlap or touch; otherwise the box is
  reported with ``exact=False`` and a note (with different strides the box is the union at
  output index 0, stepped by the largest stride).
* Pad (constant mode): ``offset' = offset - pad_begin * stride``; reflect/edge pads copy
  interior pixels, so near the border the box over-covers (``exact=False``).
* Slice with constant non-negative starts on a spatial axis: ``offset' = offset + start *
  stride``, ``stride' = stride * step``; SpaceToDepth(b) is a b x b stride-b window.
* ConvTranspose: approximated by the bounding box over output positions (the true field
  varies with the output position modulo the stride), ``exact=False``; refused when the
  stride does not divide the field's stride.
* Global pools, Gemm, MatMul, InstanceNormalization, reductions over a spatial axis, channel
  mixing ops: the whole image (``stride == (0, 0)``: every output index sees the same field).
  Flatten/Reshape that merge the spatial axes: the whole image, ``exact=False``.
* Transpose moves the spatial axes (an NHWC input transposed to NCHW keeps its field).
* Resize/Upsample, DepthToSpace, convolutions along a spatial axis the analysis does not know,
  and ops without a rule: refused; the tensor is listed in :attr:`ReceptiveFields.refused`
  with the reason, and so is everything computed from it (except whole-image ops).

"Exact" means the box is the tightest box around the pixels the unit depends on through the
graph's structure (with generic weights); dilation leaves holes inside an exact box.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, OnnxvizError, TargetError
from .graph import Node
from .inputs import detect_layout
from .model import Model

__all__ = ["ReceptiveField", "ReceptiveFields", "field_box", "receptive_field", "receptive_fields"]

Pair = tuple[int, int]


@dataclass(frozen=True)
class ReceptiveField:
    """Field of every spatial position of one tensor, in input-image pixels, per axis (h, w).

    Output index ``(y, x)`` sees rows ``offset[0] + y * stride[0]`` .. ``+ size[0] - 1`` and the
    same for columns. ``stride == (0, 0)`` marks a whole-image field (global pooling, Gemm):
    every index sees the entire input, ``size`` is the input size (``(0, 0)`` when unknown).
    """

    size: Pair
    stride: Pair
    offset: Pair
    exact: bool = True
    note: str = ""

    @property
    def is_full(self) -> bool:
        return self.stride == (0, 0)


def field_box(rf: ReceptiveField, y: int, x: int, input_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the field of index ``(y, x)`` clipped to the image, half-open
    (``image[y0:y1, x0:x1]``)."""
    h, w = int(input_hw[0]), int(input_hw[1])
    if rf.is_full:
        return 0, h, 0, w
    y0 = rf.offset[0] + int(y) * rf.stride[0]
    x0 = rf.offset[1] + int(x) * rf.stride[1]
    y1, x1 = y0 + rf.size[0], x0 + rf.size[1]
    return max(y0, 0), min(max(y1, 0), h), max(x0, 0), min(max(x1, 0), w)


@dataclass(frozen=True)
class ReceptiveFields:
    """The fields of every tensor computed from one image input (see the module docstring).

    ``fields`` has one entry per tensor with a field; ``refused`` maps the others to the reason.
    Tensors that do not depend on the input (weights, shapes) are in neither. ``spatial_axes``
    gives, per tensor with a field, its (h, w) axes ((2, 3) for NCHW tensors, (1, 2) for NHWC
    ones) or ``None`` when it has none (whole-image fields).
    """

    input_name: str
    input_size: Pair | None
    fields: Mapping[str, ReceptiveField]
    refused: Mapping[str, str] = field(default_factory=dict)
    spatial_axes: Mapping[str, tuple[int, int] | None] = field(default_factory=dict)

    def __getitem__(self, tensor: str) -> ReceptiveField:
        if tensor in self.fields:
            return self.fields[tensor]
        if tensor in self.refused:
            raise TargetError(
                f"tensor {tensor!r} has no fixed receptive field: {self.refused[tensor]}",
                hint="choose a tensor before the op named here",
            )
        raise TargetError(
            f"tensor {tensor!r} does not depend on input {self.input_name!r}",
            hint="name an intermediate tensor computed from the image (onnxviz inspect lists them)",
        )

    def __contains__(self, tensor: object) -> bool:
        return tensor in self.fields

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)


# --------------------------------------------------------------------------------------------
# Internal per-tensor state: the field plus where the spatial axes sit in the tensor.


@dataclass(frozen=True)
class _State:
    rf: ReceptiveField
    axes: tuple[int, int] | None  # (h axis, w axis) of the tensor; None for non-spatial tensors
    rank: int | None


class _Refused(Exception):
    pass


_IDENTITY = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
        "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "ThresholdedRelu", "Exp", "Log", "Abs", "Neg",
        "Sqrt", "Reciprocal", "Erf", "Sin", "Cos", "Clip", "Dropout", "Identity", "Cast", "CastLike",
        "BatchNormalization", "LRN", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf",
        "QuantizeLinear", "DequantizeLinear",
    }
)
_ELEMENTWISE = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean", "Where", "And", "Or", "Xor",
     "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Mod", "BitShift"}
)
_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_GLOBAL = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Gemm", "MatMul",
                     "InstanceNormalization", "LayerNormalization", "MeanVarianceNormalization"})
_REDUCE = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1",
                     "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})
_NOT_FIXED = {
    "Resize": "Resize changes the sampling grid by a factor that is not a fixed kernel",
    "Upsample": "Upsample changes the sampling grid by a factor that is not a fixed kernel",
    "DepthToSpace": "DepthToSpace interleaves channels into space: no single field per position",
    "GridSample": "GridSample reads input positions that depend on the data",
    "RoiAlign": "RoiAlign reads regions that depend on the data",
}


def receptive_fields(
    model: Model, input_name: str | None = None, *, input_size: Sequence[int] | None = None
) -> ReceptiveFields:
    """Receptive fields of every tensor computed from the image input ``input_name``.

    ``input_size`` ``(H, W)`` is needed only for models with dynamic spatial dims that use
    ``auto_pad`` SAME or Reshape (it fills in the shapes) and to size whole-image fields.
    """
    info = model.input(input_name)
    layout = detect_layout(info)
    if layout is None:
        raise InputError(
            f"input {info.name!r} with shape {info.shape_str()} is not an image input (rank 4)",
            hint="receptive fields are defined for NCHW or NHWC image inputs",
        )
    axes = (2, 3) if layout == "NCHW" else (1, 2)
    shape = info.shape or ()
    hw: Pair | None = None
    if input_size is not None:
        hw = (int(input_size[0]), int(input_size[1]))
    elif all(isinstance(shape[a], int) and shape[a] > 0 for a in axes):  # type: ignore[operator]
        hw = (int(shape[axes[0]]), int(shape[axes[1]]))  # type: ignore[arg-type]
    return _Analysis(model, info.name, axes, hw).run()


def receptive_field(model: Model, tensor: str, input_name: str | None = None, **kwargs: Any) -> ReceptiveField:
    """The field of one tensor (see :func:`receptive_fields`); raises TargetError with the
    reason when it has none."""
    return receptive_fields(model, input_name, **kwargs)[tensor]


class _Analysis:
    def __init__(self, model: Model, input_name: str, axes: tuple[int, int], hw: Pair | None) -> None:
        self.model = model
        self.graph = model.graph
        self.input_name = input_name
        self.hw = hw
        self.states: dict[str, _State] = {}
        self.refused: dict[str, str] = {}
        self._shapes: dict[str, Any] | None = None
        start = ReceptiveField((1, 1), (1, 1), (0, 0), True, "")
        self.states[input_name] = _State(start, axes, 4)

    # ---------------------------------------------------------------- shapes (lazy)
    def shape(self, name: str) -> tuple[Any, ...] | None:
        if self._shapes is None:
            shapes: dict[str, tuple[int, ...]] = {}
            info = self.model.input(self.input_name)
            if self.hw is not None and info.shape is not None and not info.is_static:
                st = self.states[self.input_name]
                dims = [d if isinstance(d, int) and d > 0 else 1 for d in info.shape]
                dims[st.axes[0]], dims[st.axes[1]] = self.hw  # type: ignore[index]
                shapes[self.input_name] = tuple(dims)
            try:
                self._shapes = dict(self.model.infer_shapes(shapes))
            except OnnxvizError:  # a shape that does not fit: leave the shapes unknown
                self._shapes = {}
        t = self._shapes.get(name)
        return None if t is None else t.shape

    def spatial_size(self, name: str, axes: tuple[int, int]) -> Pair | None:
        s = self.shape(name)
        if s is None or len(s) <= max(axes):
            return None
        h, w = s[axes[0]], s[axes[1]]
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            return h, w
        return None

    # ---------------------------------------------------------------- main loop
    def run(self) -> ReceptiveFields:
        for node in self.graph.nodes:
            data = [i for i in node.inputs if i and (i in self.states or i in self.refused)]
            if not data:
                continue
            outs = [o for o in node.outputs if o]
            try:
                state = self.apply(node, data)
            except _Refused as e:
                for o in outs:
                    self.refused[o] = str(e)
                continue
            if state is None:
                continue
            for o in outs:
                self.states[o] = state
        fields = {k: v.rf for k, v in self.states.items()}
        axes = {k: v.axes for k, v in self.states.items()}
        return ReceptiveFields(self.input_name, self.hw, fields, dict(self.refused), axes)

    def get(self, name: str) -> _State:
        if name in self.refused:
            raise _Refused(self.refused[name])
        return self.states[name]

    def full(self, note: str = "", exact: bool = True) -> _State:
        size = self.hw or (0, 0)
        return _State(ReceptiveField(size, (0, 0), (0, 0), exact, note), None, None)

    # ---------------------------------------------------------------- rules
    def apply(self, node: Node, data: list[str]) -> _State | None:
        op = node.op_type
        where = f"{op} node {node.label!r}"
        if node.domain not in ("", "ai.onnx"):
            raise _Refused(f"{where} (domain {node.domain!r}) has no receptive-field rule")
        if op in _NOT_FIXED:
            raise _Refused(f"{_NOT_FIXED[op]} ({where})")
        if op in ("Shape", "Size"):
            return None  # shape values carry no field
        first = node.inputs[0]
        if op == "MatMul" and first in self.states and node.inputs[1] not in self.graph.dynamic:
            st = self.states[first]
            if st.axes is not None and not st.rf.is_full and (st.rank or 4) - 1 not in st.axes:
                return st  # a 1x1 convolution written as MatMul over the channel axis (NHWC)
        if op in _GLOBAL:
            return self.full()  # mixes every position (or already whole-image)
        if op in ("Flatten", "Reshape"):
            return self.reshape(node, self.get(first), where)
        if first not in data and op not in _ELEMENTWISE and op != "Concat":
            raise _Refused(f"{where} takes the image-dependent tensor as a parameter input")
        if op in _IDENTITY:
            return self.get(first)
        if op in _ELEMENTWISE:
            return self.union([self.get(i) for i in data], node, where)
        if op == "Concat":
            states = [self.get(i) for i in data]
            self.check_not_spatial_axis(states, node.attrs.get("axis"), node, where, "concatenates along")
            return self.union(states, node, where)
        if op in ("Softmax", "LogSoftmax", "Hardmax"):
            st = self.get(first)
            default = 1 if self.graph.opset < 13 else -1
            axis = int(node.attrs.get("axis", default))
            if st.axes is None:
                return st
            rank = st.rank or 4
            axis = axis % rank
            if self.graph.opset < 13 and (axis <= st.axes[0] or axis <= st.axes[1]):
                return self.full(f"{where} normalizes over a spatial axis")
            if axis in st.axes:
                return self.full(f"{where} normalizes over a spatial axis")
            return st
        if op in ("Split",):
            st = self.get(first)
            self.check_not_spatial_axis([st], node.attrs.get("axis", 0), node, where, "splits along")
            return st
        if op in ("Conv", "ConvInteger", "QLinearConv") or op in _POOLS:
            return self.window(node, self.get(first), where)
        if op == "ConvTranspose":
            return self.conv_transpose(node, self.get(first), where)
        if op == "Pad":
            return self.pad(node, self.get(first), where)
        if op == "Slice":
            return self.slice(node, self.get(first), where)
        if op == "SpaceToDepth":
            st = self.get(first)
            self.require_nchw(st, where)
            b = int(node.attrs["blocksize"])
            return self.compose(st, (b, b), (b, b), (1, 1), (0, 0), where)
        if op == "Transpose":
            st = self.get(first)
            if st.axes is None:
                return st
            rank = st.rank or 4
            perm = list(node.attrs.get("perm", list(reversed(range(rank)))))
            return _State(st.rf, (perm.index(st.axes[0]), perm.index(st.axes[1])), rank)
        if op in _REDUCE:
            return self.reduce(node, self.get(first), where)
        if op in ("Squeeze", "Unsqueeze"):
            return self.squeeze(node, self.get(first), where)
        raise _Refused(f"{where} has no receptive-field rule")

    # ---------------------------------------------------------------- helpers
    def require_nchw(self, st: _State, where: str) -> None:
        if st.axes != (2, 3) or (st.rank not in (None, 4)):
            raise _Refused(f"{where} runs on a tensor whose spatial axes are {st.axes}, not NCHW (2, 3)")

    def check_not_spatial_axis(self, states: list[_State], axis: Any, node: Node, where: str, verb: str) -> None:
        for st in states:
            if st.axes is None or axis is None:
                continue
            a = int(axis) % (st.rank or 4)
            if a in st.axes:
                raise _Refused(f"{where} {verb} a spatial axis: positions do not have one field")

    def compose(
        self, st: _State, k: Pair, s: Pair, d: Pair, p: Pair, where: str, *, note: str = "", exact: bool = True
    ) -> _State:
        rf = st.rf
        if rf.is_full:
            return st
        size = tuple(rf.size[a] + (k[a] - 1) * d[a] * rf.stride[a] for a in range(2))
        stride = tuple(rf.stride[a] * s[a] for a in range(2))
        offset = tuple(rf.offset[a] - p[a] * rf.stride[a] for a in range(2))
        new = ReceptiveField(size, stride, offset, rf.exact and exact, _join(rf.note, note))  # type: ignore[arg-type]
        return _State(new, st.axes, st.rank)

    def window(self, node: Node, st: _State, where: str) -> _State:
        if st.rf.is_full:
            return st
        self.require_nchw(st, where)
        attrs = node.attrs
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            wname = node.inputs[3] if node.op_type == "QLinearConv" else node.inputs[1]
            ks = attrs.get("kernel_shape")
            if ks is None:
                w = self.graph.constants.get(wname)
                wshape = w.shape if w is not None else self.shape(wname)
                if wshape is None or len(wshape) != 4 or not all(isinstance(v, int) for v in wshape[2:]):
                    raise _Refused(f"{where}: the kernel size is unknown (no kernel_shape, weight shape unknown)")
                ks = list(wshape[2:])
        else:
            ks = attrs["kernel_shape"]
        if len(ks) != 2:
            raise _Refused(f"{where} is a {len(ks)}-D window; only 2-D windows have a rule")
        k = (int(ks[0]), int(ks[1]))
        s = tuple(int(v) for v in attrs.get("strides", [1, 1]))
        d = tuple(int(v) for v in attrs.get("dilations", [1, 1]))
        auto_pad = attrs.get("auto_pad", "NOTSET")
        if auto_pad in ("NOTSET", ""):
            pads = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
            p = (pads[0], pads[1])
        elif auto_pad == "VALID":
            p = (0, 0)
        else:
            hw = self.spatial_size(node.inputs[0], st.axes)  # type: ignore[arg-type]
            if hw is None:
                raise _Refused(f"{where} uses auto_pad={auto_pad} on a tensor of unknown size; give input_size")
            p = tuple(_same_pad(hw[a], k[a], s[a], d[a], auto_pad) for a in range(2))  # type: ignore[assignment]
        return self.compose(st, k, s, d, p, where)  # type: ignore[arg-type]

    def conv_transpose(self, node: Node, st: _State, where: str) -> _State:
        if st.rf.is_full:
            return st
        self.require_nchw(st, where)
        attrs = node.attrs
        if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID"):
            raise _Refused(f"{where} uses auto_pad={attrs['auto_pad']}: refused")
        ks = attrs.get("kernel_shape")
        if ks is None:
            w = self.graph.constants.get(node.inputs[1])
            if w is None or w.ndim != 4:
                raise _Refused(f"{where}: the kernel size is unknown")
            ks = list(w.shape[2:])
        k = [int(v) for v in ks]
        s = [int(v) for v in attrs.get("strides", [1, 1])]
        d = [int(v) for v in attrs.get("dilations", [1, 1])]
        pads = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
        rf = st.rf
        size, stride, offset = [], [], []
        for a in range(2):
            if rf.stride[a] % s[a]:
                raise _Refused(
                    f"{where} upsamples by {s[a]} a tensor whose field stride is {rf.stride[a]}: "
                    "the output positions have no common stride in input pixels"
                )
            j = rf.stride[a] // s[a]
            stride.append(j)
            offset.append(rf.offset[a] + (pads[a] - (k[a] - 1) * d[a]) * j)
            size.append(rf.size[a] + (k[a] - 1) * d[a] * j)
        note = f"{where}: bounding box over output positions (approximate)"
        new = ReceptiveField(tuple(size), tuple(stride), tuple(offset), False, _join(rf.note, note))  # type: ignore[arg-type]
        return _State(new, st.axes, st.rank)

    def pad(self, node: Node, st: _State, where: str) -> _State:
        if st.rf.is_full or st.axes is None:
            return st
        if "pads" in node.attrs:
            pads = [int(v) for v in node.attrs["pads"]]
        else:
            value = self.graph.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
            if value is None:
                raise _Refused(f"{where} has pads computed at run time")
            pads = [int(v) for v in np.asarray(value).ravel()]
        axes_in = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] else None
        rank = st.rank or len(pads) // 2
        if axes_in:
            ax = self.graph.constants.get(axes_in)
            if ax is None:
                raise _Refused(f"{where} has axes computed at run time")
            axes = [int(a) % rank for a in np.asarray(ax).ravel()]
        else:
            axes = list(range(len(pads) // 2))
        # pads = [begin of each axis..., end of each axis...]; only spatial begins move the field
        begin = {a: pads[i] for i, a in enumerate(axes)}
        p = (begin.get(st.axes[0], 0), begin.get(st.axes[1], 0))
        mode = node.attrs.get("mode", "constant")
        exact = mode == "constant" or p == (0, 0)
        note = "" if exact else f"{where} pads in {mode} mode: near the border the box over-covers"
        return self.compose(st, (1, 1), (1, 1), (1, 1), p, where, note=note, exact=exact)

    def slice(self, node: Node, st: _State, where: str) -> _State:
        if st.rf.is_full or st.axes is None:
            return st
        rank = st.rank or 4
        if "starts" in node.attrs:  # opset < 10
            starts = list(node.attrs["starts"])
            axes = list(node.attrs.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        else:
            c = self.graph.constants

            def const(i: int) -> list[int] | None:
                if len(node.inputs) <= i or not node.inputs[i]:
                    return None
                v = c.get(node.inputs[i])
                if v is None:
                    raise _Refused(f"{where} has slice bounds computed at run time")
                return [int(x) for x in np.asarray(v).ravel()]

            starts = const(1) or []
            axes = const(3) or list(range(len(starts)))
            steps = const(4) or [1] * len(starts)
        start = [0, 0]
        step = [1, 1]
        for a, s0, sp in zip(axes, starts, steps):
            a = int(a) % rank
            if a in st.axes:
                i = st.axes.index(a)
                if s0 < 0 or sp < 1:
                    raise _Refused(f"{where} slices a spatial axis from the end or backwards")
                start[i], step[i] = int(s0), int(sp)
        if start == [0, 0] and step == [1, 1]:
            return st
        return self.compose(st, (1, 1), tuple(step), (1, 1), (-start[0], -start[1]), where)  # type: ignore[arg-type]

    def reduce(self, node: Node, st: _State, where: str) -> _State:
        if st.axes is None or st.rf.is_full:
            return st
        rank = st.rank or 4
        if "axes" in node.attrs:
            axes = [int(a) % rank for a in node.attrs["axes"]]
        elif len(node.inputs) > 1 and node.inputs[1]:
            v = self.graph.constants.get(node.inputs[1])
            if v is None:
                raise _Refused(f"{where} reduces over axes computed at run time")
            axes = [int(a) % rank for a in np.asarray(v).ravel()]
        else:
            axes = list(range(rank))
        if any(a in st.axes for a in axes):
            return self.full()
        if int(node.attrs.get("keepdims", 1)):
            return st
        shift = lambda a: a - sum(1 for r in axes if r < a)
        return _State(st.rf, (shift(st.axes[0]), shift(st.axes[1])), rank - len(axes))

    def squeeze(self, node: Node, st: _State, where: str) -> _State:
        if st.axes is None:
            return st
        rank = st.rank
        if "axes" in node.attrs:
            axes = list(node.attrs["axes"])
        elif len(node.inputs) > 1 and node.inputs[1]:
            v = self.graph.constants.get(node.inputs[1])
            if v is None:
                raise _Refused(f"{where} has axes computed at run time")
            axes = [int(a) for a in np.asarray(v).ravel()]
        else:
            raise _Refused(f"{where} squeezes unnamed axes")
        if rank is None:
            raise _Refused(f"{where} on a tensor of unknown rank")
        h, w = st.axes
        if node.op_type == "Squeeze":
            axes = [a % rank for a in axes]
            if h in axes or w in axes:
                return self.full()
            h -= sum(1 for a in axes if a < st.axes[0])
            w -= sum(1 for a in axes if a < st.axes[1])
            return _State(st.rf, (h, w), rank - len(axes))
        new_rank = rank + len(axes)
        kept = [i for i in range(new_rank) if i not in {a % new_rank for a in axes}]
        return _State(st.rf, (kept[h], kept[w]), new_rank)

    def reshape(self, node: Node, st: _State, where: str) -> _State:
        if st.axes is None or st.rf.is_full:
            return st
        out = self.shape(node.outputs[0])
        src = self.shape(node.inputs[0])
        if out is not None and src is not None and node.op_type == "Reshape":
            rank_in, rank_out = len(src), len(out)
            keeps_hw = rank_out >= 2 and tuple(out[-2:]) == tuple(src[-2:])
            known = all(isinstance(v, int) and v > 0 for v in src[-2:])
            if st.axes == (rank_in - 2, rank_in - 1) and keeps_hw and known:
                return _State(st.rf, (rank_out - 2, rank_out - 1), rank_out)
        return self.full(f"{where} merges the spatial axes: the whole image is taken as the field", exact=False)

    def combine_full(self, states: list[_State]) -> _State:
        exact = all(s.rf.exact for s in states)
        note = _join(*(s.rf.note for s in states))
        return self.full(note, exact)

    def union(self, states: list[_State], node: Node, where: str) -> _State:
        spatial = [s for s in states if s.axes is not None and not s.rf.is_full]
        if len(spatial) < len(states):
            # a whole-image branch (e.g. squeeze-and-excitation scales) makes the union whole
            if not spatial:
                return self.combine_full(states)
            return self.combine_full([s for s in states if s not in spatial])
        rank = max(s.rank or 4 for s in spatial)
        aligned = []
        for s in spatial:
            shift = rank - (s.rank or 4)
            aligned.append((s.axes[0] + shift, s.axes[1] + shift))  # type: ignore[index]
        if len(set(aligned)) > 1:
            raise _Refused(f"{where} combines tensors whose spatial axes differ {sorted(set(aligned))}")
        if len(spatial) == 1:
            return _State(spatial[0].rf, aligned[0], rank)
        rfs = [s.rf for s in spatial]
        exact = all(r.exact for r in rfs)
        notes = [r.note for r in rfs]
        size, stride, offset = [], [], []
        for a in range(2):
            strides = {r.stride[a] for r in rfs}
            start = min(r.offset[a] for r in rfs)
            end = max(r.offset[a] + r.size[a] for r in rfs)
            if len(strides) > 1:
                exact = False
                notes.append(f"{where} joins branches with strides {sorted(strides)}: box at index 0, largest stride")
            else:
                # Exact only if the branch intervals cover the box without a gap.
                spans = sorted((r.offset[a], r.offset[a] + r.size[a]) for r in rfs)
                reach = spans[0][1]
                for lo, hi in spans[1:]:
                    if lo > reach:
                        exact = False
                        notes.append(f"{where} joins branches whose fields do not overlap: bounding box")
                        break
                    reach = max(reach, hi)
            size.append(end - start)
            stride.append(max(strides))
            offset.append(start)
        rf = ReceptiveField(tuple(size), tuple(stride), tuple(offset), exact, _join(*notes))  # type: ignore[arg-type]
        return _State(rf, aligned[0], rank)


def _same_pad(n: int, k: int, s: int, d: int, mode: str) -> int:
    out = math.ceil(n / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2 if mode == "SAME_UPPER" else total - total // 2


def _join(*notes: str) -> str:
    seen: list[str] = []
    for n in notes:
        for part in n.split("; ") if n else ():
            if part and part not in seen:
                seen.append(part)
    return "; ".join(seen)

