"""Read-only view of an ONNX graph: tensors, nodes, producers, consumers and constants.

ONNX lists nodes in topological order, so one pass in order is enough for every analysis here.
Weights can arrive as initializers, as ``Constant`` nodes (PaddlePaddle) or as the result of
constant subgraphs (``ConstantOfShape``/``Cast``/``Reshape``/``Transpose``/``DequantizeLinear`` of
constants): :meth:`Graph.constants` folds all of them into plain arrays, once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelLoadError

__all__ = ["Dim", "TensorInfo", "Node", "Graph", "node_attributes", "tensor_info_from_value"]

log = logging.getLogger(__name__)

Dim = Union[int, str, None]

#: Ops that must never be folded even when all their inputs are constant.
_NOT_FOLDABLE = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and element type of a graph tensor.

    ``shape`` holds an ``int`` for a fixed dimension, a ``str`` for a symbolic one (``dim_param``,
    e.g. ``"batch"``) and ``None`` where the dimension is unknown (also for the invalid negative
    ``dim_value`` some exporters write, e.g. PaddlePaddle's -1 batch; ``onnxviz audit`` flags those);
    ``shape`` itself is ``None`` when even the rank is unknown.
    """

    name: str
    shape: tuple[Dim, ...] | None
    dtype: np.dtype

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def shape_str(self) -> str:
        if self.shape is None:
            return "?"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


def tensor_info_from_value(value: onnx.ValueInfoProto) -> TensorInfo:
    tt = value.type.tensor_type
    dtype = (
        np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if tt.elem_type
        else np.dtype("float32")
    )
    shape: tuple[Dim, ...] | None = None
    if tt.HasField("shape"):
        dims: list[Dim] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorInfo(value.name, shape, dtype)


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """Attributes as python values: tensors as numpy arrays, strings as ``str``."""
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.type == onnx.AttributeProto.TENSOR:
            value = numpy_helper.to_array(value)
        elif attr.type == onnx.AttributeProto.TENSORS:
            value = [numpy_helper.to_array(t) for t in value]
        elif attr.type == onnx.AttributeProto.STRING:
            value = value.decode("utf-8", errors="replace")
        elif attr.type == onnx.AttributeProto.STRINGS:
            value = [v.decode("utf-8", errors="replace") for v in value]
        attrs[attr.name] = value
    return attrs


@dataclass(frozen=True)
class Node:
    """One node. ``label`` is unique in the graph (the node's name, or ``op_type#index``)."""

    index: int
    name: str
    label: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(repr=False)


class Graph:
    """Structure of the main graph of a model; built once, read-only afterwards."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.opset = default_opset(model)
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        self.inputs: tuple[TensorInfo, ...] = tuple(
            tensor_info_from_value(v) for v in g.input if v.name not in self.initializers
        )
        self.outputs: tuple[TensorInfo, ...] = tuple(tensor_info_from_value(v) for v in g.output)
        self.value_infos: dict[str, TensorInfo] = {
            v.name: tensor_info_from_value(v) for v in g.value_info
        }
        nodes: list[Node] = []
        seen: set[str] = set()
        for i, n in enumerate(g.node):
            label = n.name or f"{n.op_type}#{i}"
            if label in seen:
                label = f"{label}#{i}"
            seen.add(label)
            attrs = node_attributes(n)
            if n.op_type == "Split" and "split" not in attrs and "num_outputs" not in attrs:
                if len(n.input) < 2 or not n.input[1]:
                    # Before opset 18 an equal split has as many parts as the node has outputs,
                    # which a forward function cannot see: make it explicit.
                    attrs["num_outputs"] = len(n.output)
            nodes.append(Node(i, n.name, label, n.op_type, n.domain, tuple(n.input), tuple(n.output), attrs))
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.producer: dict[str, Node] = {o: n for n in nodes for o in n.outputs if o}
        consumers: dict[str, list[Node]] = {}
        for n in nodes:
            for name in n.inputs:
                if name:
                    consumers.setdefault(name, []).append(n)
        self.consumers: dict[str, tuple[Node, ...]] = {k: tuple(v) for k, v in consumers.items()}
        self.input_names = tuple(t.name for t in self.inputs)
        self.output_names = tuple(t.name for t in self.outputs)

    # ------------------------------------------------------------------ structure
    @cached_property
    def dynamic(self) -> frozenset[str]:
        """Names of the tensors that depend on a graph input (everything else is a constant)."""
        dyn = set(self.input_names)
        for n in self.nodes:
            if n.op_type in _NOT_FOLDABLE or any(i in dyn for i in n.inputs if i):
                dyn.update(o for o in n.outputs if o)
        return frozenset(dyn)

    def node(self, label: str) -> Node:
        for n in self.nodes:
            if n.label == label or (n.name and n.name == label):
                return n
        raise KeyError(label)

    def tensor_names(self) -> list[str]:
        """Every input-dependent tensor, in topological order (graph inputs first)."""
        names = list(self.input_names)
        for n in self.nodes:
            names.extend(o for o in n.outputs if o and o in self.dynamic)
        return names

    def ancestors(self, targets: set[str] | frozenset[str]) -> list[Node]:
        """The nodes needed to compute ``targets``, in topological order."""
        needed = set(targets)
        keep: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.outputs):
                keep.append(n)
                needed.update(i for i in n.inputs if i)
        keep.reverse()
        return keep

    # ------------------------------------------------------------------ constants
    @cached_property
    def constants(self) -> Mapping[str, np.ndarray]:
        """Initializers plus the outputs of every foldable constant node, as numpy arrays."""
        from .backends.numpy import REGISTRY

        values: dict[str, np.ndarray] = {}
        for name, t in self.initializers.items():
            try:
                values[name] = numpy_helper.to_array(t)
            except Exception as e:  # onnx raises plain exceptions for broken tensors
                raise ModelLoadError(
                    f"initializer {name!r} cannot be read: {e}",
                    hint="the file may be truncated or its external data missing",
                ) from e
        dynamic = self.dynamic
        for n in self.nodes:
            if any(o in dynamic for o in n.outputs) or n.domain not in ("", "ai.onnx"):
                continue
            if any(i and i not in values for i in n.inputs):
                continue
            args = [values[i] if i else None for i in n.inputs]
            fn = REGISTRY.get_forward(n.op_type, self.opset)
            try:
                if fn is not None:
                    result = fn(*args, **n.attrs)
                else:
                    result = _reference_eval(n, args, self.opset)
            except Exception as e:  # folding is best effort: the node then stays a runtime node
                log.info("could not fold constant node %s (%s): %s", n.label, n.op_type, e)
                continue
            outs = result if isinstance(result, tuple) else (result,)
            for name, v in zip(n.outputs, outs):
                if name:
                    values[name] = np.asarray(v)
        return values

    def constant_source(self, name: str) -> str:
        """How a constant tensor entered the graph, for reports (initializer, Constant node, folded)."""
        if name in self.initializers:
            return f"initializer {name!r}"
        node = self.producer.get(name)
        if node is None:
            return "unknown"
        if node.op_type == "Constant":
            return f"Constant node {node.label!r}"
        return f"folded constant subgraph ending in {node.op_type} node {node.label!r}"


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def _reference_eval(node: Node, args: list[np.ndarray | None], opset: int) -> tuple[np.ndarray, ...]:
    """Fold one node with onnx's reference evaluator (ops the numpy engine does not know)."""
    from onnx.reference import ReferenceEvaluator

    names = [f"i{k}" if a is not None else "" for k, a in enumerate(args)]
    inputs = [
        helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for nm, a in zip(names, args)
        if a is not None
    ]
    outs = [helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None) for k in range(len(node.outputs))]
    proto = helper.make_node(node.op_type, names, [o.name for o in outs], domain=node.domain)
    for key, value in node.attrs.items():
        proto.attribute.append(helper.make_attribute(key, value))
    g = helper.make_graph([proto], "fold", inputs, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {nm: a for nm, a in zip(names, args) if a is not None}
    return tuple(ReferenceEvaluator(m).run(None, feeds))
