"""Where a CAM looks: the last spatial feature map before the classifier collapses space.

Grad-CAM and its relatives are computed on "the last convolutional layer", which in an ONNX
graph means the last input-dependent ``(N, C, h, w)`` tensor with ``h, w > 1`` that the head
reduces to a vector. Exporters spell that reduction in several ways, all recognised here:

- ``GlobalAveragePool`` / ``GlobalMaxPool`` (PyTorch, Caffe2, paddle2onnx, SqueezeNet's
  ``conv -> relu -> GlobalAveragePool``);
- ``ReduceMean``/``ReduceMax`` over H, W: axes ``(2, 3)`` on NCHW, or axes ``(1, 2)`` on the
  ``Transpose(perm=[0, 2, 3, 1])`` that tf2onnx inserts before Keras' global pooling (the layer
  is then the NCHW tensor *before* that Transpose, so CAMs always read ``(N, C, h, w)``);
- an ``AveragePool``/``MaxPool`` whose output is 1x1 (ResNet-50, Inception from the model zoo);
- ``Flatten``/``Reshape`` of a spatial map into a ``Gemm``/``MatMul`` (VGG, AlexNet, LeNet):
  the layer is then the input of the last pooling before the flatten, i.e. the last activation
  at full resolution of the last stage.

The chosen tensor is the one the reduction consumes, i.e. after its activation, as the hooks
of pytorch-grad-cam record a module's output.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import TargetError
from ..graph import Dim, Graph, Node, TensorInfo
from ..model import Model

__all__ = ["default_cam_layer", "spatial_layers"]

_GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
_REDUCES = frozenset({"ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2"})
_LOCAL_POOLS = frozenset({"AveragePool", "MaxPool", "LpPool"})
_FLATTENS = frozenset({"Flatten", "Reshape"})
_DENSE = frozenset({"Gemm", "MatMul"})
#: Ops that pass a tensor through unchanged at inference (walked over in both directions).
_PASS_THROUGH = frozenset({"Dropout", "Identity"})
_TO_NHWC = (0, 2, 3, 1)


def _shapes(model: Model) -> Mapping[str, TensorInfo]:
    return model.infer_shapes()


def _is_spatial(shape: tuple[Dim, ...] | None, axes: tuple[int, int] = (2, 3)) -> bool:
    """Rank 4 and both spatial dims > 1 (an unknown or symbolic dim counts as > 1)."""
    if shape is None or len(shape) != 4:
        return False
    return all(not (isinstance(shape[a], int) and 0 <= shape[a] <= 1) for a in axes)


def _is_one_by_one(shape: tuple[Dim, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] == 1 and shape[3] == 1


def _shape(infos: Mapping[str, TensorInfo], name: str) -> tuple[Dim, ...] | None:
    info = infos.get(name)
    return None if info is None else info.shape


def _reduce_axes(node: Node, graph: Graph) -> tuple[int, ...] | None:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        value = graph.constants.get(node.inputs[1])
        axes = None if value is None else [int(a) for a in np.asarray(value).ravel()]
    if axes is None:
        return None
    return tuple(sorted(int(a) % 4 for a in axes))


def _before_pass_through(graph: Graph, name: str) -> str:
    node = graph.producer.get(name)
    while node is not None and node.op_type in _PASS_THROUGH and node.inputs[0] in graph.dynamic:
        name = node.inputs[0]
        node = graph.producer.get(name)
    return name


def _nchw_source(graph: Graph, name: str) -> str | None:
    """The NCHW tensor that a ``Transpose(perm=[0, 2, 3, 1])`` turned into ``name``, if any."""
    node = graph.producer.get(_before_pass_through(graph, name))
    if node is not None and node.op_type == "Transpose" and tuple(node.attrs.get("perm", ())) == _TO_NHWC:
        return node.inputs[0]
    return None


def _feeds_dense(graph: Graph, name: str) -> bool:
    todo = [name]
    while todo:
        for c in graph.consumers.get(todo.pop(), ()):
            if c.op_type in _DENSE:
                return True
            if c.op_type in _PASS_THROUGH:
                todo.extend(o for o in c.outputs[:1] if o)
    return False


def _collapsed_map(node: Node, graph: Graph, infos: Mapping[str, TensorInfo]) -> str | None:
    """The spatial map that ``node`` reduces to a vector (or 1x1), or ``None``."""
    if not node.inputs or node.inputs[0] not in graph.dynamic:
        return None
    x = node.inputs[0]
    shape = _shape(infos, x)
    op = node.op_type
    if op in _GLOBAL_POOLS:
        return x if _is_spatial(shape) else None
    if op in _REDUCES:
        axes = _reduce_axes(node, graph)
        if axes == (2, 3) and _is_spatial(shape):
            return x
        if axes == (1, 2) and _is_spatial(shape, (1, 2)):
            return _nchw_source(graph, x)  # Keras global pooling after tf2onnx's Transpose
        return None
    if op in _LOCAL_POOLS:
        out = _shape(infos, node.outputs[0])
        return x if _is_spatial(shape) and _is_one_by_one(out) else None
    if op in _FLATTENS:
        out = _shape(infos, node.outputs[0])
        if out is not None and len(out) != 2:
            return None
        if not _feeds_dense(graph, node.outputs[0]):
            return None
        nchw = _nchw_source(graph, x)
        if nchw is not None:  # Keras Flatten flattens NHWC; the map is before the Transpose
            x, shape = nchw, _shape(infos, nchw)
        if shape is None or len(shape) != 4:
            return None
        # VGG: flatten(pool(...(relu))): the last pooling's input is the last full-resolution map.
        x = _before_pass_through(graph, x)
        producer = graph.producer.get(x)
        while producer is not None and producer.op_type in _LOCAL_POOLS and producer.inputs[0] in graph.dynamic:
            x = _before_pass_through(graph, producer.inputs[0])
            producer = graph.producer.get(x)
        return x if _is_spatial(_shape(infos, x)) else None
    return None


def _first_output(model: Model, output: str | None) -> str:
    return output or model.outputs[0].name


def default_cam_layer(model: Model, output: str | None = None) -> str:
    """The tensor a CAM uses by default: the last spatial map before the head collapses space.

    Walks back from ``output`` (default: the first model output) over its ancestors, newest
    first, to the first global pooling, spatial reduction, pool-to-1x1 or flatten into a dense
    layer that consumes a rank-4 map with ``h, w > 1``, and returns that map's name (see the
    module docstring for each exporter's pattern). Raises :class:`TargetError` when there is
    none, with the candidate tensors in the hint.
    """
    graph = model.graph
    out = _first_output(model, output)
    if out not in graph.dynamic:
        raise TargetError(
            f"no output or tensor named {out!r}", hint=f"the model's outputs are {list(graph.output_names)}"
        )
    infos = _shapes(model)
    for node in reversed(graph.ancestors({out})):
        if not any(o in graph.dynamic for o in node.outputs):
            continue
        layer = _collapsed_map(node, graph, infos)
        if layer is not None:
            return _before_pass_through(graph, layer)
    candidates = spatial_layers(model, output)
    hint = (
        "pass --layer NAME (layer=...) with a rank-4 (N, C, h, w) tensor; the last candidates are "
        + ", ".join(repr(c) for c in candidates[-5:])
        if candidates
        else "CAM methods need a rank-4 (N, C, h, w) feature map and this model has none before its output; "
        "pass --layer NAME (layer=...) if shape inference missed one (`onnxviz inspect MODEL` lists the tensors)"
    )
    raise TargetError(
        f"found no spatial feature map that the head of {model.name!r} pools or flattens before output {out!r}",
        hint=hint,
    )


def spatial_layers(model: Model, output: str | None = None) -> list[str]:
    """Every input-dependent rank-4 tensor with ``h, w > 1`` that ``output`` depends on, in
    topological order (the candidates for ``--layer``); channels-last copies made by a
    ``Transpose(perm=[0, 2, 3, 1])`` are left out, since CAMs read ``(N, C, h, w)``."""
    graph = model.graph
    out = _first_output(model, output)
    infos = _shapes(model)
    names: list[str] = []
    for node in graph.ancestors({out}):
        if node.op_type == "Transpose" and tuple(node.attrs.get("perm", ())) == _TO_NHWC:
            continue
        for name in node.outputs:
            if name and name in graph.dynamic and _is_spatial(_shape(infos, name)):
                names.append(name)
    return names
