"""Convolution kernels read straight from the graph, wherever the exporter put them.

Weights come from initializers, ``Constant`` nodes, folded constant subgraphs and quantized
tensors: ``DequantizeLinear`` of an integer weight is folded to floats (and said so), a
``QLinearConv`` weight is dequantized here with its scale and zero point, and a ``ConvInteger``
weight is shown as ``w - w_zero_point`` in integer units (it has no scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .graph import Graph, Node
from .model import Model

__all__ = ["WeightStats", "ConvKernels", "conv_kernels", "weight_stats", "NEAR_ZERO_FRACTION"]

#: A weight is "near zero" when its magnitude is below this fraction of the layer's largest one.
NEAR_ZERO_FRACTION = 0.01

_CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")


@dataclass(frozen=True)
class WeightStats:
    count: int
    mean: float
    std: float
    min: float
    max: float
    near_zero_share: float
    dead_filters: tuple[int, ...]
    nonfinite: int


@dataclass(frozen=True)
class ConvKernels:
    """The kernels of one convolution node.

    ``weight`` has the ONNX layout: ``(C_out, C_in/group, *kernel)`` for Conv,
    ``(C_in, C_out/group, *kernel)`` for ConvTranspose.
    """

    node: str
    op_type: str
    weight: np.ndarray
    bias: np.ndarray | None
    group: int
    source: str
    quantization: str | None
    stats: WeightStats
    first_layer: bool
    input_tensor: str
    output_tensor: str

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[2:])

    @property
    def depthwise(self) -> bool:
        return self.group > 1 and self.weight.shape[1] == 1


def weight_stats(w: np.ndarray, *, filter_axis: int = 0) -> WeightStats:
    """Statistics of one layer's weights; a dead filter is one whose weights are all exactly zero.

    Passes run in the weights' own dtype (sums accumulate in float64); only a layer holding
    NaN/Inf pays for a masked copy of its finite values.
    """
    w = np.asarray(w)
    if w.size == 0 or w.dtype.kind != "f":
        w = w.astype(np.float64)
    lo, hi = (float(w.min()), float(w.max())) if w.size else (math.nan, math.nan)
    vals = w if math.isfinite(lo) and math.isfinite(hi) else w[np.isfinite(w)]
    if vals.size == 0:
        return WeightStats(int(w.size), float("nan"), float("nan"), float("nan"), float("nan"), 0.0, (), int(w.size))
    if vals is not w:
        lo, hi = float(vals.min()), float(vals.max())
    peak = max(abs(lo), abs(hi))
    near = float(np.count_nonzero(np.abs(vals) < NEAR_ZERO_FRACTION * peak)) / vals.size if peak > 0 else 1.0
    per_filter = np.moveaxis(w, filter_axis, 0).reshape(w.shape[filter_axis], -1)
    dead = tuple(int(i) for i in np.flatnonzero(~np.any(per_filter != 0, axis=1)))
    mean = float(vals.mean(dtype=np.float64))
    return WeightStats(
        count=int(w.size),
        mean=mean,
        std=math.sqrt(max(0.0, float(np.square(vals).sum(dtype=np.float64)) / vals.size - mean * mean)),
        min=lo,
        max=hi,
        near_zero_share=near,
        dead_filters=dead,
        nonfinite=int(w.size - vals.size),
    )


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-tensor (scalar) or per-output-channel quantization parameter, broadcastable to the weight."""
    v64 = np.asarray(v, dtype=np.float64)
    return v64.reshape((-1,) + (1,) * (ndim - 1)) if v64.size > 1 else v64.reshape(())


def _conv_depths(graph: Graph) -> dict[str, int]:
    """For each tensor, the number of convolutions on the longest path from a graph input."""
    depth = {name: 0 for name in graph.input_names}
    for n in graph.nodes:
        d = max((depth[i] for i in n.inputs if i in depth), default=None)
        if d is None:
            continue
        if n.op_type in _CONV_OPS:
            d += 1
        for o in n.outputs:
            depth[o] = d
    return depth


def _dequantized_source(graph: Graph, name: str) -> str | None:
    node = graph.producer.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        src = graph.constants.get(node.inputs[0])
        kind = "?" if src is None else str(src.dtype)
        return f"dequantized from {kind} by DequantizeLinear node {node.label!r}"
    return None


def _kernels_of(model: Model, node: Node, depths: dict[str, int]) -> ConvKernels | None:
    graph = model.graph
    constants = graph.constants
    group = int(node.attrs.get("group", 1))
    x_name = node.inputs[0]
    quant: str | None
    if node.op_type == "QLinearConv":
        w_name = node.inputs[3]
        w_int, scale, zp = (constants.get(node.inputs[i]) for i in (3, 4, 5))
        if w_int is None or scale is None:
            return None
        zero = 0.0 if zp is None else _per_channel(zp, w_int.ndim)
        weight = ((w_int.astype(np.float64) - zero) * _per_channel(scale, w_int.ndim)).astype(np.float32)
        quant = f"dequantized here from {w_int.dtype} with w_scale and w_zero_point of QLinearConv"
        bias = constants.get(node.inputs[8]) if len(node.inputs) > 8 and node.inputs[8] else None
        if bias is not None:
            x_scale = constants.get(node.inputs[1])
            bias = None if x_scale is None else (bias.astype(np.float64) * x_scale * scale).astype(np.float32)
    elif node.op_type == "ConvInteger":
        w_name = node.inputs[1]
        w_int = constants.get(w_name)
        if w_int is None:
            return None
        zp = constants.get(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
        weight = (w_int.astype(np.float64) - (0.0 if zp is None else _per_channel(zp, w_int.ndim))).astype(np.float32)
        quant = f"{w_int.dtype} weights minus w_zero_point, in integer units (ConvInteger has no scale)"
        bias = None
    else:
        w_name = node.inputs[1]
        w = constants.get(w_name)
        if w is None:
            return None
        weight = w.astype(np.float32, copy=False)
        quant = _dequantized_source(graph, w_name)
        b_name = node.inputs[2] if len(node.inputs) > 2 else ""
        bias = constants.get(b_name) if b_name else None
    filter_axis = 1 if node.op_type == "ConvTranspose" else 0
    return ConvKernels(
        node=node.label,
        op_type=node.op_type,
        weight=weight,
        bias=None if bias is None else np.asarray(bias, dtype=np.float32),
        group=group,
        source=graph.constant_source(w_name),
        quantization=quant,
        stats=weight_stats(weight, filter_axis=filter_axis),
        first_layer=depths.get(x_name, -1) == 0,
        input_tensor=x_name,
        output_tensor=node.outputs[0],
    )


def conv_kernels(model: Model) -> list[ConvKernels]:
    """Every convolution's kernels, in graph order (convolutions with non-constant weights are skipped)."""
    depths = _conv_depths(model.graph)
    out: list[ConvKernels] = []
    for node in model.graph.nodes:
        if node.op_type in _CONV_OPS and node.domain in ("", "ai.onnx"):
            k = _kernels_of(model, node, depths)
            if k is not None:
                out.append(k)
    return out
