"""Freeing a batch axis that an export fixed to a number.

Many exports declare a static batch (``[1, 3, 224, 224]``) and bake it into the graph: Reshape
targets such as ``[1, -1]`` or ``[1, 2048]``. Such a model can only run one sample (one fixed
batch) per call, which makes every batched method (IG steps, SmoothGrad samples, CAM masks) pay
onnxruntime's per-call and small-GEMM costs once per row. :func:`free_batch` rewrites a copy of
the model so that axis 0 is symbolic:

- graph inputs and outputs declare a symbolic batch (``dim_param``); intermediate value infos
  are dropped (onnxruntime infers them again);
- a Reshape of an input-dependent tensor whose constant target starts with the fixed batch gets
  a new target starting with 0 ("copy the data's axis 0"), unless the node sets ``allowzero``.

Node names, tensor names and the order of nodes are kept, so taps and errors read the same.
Nothing else is rewritten: a graph that hard-codes the batch elsewhere (an Expand to a constant
shape, a Slice end) is caught by :func:`verify_free_batch`, which runs the rewritten model on two
fixed batches at once against the original run twice; the caller keeps splitting batches when
that fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .graph import Graph, Node

__all__ = ["BATCH_PARAM", "free_batch", "free_size", "verify_free_batch"]

log = logging.getLogger(__name__)

#: The name of the symbolic batch dimension in a freed model.
BATCH_PARAM = "onnxviz_batch"


def free_batch(proto: onnx.ModelProto, graph: Graph, batch: int) -> onnx.ModelProto | None:
    """A copy of ``proto`` with a symbolic batch axis, or ``None`` when its inputs do not all
    declare a static batch of ``batch`` followed by static dimensions."""
    for t in graph.inputs:
        shape = t.shape
        if not shape or shape[0] != batch or any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
            return None
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    initializer_names = {t.name for t in g.initializer}
    for vi in list(g.input) + list(g.output):
        if vi.name in initializer_names or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and (not dims[0].HasField("dim_value") or dims[0].dim_value == batch):
            dims[0].Clear()
            dims[0].dim_param = BATCH_PARAM
    del g.value_info[:]
    consts = graph.constants
    for node, proto_node in zip(graph.nodes, g.node):
        if not _is_batch_reshape(node, graph, batch):
            continue
        target = np.array(consts[node.inputs[1]], dtype=np.int64, copy=True)
        target[0] = 0
        name = f"{node.inputs[1]}__{BATCH_PARAM}_{node.index}"
        g.initializer.append(numpy_helper.from_array(target, name))
        proto_node.input[1] = name
    return out


def _is_batch_reshape(n: Node, graph: Graph, batch: int) -> bool:
    """A Reshape of an input-dependent tensor to a constant target that starts with the batch."""
    if n.op_type != "Reshape" or n.domain not in ("", "ai.onnx"):
        return False
    inputs = n.inputs
    if len(inputs) < 2 or inputs[0] not in graph.dynamic or inputs[1] not in graph.constants:
        return False
    if int(n.attrs.get("allowzero", 0)):
        return False
    target = np.asarray(graph.constants[inputs[1]]).reshape(-1)
    return target.size > 0 and int(target[0]) == batch


def verify_free_batch(
    graph: Graph,
    run_fixed: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
    run_free: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
    batch: int,
    *,
    rtol: float = 1e-4,
) -> bool:
    """Whether the freed model run on two fixed batches at once gives every output of the original
    run on each (random inputs in [0, 1), zeros for integer and boolean inputs)."""
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for t in graph.inputs:
        shape = (2 * batch,) + tuple(int(d) for d in t.shape[1:])  # type: ignore[index, arg-type]
        dtype = np.dtype(t.dtype) if t.dtype is not None else np.dtype(np.float32)
        feeds[t.name] = rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
    try:
        free = run_free(feeds)
        parts = [run_fixed({k: v[i * batch : (i + 1) * batch] for k, v in feeds.items()}) for i in range(2)]
    except Exception as e:  # onnxruntime raises its own types; any failure means "keep splitting"
        log.info("the freed batch axis does not run: %s", str(e).strip()[:200])
        return False
    for name in parts[0]:
        want = np.concatenate([np.asarray(p[name]) for p in parts])
        got = np.asarray(free.get(name))
        if got.shape != want.shape:
            return False
        if np.issubdtype(want.dtype, np.floating):
            scale = float(np.nanmax(np.abs(want))) if want.size and np.isfinite(want).any() else 0.0
            if not np.allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-30), equal_nan=True):
                return False
        elif not np.array_equal(got, want):
            return False
    return True


def free_size(proto: onnx.ModelProto, graph: Graph, tensors: Sequence[str], axes: Sequence[int]) -> onnx.ModelProto:
    """The part of ``proto`` that computes ``tensors`` (their outputs only), with the single
    input's batch and spatial ``axes`` symbolic: a fully convolutional prefix of a network
    exported at a fixed image size, to run at another size (feature visualization at Lucid's
    128x128 on a model exported at 224x224). Whether it really runs at another size is for the
    caller to try: a Reshape or Gemm on the way makes onnxruntime refuse it."""
    keep = {n.index for n in graph.ancestors(set(tensors))}
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    nodes = [n for i, n in enumerate(g.node) if i in keep]
    used = {i for n in nodes for i in n.input}
    del g.node[:]
    g.node.extend(nodes)
    every_init = {t.name for t in g.initializer}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    # the real inputs, and the kept initializers old IRs also list as inputs; an unused
    # initializer's input entry would otherwise become a required input of the part
    names = {t.name for t in inits}
    inputs = [v for v in g.input if v.name not in every_init or v.name in names]
    del g.input[:]
    g.input.extend(inputs)
    image = next(v for v in g.input if v.name not in every_init)
    dims = image.type.tensor_type.shape.dim
    for axis in (0, *axes):
        dims[axis].Clear()
        dims[axis].dim_param = f"{BATCH_PARAM}_{axis}" if axis else BATCH_PARAM
    del g.value_info[:]
    del g.output[:]
    g.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    return out
