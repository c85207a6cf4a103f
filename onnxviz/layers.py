"""The layer table: every runtime node with its shapes, parameter count and compute.

Nodes whose outputs are all constants (weight subgraphs, ``Constant`` nodes) are folded away and
not listed as layers; :attr:`ModelSummary.folded_nodes` counts them. MACs are per sample: a
symbolic batch dimension is resolved to 1 before shape inference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .graph import Dim, Node, TensorInfo
from .model import Model

__all__ = ["Layer", "ModelSummary", "summarize", "node_macs"]

_PARAM_DTYPES = (np.floating, np.int8, np.uint8)


@dataclass(frozen=True)
class Layer:
    index: int
    label: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_shapes: tuple[tuple[Dim, ...] | None, ...]
    output_shapes: tuple[tuple[Dim, ...] | None, ...]
    params: int
    macs: int | None

    @property
    def flops(self) -> int | None:
        return None if self.macs is None else 2 * self.macs


@dataclass(frozen=True)
class ModelSummary:
    name: str
    path: str | None
    file_size: int | None
    producer: str
    ir_version: int
    opsets: Mapping[str, int]
    model_version: int
    doc_string: str
    metadata: Mapping[str, str]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    input_shapes_used: Mapping[str, tuple[int, ...]]
    layers: tuple[Layer, ...]
    op_histogram: Mapping[str, int]
    folded_nodes: int
    total_params: int
    total_macs: int
    unknown_macs: tuple[str, ...] = field(default=())

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tensor infos as name/shape/dtype, shapes as lists)."""

        def info(t: TensorInfo) -> dict[str, Any]:
            return {"name": t.name, "shape": None if t.shape is None else list(t.shape), "dtype": str(t.dtype)}

        data = asdict(self)
        data["inputs"] = [info(t) for t in self.inputs]
        data["outputs"] = [info(t) for t in self.outputs]
        data["total_flops"] = self.total_flops
        data["input_shapes_used"] = {k: list(v) for k, v in self.input_shapes_used.items()}
        data["layers"] = [
            {
                **asdict(layer),
                "flops": layer.flops,
                "input_shapes": [None if s is None else list(s) for s in layer.input_shapes],
                "output_shapes": [None if s is None else list(s) for s in layer.output_shapes],
            }
            for layer in self.layers
        ]
        return data


def resolve_input_shapes(
    model: Model, given: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes: ``given`` ones, else the declared ones with a symbolic batch set to 1.

    Inputs with other unknown dims are left out (their shapes stay symbolic in the table).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for t in model.inputs:
        if given and t.name in given:
            shapes[t.name] = tuple(int(d) for d in given[t.name])
            continue
        if t.shape is None:
            continue
        dims = list(t.shape)
        if dims and not isinstance(dims[0], int):
            dims[0] = 1
        if all(isinstance(d, int) for d in dims):
            shapes[t.name] = tuple(int(d) for d in dims)  # type: ignore[arg-type]
    return shapes


def summarize(model: Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> ModelSummary:
    """Build the layer table and the model overview."""
    shapes_used = resolve_input_shapes(model, input_shapes)
    infos = model.infer_shapes(shapes_used)
    graph = model.graph
    constants = graph.constants
    dynamic = graph.dynamic

    def shape_of(name: str) -> tuple[Dim, ...] | None:
        if not name:
            return None
        if name in constants:
            return tuple(constants[name].shape)
        info = infos.get(name)
        return None if info is None else info.shape

    layers: list[Layer] = []
    counted: set[str] = set()
    total_params = 0
    total_macs = 0
    unknown: list[str] = []
    folded = 0
    for node in graph.nodes:
        if not any(o in dynamic for o in node.outputs):
            folded += 1
            continue
        params = 0
        for name in node.inputs:
            value = constants.get(name) if name else None
            if value is not None and _is_param(value):
                params += int(value.size)
                if name not in counted:
                    counted.add(name)
                    total_params += int(value.size)
        in_shapes = tuple(shape_of(i) for i in node.inputs)
        out_shapes = tuple(shape_of(o) for o in node.outputs)
        macs = node_macs(node, in_shapes, out_shapes)
        if macs is not None:
            total_macs += macs
        elif node.op_type in _MAC_OPS:
            unknown.append(node.label)
        layers.append(
            Layer(node.index, node.label, node.op_type, node.domain, node.inputs, node.outputs, in_shapes, out_shapes, params, macs)
        )
    hist = Counter(n.op_type for n in graph.nodes)
    proto = model.proto
    return ModelSummary(
        name=model.name,
        path=None if model.path is None else str(model.path),
        file_size=None if model.path is None else model.path.stat().st_size,
        producer=" ".join(p for p in (proto.producer_name, proto.producer_version) if p),
        ir_version=int(proto.ir_version),
        opsets={(imp.domain or "ai.onnx"): int(imp.version) for imp in proto.opset_import},
        model_version=int(proto.model_version),
        doc_string=proto.doc_string,
        metadata=model.metadata,
        inputs=model.inputs,
        outputs=model.outputs,
        input_shapes_used=shapes_used,
        layers=tuple(layers),
        op_histogram=dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        folded_nodes=folded,
        total_params=total_params,
        total_macs=total_macs,
        unknown_macs=tuple(unknown),
    )


_MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul"})


def _is_param(value: np.ndarray) -> bool:
    return value.size > 1 and any(np.issubdtype(value.dtype, t) for t in _PARAM_DTYPES)


def _static(shape: tuple[Dim, ...] | None) -> tuple[int, ...] | None:
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return tuple(int(d) for d in shape)  # type: ignore[arg-type]


def node_macs(
    node: Node, in_shapes: tuple[tuple[Dim, ...] | None, ...], out_shapes: tuple[tuple[Dim, ...] | None, ...]
) -> int | None:
    """Multiply-accumulates of one node for the given shapes, or None if unknown / not counted.

    Conv: every output element costs ``C_in/group * prod(kernel)``; ConvTranspose: every input
    element costs ``C_out/group * prod(kernel)``; Gemm/MatMul: ``prod(output) * K``.
    """
    op = node.op_type
    if op not in _MAC_OPS:
        return None
    w_index = 3 if op == "QLinearConv" else 1
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        y, w = _static(out_shapes[0] if out_shapes else None), _static(in_shapes[w_index] if len(in_shapes) > w_index else None)
        if y is None or w is None:
            return None
        return int(np.prod(y, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    if op == "ConvTranspose":
        x, w = _static(in_shapes[0]), _static(in_shapes[1])
        if x is None or w is None:
            return None
        return int(np.prod(x, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    y = _static(out_shapes[0] if out_shapes else None)
    a = _static(in_shapes[0])
    if y is None or a is None or not a:
        return None
    k = a[0] if (op == "Gemm" and node.attrs.get("transA", 0)) else a[-1]
    return int(np.prod(y, dtype=np.int64) * k)
