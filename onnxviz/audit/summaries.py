"""Per-tensor summaries computed inside the graph, so that an activation scan reads a few numbers
per channel from onnxruntime instead of copying every tensor out of it.

:func:`summary_model` appends to a copy of the model, for each float32/float64 tensor of rank
>= 2 with a known shape, reductions over every axis but the channel axis (1): max, min and sum
(onnxruntime's max/min reductions skip NaN; the sum does not, so a non-finite sum marks a tensor
whose exact values must be read), a strided sample of each sample's values (for percentiles)
and, for saturating activations, the per-channel count of values near a bound. A ``Relu`` whose
input is summarized costs nothing: its max, min and sample are ``max(0, .)`` of its input's; nor
does the input of an inference ``BatchNormalization`` (a per-channel affine map ``y = a x + b``
with constant ``a != 0``): its summary is ``(y - b) / a`` of the output's, exact up to float
rounding, and a non-finite output sends both to the exact pass. Any other tensor (rank < 2,
unknown shape, float16) is listed as a whole tap.

On ResNet-50 (176 tensors, 143 MB a sample) the summaries of one sample are ~140 kB, and an
unoptimized onnxruntime pass computing them costs ~1.2x a plain unoptimized pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph import Graph, TensorInfo

__all__ = ["Probe", "Reduced", "read_probe", "summary_model"]

#: Element types reduced in the graph (onnxruntime's CPU reductions have no float16 kernels).
_REDUCIBLE = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Probe:
    """How the summary model reports one tensor.

    ``outputs`` maps a role (``max``, ``min``, ``sum``, ``sample``, ``near``) to the name of a
    graph output of the summary model, or ``{"value": tensor}`` for a whole tap. ``source``
    names the tensor a derived summary comes from (no outputs of its own): a ``Relu``'s input,
    or with ``affine = (a, b)`` a ``BatchNormalization``'s output ``a x + b``. ``shape`` is one
    sample's shape (channels first); the sample takes every ``step``-th value of a sample.
    """

    tensor: str
    outputs: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None
    affine: tuple[np.ndarray, np.ndarray] | None = None
    shape: tuple[int, ...] = ()
    step: int = 1
    bounds: tuple[float, float] | None = None

    @property
    def whole(self) -> bool:
        return "value" in self.outputs


@dataclass(frozen=True)
class Reduced:
    """One batch's summary of one tensor: per-channel max and min, per-channel sums (read only
    to detect NaN/Inf; a ``Relu``'s are its input's), the sample ``(batch, k)``, and per-channel
    near-bound counts."""

    batch: int
    channel_max: np.ndarray
    channel_min: np.ndarray
    channel_sum: np.ndarray
    sample: np.ndarray
    near: np.ndarray | None

    @property
    def finite(self) -> bool:
        """Whether the tensor held no NaN/Inf: its per-channel sums are finite (a NaN or an Inf
        makes its channel's sum NaN or Inf; a sum that overflowed reads as not finite too)."""
        return bool(np.isfinite(self.channel_sum).all())


class _Emitter:
    """Appends nodes to a graph in the opset's own spelling of each op."""

    def __init__(self, g: onnx.GraphProto, opset: int, prefix: str) -> None:
        self.g, self.opset, self.prefix = g, opset, prefix
        self.count = 0

    def name(self, role: str) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}/{role}"

    def const(self, value: np.ndarray) -> str:
        out = self.name("const")
        self.g.node.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(value, out)))
        return out

    def node(self, op: str, inputs: Sequence[str], role: str, **attrs: Any) -> str:
        out = self.name(role)
        self.g.node.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def reduce(self, op: str, x: str, axes: Sequence[int], role: str) -> str:
        # axes became an input in opset 13 (ReduceSum) and 18 (the other reductions)
        if self.opset >= (13 if op == "ReduceSum" else 18):
            return self.node(op, [x, self.const(np.asarray(axes, np.int64))], role, keepdims=0)
        return self.node(op, [x], role, axes=list(axes), keepdims=0)


def _unique_prefix(graph: Graph) -> str:
    names = set(graph.tensor_names()) | set(graph.producer) | set(graph.initializers)
    prefix, k = "onnxviz.summary/", 0
    while any(n.startswith(prefix) for n in names):
        k += 1
        prefix = f"onnxviz.summary{k}/"
    return prefix


def summary_model(
    proto: onnx.ModelProto,
    graph: Graph,
    shapes: Mapping[str, TensorInfo],
    names: Sequence[str],
    *,
    sample: int,
    bounds: Mapping[str, tuple[float, float]],
    eps: float,
) -> tuple[onnx.ModelProto, dict[str, Probe]]:
    """A copy of ``proto`` whose outputs are its own plus the summaries of ``names`` (in
    topological order), and the probe of each name.

    About ``sample`` values of each sample are kept per tensor; ``bounds`` gives, by tensor name,
    the saturation bounds of the tensors whose counts of values within ``eps`` of a bound are
    wanted.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    emit = _Emitter(g, graph.opset, _unique_prefix(graph))
    flat = None
    probes: dict[str, Probe] = {}
    wanted = set(names)
    normalized = {x: (y, a, b) for x, y, a, b in _batchnorms(graph) if x in wanted and y in wanted and y not in bounds}
    for name in names:
        info = shapes.get(name)
        one = _per_sample(info)
        if one is None or info is None:
            probes[name] = Probe(name, {"value": name})
            continue
        per = int(np.prod(one))
        step = -(-per // max(1, sample))
        node = graph.producer.get(name)
        src = probes.get(node.inputs[0]) if node is not None and node.op_type == "Relu" and node.inputs else None
        if src is not None and src.source is None and not src.whole and src.shape == one and name not in bounds:
            probes[name] = Probe(name, source=src.tensor, shape=one, step=step)
            continue
        if name in normalized and name not in bounds:
            y, a, b = normalized[name]
            other = shapes.get(y)
            if a.size == one[0] and _per_sample(other) == one and other is not None and other.dtype == info.dtype:
                probes[name] = Probe(name, source=y, affine=(a, b), shape=one, step=step)
                continue
        shape = info.shape
        assert shape is not None
        axes = [0] + list(range(2, len(shape)))
        outputs = {
            "max": emit.reduce("ReduceMax", name, axes, "max"),
            "min": emit.reduce("ReduceMin", name, axes, "min"),
            "sum": emit.reduce("ReduceSum", name, axes, "sum"),
        }
        if flat is None:
            flat = emit.const(np.asarray([0, -1], np.int64))
        rows = emit.node("Reshape", [name, flat], "rows")
        outputs["sample"] = emit.node("Gather", [rows, emit.const(np.arange(0, per, step, dtype=np.int64))], "sample", axis=1)
        sat = bounds.get(name)
        if sat is not None:
            lo, hi = sat
            band = np.asarray(eps, info.dtype)
            low = emit.node("Not", [emit.node("Greater", [name, emit.const(np.asarray(lo, info.dtype) + band)], "gt")], "le")
            high = emit.node("Not", [emit.node("Less", [name, emit.const(np.asarray(hi, info.dtype) - band)], "lt")], "ge")
            near = emit.node("Cast", [emit.node("Or", [low, high], "near")], "count", to=onnx.TensorProto.FLOAT)
            outputs["near"] = emit.reduce("ReduceSum", near, axes, "near")
        probes[name] = Probe(name, outputs, shape=one, step=step, bounds=sat)
    for p in probes.values():
        for out in p.outputs.values():
            if out not in graph.output_names:
                g.output.append(helper.make_empty_tensor_value_info(out))
    return model, probes


def _per_sample(info: TensorInfo | None) -> tuple[int, ...] | None:
    """One sample's shape when the tensor can be reduced in the graph (rank >= 2, known
    non-batch dims, float32/float64), else None."""
    if info is None or info.shape is None or len(info.shape) < 2 or info.dtype not in _REDUCIBLE:
        return None
    dims = info.shape[1:]
    return tuple(int(d) for d in dims) if all(isinstance(d, int) and d > 0 for d in dims) else None  # type: ignore[arg-type]


def _batchnorms(graph: Graph) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(x, y, a, b)`` for each inference BatchNormalization ``y = a x + b`` (per channel,
    float64) whose parameters are constants and whose ``a`` is finite and non-zero."""
    found = []
    for n in graph.nodes:
        if n.op_type != "BatchNormalization" or n.domain not in ("", "ai.onnx") or len(n.inputs) < 5:
            continue
        if any(o for o in n.outputs[1:]) or n.attrs.get("training_mode", 0) or not n.attrs.get("spatial", 1):
            continue
        params = [graph.constants.get(i) for i in n.inputs[1:5]]
        if any(p is None or p.ndim != 1 for p in params):
            continue
        scale, bias, mean, var = (np.asarray(p, np.float64) for p in params)  # type: ignore[arg-type]
        with np.errstate(all="ignore"):
            a = scale / np.sqrt(var + float(n.attrs.get("epsilon", 1e-5)))
            b = bias - mean * a
        if a.shape == b.shape and np.all(np.isfinite(a) & (a != 0)) and np.all(np.isfinite(b)):
            found.append((n.inputs[0], n.outputs[0], a, b))
    return found


def read_probe(probe: Probe, probes: Mapping[str, Probe], values: Mapping[str, np.ndarray]) -> Reduced:
    """One batch's :class:`Reduced` of a probe that is not a whole tap, from the summary run's
    ``values``."""
    if probe.affine is not None:
        y = read_probe(probes[probe.source], probes, values)  # type: ignore[index]
        a, b = probe.affine
        lo, hi = (y.channel_min - b) / a, (y.channel_max - b) / a
        spatial = int(np.prod(probe.shape[1:], dtype=np.int64))
        channel = np.arange(0, int(np.prod(probe.shape)), probe.step) // max(1, spatial)
        return Reduced(
            batch=y.batch,
            channel_max=np.where(a > 0, hi, lo),
            channel_min=np.where(a > 0, lo, hi),
            channel_sum=(y.channel_sum - b * (y.batch * spatial)) / a,
            sample=(y.sample - b[channel]) / a[channel],
            near=None,
        )
    if probe.source is not None:
        src = read_probe(probes[probe.source], probes, values)
        return Reduced(
            batch=src.batch,
            channel_max=np.maximum(src.channel_max, 0),
            channel_min=np.maximum(src.channel_min, 0),
            channel_sum=src.channel_sum,  # a non-finite source sends both to the exact pass
            sample=np.maximum(src.sample, 0),
            near=None,
        )
    out = probe.outputs
    sample = np.asarray(values[out["sample"]])
    return Reduced(
        batch=int(sample.shape[0]),
        channel_max=np.asarray(values[out["max"]]),
        channel_min=np.asarray(values[out["min"]]),
        channel_sum=np.asarray(values[out["sum"]]),
        sample=sample,
        near=np.asarray(values[out["near"]]) if "near" in out else None,
    )
