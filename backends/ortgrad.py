"""Compiled backward: one ONNX model that computes the forward and the vector-Jacobian product.

Opt-in alternative to the numpy engine for float32 input gradients. For a given set of ``wrt``
tensors, seeded tensors and concrete input shapes it builds, once, an ONNX model made of

- the original graph's nodes that the seeds and requested values need (weights folded to
  initializers by :attr:`Graph.constants`; nodes of models below opset 16 upgraded to opset 16),
- one extra graph input ``<name>__seed`` per seeded tensor (the cotangent),
- backward nodes emitted per forward node in reverse topological order, only along the path
  from a ``wrt`` tensor to a seeded tensor, by one small emitter per op type (:data:`EMITTERS`),
- outputs ``<wrt>__grad`` and the values of the seeded and requested tensors,

and runs it in onnxruntime, so the convolutions of the backward run in onnxruntime's kernels
(``ConvTranspose`` with the forward's weights) instead of numpy's. Static shapes come from the
given feeds (onnx shape inference, completed by one onnxruntime run with taps where inference
cannot tell); they fix unbroadcast axes and ``ConvTranspose``'s ``output_padding``.

An op without an emitter raises :class:`UnsupportedOpError` naming the node: the numpy engine
(:meth:`onnxviz.model.Model.value_and_grad`) still differentiates it, so callers can fall back.
The numpy engine stays the reference: the tests compare the two.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExecutionError, InputError, TargetError, UnsupportedOpError
from ..graph import Node, node_attributes
from .numpy.engine import GradResult
from .numpy.registry import NON_DIFFERENTIABLE, VALUE_BLOCKING
from .ortgrad_ops import (
    _FALLBACK_HINT,
    EMITTERS,
    Emitter,
    GraphBuilder,
    _unsupported,
    initializer,
)

if TYPE_CHECKING:
    import onnxruntime as ort

    from ..graph import Graph

__all__ = ["EMITTERS", "Emitter", "GraphBuilder", "OrtGradBackend"]

log = logging.getLogger(__name__)

#: The default-domain opset of the built model: ScatterElements(reduction="add") needs 16.
MIN_OPSET = 16
#: Compiled models kept per backend: up to this many shapes (feature visualization's random
#: scales give about a dozen input sizes on models with dynamic spatial dims) ...
_CACHE_SIZE = 16
#: ... and at most this many bytes of model (each session holds its own copy of the weights).
_CACHE_BYTES = 1 << 30
_SAME_SEMANTICS = frozenset({
    "Conv", "ConvTranspose", "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "Elu", "Selu", "PRelu",
    "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Neg", "Abs", "Exp", "Log", "Sqrt", "Pow",
    "Reciprocal", "Erf", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "LRN", "Concat", "Flatten", "Reshape", "Gemm", "MatMul", "Identity", "Shape", "Size",
    "Gather", "Transpose", "Cast", "Constant", "ConstantOfShape", "Equal", "Greater", "Less", "Where",
    "Expand", "Tile", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin", "Not",
    "Range", "Softplus", "InstanceNormalization",
})


#: Ops whose versions from the given opset up to 16 keep the float semantics (their inputs moved
#: from attributes at that opset; later versions only add types or optional inputs).
_SAME_SINCE = {"Slice": 10, "Pad": 11, "Resize": 11}


def _upgrade(node: Node, proto: onnx.NodeProto, opset: int, add_const: Callable[[np.ndarray, str], str],
             consumed: Callable[[str], bool]) -> list[onnx.NodeProto]:
    """The node as opset-16 node(s); refuse what cannot be converted safely."""
    op = node.op_type
    attrs = {a.name: a for a in proto.attribute}

    def remake(inputs: Sequence[str], drop: Sequence[str] = ()) -> onnx.NodeProto:
        new = helper.make_node(op, list(inputs), list(proto.output), name=proto.name, domain=proto.domain)
        new.attribute.extend(a for name, a in attrs.items() if name not in drop)
        return new

    if op == "Dropout":
        # Inference Dropout is the identity; its optional mask output is dropped (refused if used).
        if len(node.outputs) > 1 and node.outputs[1] and consumed(node.outputs[1]):
            raise UnsupportedOpError(op, node.label, opset, reason="has a mask output that is used",
                                     hint=_FALLBACK_HINT)
        return [helper.make_node("Identity", [node.inputs[0]], [node.outputs[0]], name=proto.name)]
    if op == "Clip" and opset < 11:
        lo = add_const(np.array(node.attrs.get("min", -3.4028234663852886e38), dtype=np.float32), "clip_min")
        hi = add_const(np.array(node.attrs.get("max", 3.4028234663852886e38), dtype=np.float32), "clip_max")
        return [remake([node.inputs[0], lo, hi], drop=("min", "max"))]
    if op in ("Squeeze", "Unsqueeze", "ReduceSum") and opset < 13:
        inputs = list(node.inputs)
        if "axes" in node.attrs:
            inputs.append(add_const(np.array(node.attrs["axes"], dtype=np.int64), "axes"))
        return [remake(inputs, drop=("axes",))]
    if op == "Pad" and opset < 11:
        # Pad-2: pads and value as attributes
        inputs = [node.inputs[0], add_const(np.array(node.attrs["pads"], dtype=np.int64), "pads"),
                  add_const(np.array(node.attrs.get("value", 0.0), dtype=np.float32), "value")]
        return [remake(inputs, drop=("pads", "value"))]
    if op == "Slice" and opset < 10:
        # Slice-1: starts, ends and axes as attributes (steps of 1)
        inputs = [node.inputs[0]] + [add_const(np.array(node.attrs[k], dtype=np.int64), k) for k in ("starts", "ends")]
        if "axes" in node.attrs:
            inputs.append(add_const(np.array(node.attrs["axes"], dtype=np.int64), "axes"))
        return [remake(inputs, drop=("starts", "ends", "axes"))]
    if op == "Split" and opset < 13:
        inputs = list(node.inputs)
        if "split" in node.attrs:
            inputs.append(add_const(np.array(node.attrs["split"], dtype=np.int64), "split"))
        return [remake(inputs, drop=("split",))]
    if op == "Upsample" or (op == "Resize" and opset < 11):
        # Upsample-7/9 and Resize-10 map output to input coordinates as x / scale (asymmetric)
        # and pick the nearest neighbour by flooring: Resize-11+ with those two modes said.
        mode = node.attrs.get("mode", "nearest")
        if mode not in ("nearest", "linear"):
            raise UnsupportedOpError(op, node.label, opset, reason=f"uses mode {mode!r}", hint=_FALLBACK_HINT)
        if "scales" in node.attrs:
            scales = add_const(np.array(node.attrs["scales"], dtype=np.float32), "scales")
        else:
            scales = node.inputs[1]
        roi = add_const(np.zeros(0, dtype=np.float32), "roi")
        return [helper.make_node("Resize", [node.inputs[0], roi, scales], list(proto.output), name=proto.name,
                                 mode=mode, coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    if op in ("Softmax", "LogSoftmax") and opset < 13:
        # (Log)Softmax-1..11 coerces the input to 2-D at ``axis``: exactly Flatten, the op, Reshape back.
        x, y = node.inputs[0], node.outputs[0]
        axis = int(node.attrs.get("axis", 1))
        base = y + "__sm"
        return [
            helper.make_node("Shape", [x], [base + "_shape"], name=base + "_shape"),
            helper.make_node("Flatten", [x], [base + "_2d"], name=base + "_flatten", axis=axis),
            helper.make_node(op, [base + "_2d"], [base + "_y2d"], name=base + "_softmax", axis=1),
            helper.make_node("Reshape", [base + "_y2d", base + "_shape"], [y], name=proto.name or base),
        ]
    if op == "BatchNormalization" and sum(1 for o in node.outputs if o) > 1:
        raise UnsupportedOpError(op, node.label, opset, reason="is in training mode", hint=_FALLBACK_HINT)
    if op in _SAME_SEMANTICS or _SAME_SINCE.get(op, MIN_OPSET + 1) <= opset:
        return [proto]
    try:
        old = onnx.defs.get_schema(op, opset, node.domain).since_version
        new = onnx.defs.get_schema(op, MIN_OPSET, node.domain).since_version
    except onnx.defs.SchemaError:  # an op unknown to this onnx
        old, new = -1, -2
    if old == new:
        return [proto]
    raise UnsupportedOpError(
        op, node.label, opset,
        reason=f"changed between opset {opset} and {MIN_OPSET}, and the compiled backward cannot upgrade it",
        hint=_FALLBACK_HINT,
    )


# ------------------------------------------------------------------------------- the backend


@dataclass(frozen=True)
class _Compiled:
    session: ort.InferenceSession
    seed_inputs: tuple[tuple[str, str], ...]  # (tensor, graph input)
    value_outputs: tuple[str, ...]
    grad_outputs: tuple[tuple[str, str], ...]  # (wrt, graph output)
    proto: onnx.ModelProto
    nbytes: int = 0


class OrtGradBackend:
    """Forward and input gradient of one graph in a single onnxruntime run (float32).

    One compiled model per ``(wrt, seeded tensors, requested values, input shapes, threads)``, in
    a small LRU cache; building one costs a shape pass and a session load, running it one
    onnxruntime call.

    Rows in parallel: when the caller says the batch rows are independent
    (``independent_rows=True``: true of the methods, which already split rows into chunks freely)
    and there are two or more cores, a batch runs as two halves at once, each half in its own
    onnxruntime call with half the threads, on one session compiled for the half batch. The
    backward has single-threaded kernels (ScatterElements, MaxPool with indices) and short
    element-wise steps where two threads mostly wait for each other; two independent halves
    keep both cores busy through them (2 cores, batch 8-20: ResNet-50 5-8%, DenseNet-121 8%,
    MobileNet-V2 13% faster). A plain forward gains nothing from it, so
    :class:`onnxviz.backends.onnxruntime.OrtBackend` does not do it.
    """

    #: At most this many halves run at once (beyond two, each run's own threads do better).
    WORKERS = 2

    def __init__(self, graph: Graph, model_proto: onnx.ModelProto, *, threads: int | None = None) -> None:
        if graph.opset < 9:
            raise UnsupportedOpError(
                "(model)", graph.nodes[0].label if graph.nodes else "?", graph.opset,
                reason="is below opset 9, which the compiled backward does not upgrade", hint=_FALLBACK_HINT,
            )
        self.graph = graph
        self._proto = model_proto
        self._threads = threads
        self._cache: OrderedDict[tuple[Any, ...], _Compiled] = OrderedDict()

    # ------------------------------------------------------------------ public
    def value_and_grad(
        self,
        feeds: Mapping[str, np.ndarray],
        seeds: Mapping[str, Any],
        wrt: Sequence[str],
        *,
        values: Sequence[str] = (),
        independent_rows: bool = False,
        sum_rows: bool = False,
    ) -> GradResult:
        """Values of the seeded and requested tensors and the gradients of ``sum_t <seed_t, t>``.

        Seeds are cotangent arrays; a seed given as a function of the tensor's value costs one
        extra onnxruntime forward to evaluate it. ``independent_rows`` says that no op of the
        graph mixes the rows of the batch (axis 0 of every input), so halves of the batch may run
        in parallel (see the class docstring); the results are the same either way.

        ``sum_rows=True`` returns each gradient summed over the batch (shape ``(1, ...)``), for
        callers that only want the sum (Integrated Gradients, SmoothGrad). The rows are then
        summed inside the graph as early as the backward allows: before the ops at the start of
        the path that are linear in the ``wrt`` tensor with constant coefficients (typically the
        first Conv and its BatchNormalization), so their backward runs for one row instead of all
        (see :func:`_row_sum_points`).
        """
        g = self.graph
        wrt = tuple(dict.fromkeys(wrt))
        values = tuple(dict.fromkeys(values))
        for name in (*wrt, *seeds, *values):
            if name not in g.dynamic:
                raise TargetError(f"tensor {name!r} is not an input-dependent tensor of the graph",
                                  hint="`onnxviz inspect MODEL` lists the tensors")
        arrays = self._feeds(feeds)
        seed_names = tuple(seeds)
        if any(callable(s) for s in seeds.values()):
            seed_values = self._forward_values(arrays, seed_names)
            seeds = {k: (s(seed_values[k]) if callable(s) else s) for k, s in seeds.items()}
        parts = self._parts(arrays, seeds) if independent_rows else 1
        if parts == 1:
            compiled = self._compiled(arrays, seed_names, wrt, values, self._threads, sum_rows)
            outs = self._run(compiled, arrays, seeds)
        else:
            outs = self._run_parts(arrays, seeds, seed_names, wrt, values, parts, sum_rows)
        return GradResult(
            {k: outs[k] for k in dict.fromkeys(seed_names + values)},
            {w: outs[_grad_output(w)] for w in wrt},
        )

    # ------------------------------------------------------------------ running
    def _cores(self) -> int:
        return self._threads or os.cpu_count() or 1

    def _parts(self, arrays: Mapping[str, np.ndarray], seeds: Mapping[str, Any]) -> int:
        """How many parallel parts a batch runs in: 1 unless there are rows and cores to share
        and every input and seed is an array with the batch on axis 0."""
        sizes = {v.shape[0] if v.ndim else -1 for v in arrays.values()}
        sizes |= {np.shape(s)[0] if np.ndim(s) else -1 for s in seeds.values()}
        if len(sizes) != 1:
            return 1
        n = sizes.pop()
        return max(1, min(self.WORKERS, self._cores(), n))

    def _compiled(self, arrays: Mapping[str, np.ndarray], seed_names: tuple[str, ...], wrt: tuple[str, ...],
                  values: tuple[str, ...], threads: int | None, sum_rows: bool = False) -> _Compiled:
        key = (wrt, seed_names, values, tuple((k, v.shape) for k, v in sorted(arrays.items())), threads, sum_rows)
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._compile(arrays, seed_names, wrt, values, threads, sum_rows)
            self._cache[key] = compiled
            while len(self._cache) > 1 and (
                len(self._cache) > _CACHE_SIZE or sum(c.nbytes for c in self._cache.values()) > _CACHE_BYTES
            ):
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return compiled

    def _run(self, compiled: _Compiled, arrays: Mapping[str, np.ndarray], seeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One onnxruntime call: the requested values and ``<wrt>__grad`` outputs by name."""
        run_feeds = dict(arrays)
        for tensor, inp in compiled.seed_inputs:
            shape = tuple(d.dim_value for d in next(
                i for i in compiled.proto.graph.input if i.name == inp).type.tensor_type.shape.dim)
            s = np.asarray(seeds[tensor], dtype=np.float32)
            if s.shape != shape:
                try:
                    s = np.broadcast_to(s, shape)
                except ValueError as e:
                    raise TargetError(f"seed for {tensor!r} has shape {list(s.shape)}, the tensor has {list(shape)}",
                                      hint="give a cotangent of the tensor's shape") from e
            run_feeds[inp] = np.ascontiguousarray(s)
        names = list(compiled.value_outputs) + [o for _, o in compiled.grad_outputs]
        try:
            outs = dict(zip(names, compiled.session.run(names, run_feeds)))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExecutionError(f"onnxruntime failed on the compiled backward: {str(e).strip()[:300]}",
                                 hint="use the numpy engine (Model.value_and_grad)") from e
        return outs

    def _run_parts(self, arrays: Mapping[str, np.ndarray], seeds: Mapping[str, Any], seed_names: tuple[str, ...],
                   wrt: tuple[str, ...], values: tuple[str, ...], parts: int, sum_rows: bool) -> dict[str, np.ndarray]:
        """The batch as ``parts`` equal slices run at once, each with its share of the threads,
        on one session compiled for the slice. An odd batch is padded with a copy of its last
        row seeded with zeros (one row of work, where a second slice size would cost a second
        compiled model); the padding is cut from the results (its gradient is zero, so a
        row-summed gradient needs no cut: the slices' sums are added)."""
        n = next(iter(arrays.values())).shape[0]
        size = -(-n // parts)
        pad = size * parts - n

        def padded(v: np.ndarray, zero: bool) -> np.ndarray:
            if not pad:
                return v
            tail = np.zeros_like(v[-1:]) if zero else v[-1:]
            return np.concatenate([v, np.repeat(tail, pad, axis=0)])

        full_arrays = {k: padded(v, False) for k, v in arrays.items()}
        full_seeds = {k: padded(np.asarray(s, dtype=np.float32), True) for k, s in seeds.items()}
        slices = [slice(i * size, (i + 1) * size) for i in range(parts)]
        part_arrays = [{k: v[sl] for k, v in full_arrays.items()} for sl in slices]
        part_seeds = [{k: v[sl] for k, v in full_seeds.items()} for sl in slices]
        compiled = self._compiled(part_arrays[0], seed_names, wrt, values, max(1, self._cores() // parts), sum_rows)
        results: list[dict[str, np.ndarray] | None] = [None] * parts
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                results[i] = self._run(compiled, part_arrays[i], part_seeds[i])
            except BaseException as e:  # noqa: BLE001 (re-raised in the calling thread below)
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,), name=f"onnxviz-ortgrad-{i}") for i in range(1, parts)]
        for t in threads:
            t.start()
        work(0)
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        done = [r for r in results if r is not None]
        summed = {_grad_output(w) for w in wrt} if sum_rows else set()
        return {k: (np.sum([r[k] for r in done], axis=0) if k in summed else np.concatenate([r[k] for r in done])[:n])
                for k in done[0]}

    def model(self, feeds: Mapping[str, np.ndarray], seeds: Sequence[str], wrt: Sequence[str]) -> onnx.ModelProto:
        """The compiled forward+backward model for these input shapes (for inspection), with its
        large initializers written inline (the compiled session gets them as buffers)."""
        proto, _, _, external = self._build(self._feeds(feeds), tuple(seeds), tuple(wrt), ())
        for k, t in enumerate(proto.graph.initializer):
            if t.name in external:
                proto.graph.initializer[k].CopyFrom(numpy_helper.from_array(external[t.name], t.name))
        return proto

    # ------------------------------------------------------------------ building
    def _feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for info in self.graph.inputs:
            if info.name not in feeds:
                raise InputError(f"missing model input {info.name!r}; the model takes {list(self.graph.input_names)}",
                                 hint="give one array per model input")
            v = np.asarray(feeds[info.name])
            out[info.name] = v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) and v.dtype != np.float32 else v
        return out

    def _session(self, proto: onnx.ModelProto, threads: int | None = None,
                 external: Mapping[str, np.ndarray] | None = None) -> ort.InferenceSession:
        """A session for ``proto``; ``external`` holds the buffers of its external-data
        initializers (see :func:`onnxviz.backends.ortgrad_ops.initializer`)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if external:  # onnxruntime drops unused initializers before it would look for these
            used = {i for n in proto.graph.node for i in n.input}
            names = [t.name for t in proto.graph.initializer if t.name in external and t.name in used]
            opts.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(external[k]) for k in names])
        opts.log_severity_level = 3
        # Threads stop spinning when a run returns (they still spin between the parallel sections
        # of a run): onnxviz alternates sessions (a forward, then the compiled backward) and numpy
        # work, and a pool that keeps spinning after its run takes the cores from whatever runs
        # next (on 2 cores, a plain forward right after a compiled backward took 78 ms, not 50).
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        threads = threads or self._threads
        if threads:
            opts.intra_op_num_threads = threads
        try:
            # All optimizations, as the plain forward: the NCHWc layout sums in another order, which
            # flips a few ReLU6 masks of units sitting within rounding of a bound (MobileNet-V2 with
            # random weights: one flip of 47k units moves the input gradient 1.5% from float64, as
            # far as PyTorch's own float32 gradient lands on that input).
            return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExecutionError(f"onnxruntime could not load the compiled backward: {str(e).strip()[:300]}",
                                 hint="use the numpy engine (Model.value_and_grad)") from e

    def _forward_values(self, arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        from .onnxruntime import OrtBackend

        if not hasattr(self, "_ort"):
            self._ort = OrtBackend(self._proto, self.graph, threads=self._threads)
        return self._ort.run(arrays, names)

    def _compile(self, arrays: Mapping[str, np.ndarray], seeds: tuple[str, ...], wrt: tuple[str, ...],
                 values: tuple[str, ...], threads: int | None, sum_rows: bool) -> _Compiled:
        proto, seed_inputs, grad_outputs, external = self._build(arrays, seeds, wrt, values, sum_rows)
        value_outputs = tuple(dict.fromkeys(seeds + values))
        nbytes = proto.ByteSize() + sum(v.nbytes for v in external.values())
        return _Compiled(self._session(proto, threads, external), seed_inputs, value_outputs, grad_outputs, proto,
                         nbytes)

    def _build(self, arrays: Mapping[str, np.ndarray], seeds: tuple[str, ...], wrt: tuple[str, ...],
               values: tuple[str, ...], sum_rows: bool = False,
               ) -> tuple[onnx.ModelProto, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], dict[str, np.ndarray]]:
        """The compiled model, its seed inputs and gradient outputs, and the buffers of its
        external-data initializers."""
        g = self.graph
        opset = g.opset
        consts = g.constants
        out_opset = max(opset, MIN_OPSET)
        targets = set(seeds) | set(values) | set(wrt)
        fwd_nodes = [n for n in g.ancestors(targets) if any(o in g.dynamic for o in n.outputs)]

        # 1. the forward nodes at opset >= 16, weights as initializers
        extra_inits: list[onnx.TensorProto] = []

        def add_const(value: np.ndarray, hint: str) -> str:
            name = f"{hint}__up{len(extra_inits)}"
            extra_inits.append(numpy_helper.from_array(value, name))
            return name

        needed_ids = {n.index for n in fwd_nodes}

        def consumed(name: str) -> bool:
            return name in targets or any(c.index in needed_ids for c in g.consumers.get(name, ()))

        protos: list[onnx.NodeProto] = []
        for n in fwd_nodes:
            if n.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(n.op_type, n.label, opset, reason=f"is in domain {n.domain!r}",
                                         hint=_FALLBACK_HINT)
            src = self._proto.graph.node[n.index]
            protos.extend(_upgrade(n, src, opset, add_const, consumed) if opset < MIN_OPSET else [src])
        nodes = [_as_node(k, p) for k, p in enumerate(protos)]
        produced = {o for n in nodes for o in n.outputs if o}
        extra_names = {t.name for t in extra_inits}
        used_consts = {i for n in nodes for i in n.inputs
                       if i and i not in produced and i not in arrays and i not in extra_names}
        missing = [i for i in used_consts if i not in consts]
        if missing:
            raise ExecutionError(f"tensors {sorted(missing)[:5]} are neither inputs, produced nor constant",
                                 hint="check the model with onnx.checker")

        # 2. the path from wrt to the seeds, as the numpy engine defines it
        reach: set[str] = set(wrt)
        for n in nodes:
            if n.op_type not in NON_DIFFERENTIABLE and any(i in reach for i in n.inputs if i):
                reach.update(o for o in n.outputs if o)
        needed: set[str] = set(seeds)
        for n in reversed(nodes):
            if any(o in needed for o in n.outputs):
                needed.update(i for i in n.inputs if i)
        path_ids = {n.index for n in nodes if n.op_type not in NON_DIFFERENTIABLE
                    and any(i in reach for i in n.inputs if i) and any(o in needed for o in n.outputs)}
        for n in nodes:
            if n.index not in path_ids:
                continue
            if n.op_type in VALUE_BLOCKING:
                raise UnsupportedOpError(n.op_type, n.label, opset, reason="lies on the gradient path and has no "
                                         "useful derivative (its output is quantized, rounded or selected)")
            if n.op_type not in EMITTERS:
                raise _unsupported(n, opset, "has no VJP emitter in the compiled onnxruntime backward")

        # MaxPool on the path also outputs its argmax indices.
        for k, n in enumerate(nodes):
            if n.op_type == "MaxPool" and k in path_ids and (len(n.outputs) < 2 or not n.outputs[1]):
                p = onnx.NodeProto()
                p.CopyFrom(protos[k])
                del p.output[1:]
                p.output.append(n.outputs[0] + "__indices")
                protos[k] = p
                nodes[k] = _as_node(k, p)
        path = [n for n in nodes if n.index in path_ids]

        # 3. static shapes of the tensors the emitters look at
        inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                  for k, v in arrays.items()]
        external: dict[str, np.ndarray] = {}
        initializers = [initializer(np.asarray(consts[name]), name, external) for name in sorted(used_consts)]
        initializers += extra_inits
        wanted = {x for n in path for x in (*n.inputs, *n.outputs) if x and x not in consts} | targets
        shapes = self._shapes(protos, inputs, initializers, out_opset, wanted, arrays, external)

        # 4. the backward
        b = GraphBuilder(out_opset, shapes, {**consts, **{t.name: numpy_helper.to_array(t) for t in extra_inits}},
                         reach, external)
        b.keep = set(wrt)
        contributions: dict[str, list[str]] = {}
        seed_inputs = []
        for name in seeds:
            inp = f"{name}__seed"
            seed_inputs.append((name, inp))
            b.shapes[inp] = shapes[name]
            contributions.setdefault(name, []).append(inp)
        total: dict[str, str] = {}
        sum_at = _row_sum_points(path, wrt, b.consts, shapes, set(seeds) | set(values)) if sum_rows else set()
        batch_axis = b.const(np.array([0], dtype=np.int64), "batch_axis", np.int64) if sum_at else ""

        def grad_of(name: str) -> str | None:
            if name in total:
                return total[name]
            parts = contributions.get(name)
            if not parts:
                return None
            total[name] = parts[0] if len(parts) == 1 else b.op("Sum", parts)
            if name in sum_at:
                total[name] = b.op("ReduceSum", [total[name], batch_axis], keepdims=1)
            return total[name]

        for n in reversed(path):
            gouts = tuple(grad_of(o) if o else None for o in n.outputs)
            if all(x is None for x in gouts):
                continue
            gins = EMITTERS[n.op_type](b, n, gouts)
            for k, (name, gi) in enumerate(zip(n.inputs, gins)):
                if gi is not None and b.needs(n, k):
                    contributions.setdefault(name, []).append(gi)
        _enter_blocked_layout(b, {g: shapes[name] for name, parts in contributions.items() for g in parts
                                  if name in shapes})
        grad_outputs = []
        grad_shapes = {w: ((1,) + tuple(shapes[w][1:]) if sum_rows else shapes[w]) for w in wrt}
        for w in wrt:
            out = _grad_output(w)
            gw = grad_of(w)
            if gw is None:
                b.nodes.append(helper.make_node(
                    "ConstantOfShape", [b.const(np.array(grad_shapes[w], dtype=np.int64), "shape", np.int64)], [out],
                    value=numpy_helper.from_array(np.zeros(1, dtype=np.float32))))
            else:
                b.nodes.append(helper.make_node("Identity", [gw], [out]))
            grad_outputs.append((w, out))

        seed_vis = [helper.make_tensor_value_info(inp, TensorProto.FLOAT, shapes[t]) for t, inp in seed_inputs]
        outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[name])
                   for name in dict.fromkeys(seeds + values)]
        outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, grad_shapes[w]) for w, o in grad_outputs]
        graph = helper.make_graph(protos + b.nodes, "onnxviz_vjp", inputs + seed_vis, outputs,
                                  initializer=initializers + b.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", out_opset)], ir_version=8,
                                  producer_name="onnxviz-ortgrad")
        return model, tuple(seed_inputs), tuple(grad_outputs), external

    def _shapes(self, protos: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
                initializers: list[onnx.TensorProto], opset: int, wanted: set[str],
                arrays: Mapping[str, np.ndarray], external: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """Static shapes: onnx shape inference, then one tapped onnxruntime run for the rest."""
        fwd = helper.make_model(
            helper.make_graph(protos, "fwd", inputs, [], initializer=initializers),
            opset_imports=[helper.make_opsetid("", opset)], ir_version=8,
        )
        shapes: dict[str, tuple[int, ...]] = {k: tuple(v.shape) for k, v in arrays.items()}
        # onnx's shape inference and onnxruntime disagree on some ceil_mode pools (a last window
        # starting in the padding: onnx counts it, onnxruntime drops it), and the difference
        # travels downstream: with such a pool, every shape comes from onnxruntime's run.
        ceil = any(a.name == "ceil_mode" and a.i for p in protos for a in p.attribute)
        try:
            inferred = [] if ceil else onnx.shape_inference.infer_shapes(fwd, data_prop=True).graph.value_info
            for vi in inferred:
                dims = vi.type.tensor_type.shape.dim
                if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                    shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            # shape inference is best effort; the tapped run below is exact
            log.info("shape inference failed on the compiled forward: %s", e)
        rest = sorted(wanted - set(shapes))
        if rest:
            fwd.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in rest)
            sess = self._session(fwd, external=external)
            for name, v in zip(rest, sess.run(rest, dict(arrays))):
                shapes[name] = tuple(v.shape)
        return shapes


def _grad_output(wrt: str) -> str:
    """The compiled model's output holding the gradient w.r.t. ``wrt``."""
    return f"{wrt}__grad"


#: Ops whose output is linear in one input when the others are constants, with the input's
#: gradient independent of its value: a batch's row gradients can be summed before their VJP.
_LINEAR_IN_FIRST = frozenset({"Conv", "BatchNormalization", "Identity"})
_LINEAR_WITH_CONSTANT = frozenset({"Add", "Sub", "Mul", "Div"})


def _row_sum_points(path: Sequence[Node], wrt: Sequence[str], consts: Mapping[str, Any],
                    shapes: Mapping[str, tuple[int, ...]], protected: set[str]) -> set[str]:
    """For each ``wrt`` tensor, the tensor whose gradient rows can be summed first.

    Walking forward from ``wrt``, the chain of single-consumer path nodes that are linear in the
    walked tensor with constant coefficients (a Conv with constant weights and bias, an inference
    BatchNormalization, Identity, Add/Sub/Mul/Div with a constant that does not broadcast the
    tensor, Div only as numerator) has a backward that is the same linear map for every row:
    summing the rows' cotangents at the chain's end and running the chain's backward once gives
    the sum of the rows' gradients. The walk stops at a tensor that is seeded, requested or
    another ``wrt`` (its own gradient is wanted per row), and at the first nonlinear op.
    """
    consumers: dict[str, list[Node]] = {}
    for n in path:
        for i in n.inputs:
            if i:
                consumers.setdefault(i, []).append(n)
    points = set()
    for w in wrt:
        t = w
        while True:
            users = consumers.get(t, [])
            if len(users) != 1:
                break
            n = users[0]
            out = n.outputs[0]
            others = [i for i in n.inputs if i and i != t]
            if len(n.outputs) != 1 or out in protected or out in wrt or not all(i in consts for i in others):
                break
            if n.op_type in _LINEAR_IN_FIRST:
                ok = n.inputs[0] == t
            elif n.op_type in _LINEAR_WITH_CONSTANT:
                ok = (n.inputs.count(t) == 1 and shapes.get(out) == shapes.get(t)
                      and (n.op_type != "Div" or n.inputs[0] == t))
            else:
                ok = False
            if not ok:
                break
            t = out
        points.add(t)
    return points


#: Backward ops onnxruntime's NCHWc layout transformer keeps in its blocked layout.
_BLOCKED_OPS = frozenset({"Conv", "Mul", "Sum", "Add", "HardSigmoid", "Relu", "MaxPool", "AveragePool", "Concat"})
_ELEMENTWISE = frozenset({"Mul", "Sum", "Add"})


def _enter_blocked_layout(b: GraphBuilder, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Route 4-D gradients made by ops outside the NCHWc layout (``Expand`` of a global pool,
    ``ConvTranspose``, ``ScatterElements``) that feed element-wise ops through a depthwise
    identity 1x1 ``Conv``.

    onnxruntime keeps an element-wise op in its blocked layout only when all its inputs are
    blocked; one plain input (e.g. the gradient entering a ResNet's skip path) makes every
    residual ``Sum`` downstream plain, with a layout reorder on each side of every conv. The
    identity conv costs about one reorder and keeps the rest of the backward blocked.
    """
    producer = {o: n for n in b.nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in b.nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for name, shape in shapes.items():
        node = producer.get(name)
        if node is None or node.op_type in _BLOCKED_OPS or len(shape) != 4 or shape[1] < 8:
            continue
        users = consumers.get(name, [])
        if not any(u.op_type in _ELEMENTWISE for u in users):
            continue
        ones = b.const(np.ones((shape[1], 1, 1, 1), np.float32), "ones")
        blocked = b.fresh("blocked")
        b.nodes.insert(b.nodes.index(node) + 1,
                       helper.make_node("Conv", [name, ones], [blocked], name=blocked, group=shape[1]))
        for u in users:
            for k, i in enumerate(u.input):
                if i == name:
                    u.input[k] = blocked


def _as_node(index: int, proto: onnx.NodeProto) -> Node:
    return Node(index, proto.name, proto.name or f"{proto.op_type}#{index}", proto.op_type, proto.domain,
                tuple(proto.input), tuple(proto.output), node_attributes(proto))
