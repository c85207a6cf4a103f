"""Run an ONNX graph in numpy, record a tape, and go backward over it.

The forward runs only the nodes the requested tensors need, as a cached :mod:`.plan` that fuses
chains of nodes nothing can observe (Conv + BatchNormalization + Relu and the like). The tape
records only the nodes on a path from a ``wrt`` tensor to a seeded tensor (those always run
alone); every other intermediate is dropped as soon as its last consumer has run, and each tape
entry is dropped as soon as the backward has passed it.

The forward can also be taken from onnxruntime (``forward="onnxruntime"``, float32 only): the
tensors the tape needs are tapped from one onnxruntime run and the backward rules run in numpy
over them. The numpy forward stays the reference and the float64 path.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from ...errors import ExecutionError, InputError, TargetError, UnsupportedOpError
from .plan import FoldCache, Plan, Step, build_plan, run_fused, run_head
from .registry import NON_DIFFERENTIABLE, REGISTRY, VALUE_BLOCKING, Call, VjpFn

if TYPE_CHECKING:
    from ...graph import Graph, Node

__all__ = ["NumpyEngine", "GradResult", "Seed"]

#: A seed (cotangent) for a tensor: an array of the tensor's shape, or a function of the tensor's
#: value that returns one (for objectives that depend on the value, e.g. a mean of squares).
Seed = Union[np.ndarray, Callable[[np.ndarray], np.ndarray]]
ForwardKind = Literal["numpy", "onnxruntime", "auto"]


@dataclass(frozen=True)
class GradResult:
    """Values of the requested tensors and the gradients of ``sum_t <seed_t, t>`` w.r.t. ``wrt``."""

    values: Mapping[str, np.ndarray]
    grads: Mapping[str, np.ndarray]


def _tune_allocator() -> None:
    """Keep freed multi-megabyte activations in glibc's heap instead of returning them to the OS.

    With glibc's defaults every freed array above the mmap threshold goes back to the kernel and
    the next one pays page faults again: measured 2-5x slower convolutions on ResNet-50 (e.g. a
    144x56x56 depthwise conv 6 ms instead of 1.4 ms). onnxruntime's own arena never pays this.
    This is a process-wide malloc setting (the price: the process keeps freed memory for reuse);
    set ``ONNXVIZ_MALLOC_TUNING=0`` to leave the allocator alone. No-op off glibc.
    """
    if os.environ.get("ONNXVIZ_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):  # not glibc
        return


_ALLOCATOR_TUNED = False
_PLAN_CACHE_SIZE = 32


class NumpyEngine:
    """The numpy interpreter and reverse-mode autodiff for one graph (stateless between calls
    except for bounded caches: constants cast to each dtype, forward plans per request, and
    weights with folded per-channel affine maps, see :mod:`.plan`)."""

    def __init__(self, graph: Graph, *, ort: object | None = None) -> None:
        global _ALLOCATOR_TUNED
        if not _ALLOCATOR_TUNED:
            _tune_allocator()
            _ALLOCATOR_TUNED = True
        self.graph = graph
        self._ort = ort
        self._constants: dict[np.dtype, dict[str, np.ndarray]] = {}
        self._plans: OrderedDict[tuple[frozenset[str], frozenset[int]], Plan] = OrderedDict()
        # room for one folded copy of every float weight in float32 and one in float64
        float_values = sum(v.size for v in graph.constants.values() if v.dtype.kind == "f")
        self._folds = FoldCache(12 * float_values)

    # ------------------------------------------------------------------ helpers
    def constants(self, dtype: np.dtype) -> dict[str, np.ndarray]:
        cached = self._constants.get(dtype)
        if cached is None:
            cached = {
                k: (v.astype(dtype) if np.issubdtype(v.dtype, np.floating) and v.dtype != dtype else v)
                for k, v in self.graph.constants.items()
            }
            self._constants[dtype] = cached
        return cached

    def _feeds(self, feeds: Mapping[str, np.ndarray], dtype: np.dtype) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for info in self.graph.inputs:
            if info.name not in feeds:
                raise InputError(
                    f"missing model input {info.name!r}; the model takes {list(self.graph.input_names)}",
                    hint="give one array per model input",
                )
            value = np.asarray(feeds[info.name])
            if np.issubdtype(value.dtype, np.floating) and value.dtype != dtype:
                value = value.astype(dtype)
            out[info.name] = value
        return out

    def check_names(self, names: Sequence[str], what: str) -> None:
        """Raise TargetError for a name that is not an input-dependent tensor of the graph."""
        g = self.graph
        for name in names:
            if name not in g.dynamic:
                known = name in g.producer or name in g.initializers
                raise TargetError(
                    f"{what} tensor {name!r} " + ("does not depend on any input" if known else "is not in the graph"),
                    hint="`onnxviz inspect MODEL` lists the tensors; gradients exist only for input-dependent ones",
                )

    # ------------------------------------------------------------------ forward
    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        dtype: np.dtype | type = np.float32,
    ) -> dict[str, np.ndarray]:
        """Numpy forward pass: the values of ``outputs`` (default: the graph outputs)."""
        dtype = np.dtype(dtype)
        outputs = tuple(outputs) if outputs is not None else self.graph.output_names
        self.check_names(outputs, "requested")
        env, _ = self._forward(self._feeds(feeds, dtype), set(outputs), frozenset(), dtype)
        return {name: env[name] for name in outputs}

    def _plan(self, targets: set[str], on_path: frozenset[int]) -> Plan:
        key = (frozenset(targets), on_path)
        plan = self._plans.get(key)
        if plan is None:
            plan = build_plan(self.graph, key[0], on_path)
            self._plans[key] = plan
            if len(self._plans) > _PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    def _forward(
        self,
        env_in: dict[str, np.ndarray],
        targets: set[str],
        on_path: frozenset[int],
        dtype: np.dtype,
        needs_of: Callable[[Node], tuple[bool, ...]] | None = None,
    ) -> tuple[dict[str, np.ndarray], list[tuple[Node, Call]]]:
        g = self.graph
        consts = self.constants(dtype)
        plan = self._plan(targets, on_path)
        env = dict(env_in)
        tape: list[tuple[Node, Call]] = []

        for k, step in enumerate(plan.steps):
            n = step.nodes[0]

            def value(name: str, step: Step = step) -> np.ndarray:
                if name in env:
                    return env[name]
                if name in consts:
                    return consts[name]
                raise ExecutionError(
                    f"node {step.nodes[0].label!r} ({step.nodes[0].op_type}) needs tensor {name!r}, "
                    "which nothing produced",
                    hint="the model may be invalid; check it with onnx.checker",
                )

            args: list[np.ndarray | None] = [value(name) if name else None for name in n.inputs]
            if step.head is not None:
                if REGISTRY.get_forward(n.op_type, g.opset) is None or n.domain not in ("", "ai.onnx"):
                    raise UnsupportedOpError(n.op_type, n.label, g.opset, reason="has no numpy forward")
                if n.op_type == "BatchNormalization" and g.opset < 14 and sum(1 for o in n.outputs if o) > 1:
                    # Before opset 14 only the extra running-statistics outputs mark training mode.
                    raise UnsupportedOpError(
                        n.op_type,
                        n.label,
                        g.opset,
                        reason="is in training mode (it has running-statistics outputs)",
                        hint="export the model in eval mode (model.eval() in PyTorch)",
                    )
            try:
                if step.fused:
                    outs: tuple[np.ndarray, ...] = (run_fused(step, value, g.opset, dtype, self._folds),)
                else:
                    outs = run_head(step, args, g.opset)
            except (UnsupportedOpError, InputError, TargetError, ExecutionError):
                raise
            except Exception as e:
                shapes = [None if a is None else list(a.shape) for a in args]
                fused = ", fused with " + ", ".join(m.op_type for m in step.nodes[1:]) if step.fused else ""
                raise ExecutionError(
                    f"numpy forward of node {n.label!r} ({n.op_type}{fused}, opset {g.opset}) failed on input "
                    f"shapes {shapes}: {e}",
                    hint="check the input shape; if it is right, this is a bug in onnxviz's numpy engine",
                ) from e
            for name, out in zip(step.outputs, outs):
                if name:
                    env[name] = out
            if n.index in on_path:
                needs = needs_of(n) if needs_of else tuple(False for _ in n.inputs)
                outs_kept = tuple(outs[: len(n.outputs)])
                tape.append((n, Call(n.op_type, tuple(args), outs_kept, n.attrs, needs, n.label, g.opset)))
            for name in step.inputs:
                if plan.last_use.get(name) == k and name in env and name not in targets:
                    del env[name]
        return env, tape

    # ------------------------------------------------------------------ backward
    def value_and_grad(
        self,
        feeds: Mapping[str, np.ndarray],
        seeds: Mapping[str, Seed],
        wrt: Sequence[str],
        *,
        values: Sequence[str] = (),
        dtype: np.dtype | type = np.float32,
        rules: Mapping[str, VjpFn] | None = None,
        forward: ForwardKind = "numpy",
    ) -> GradResult:
        """Gradients of ``sum_t <seed_t, value_t>`` w.r.t. each ``wrt`` tensor.

        ``rules`` overrides the VJP rule of an op type for this call only (guided backprop,
        deconvnet, redirected ReLU). A ``wrt`` tensor the seeds do not depend on gets zeros.
        """
        dtype = np.dtype(dtype)
        g = self.graph
        wrt = tuple(wrt)
        self.check_names(wrt, "wrt")
        self.check_names(tuple(seeds), "objective")
        self.check_names(tuple(values), "requested")
        rules = dict(rules or {})

        # Tensors that carry a gradient from wrt (forward reachability through differentiable ops).
        reach: set[str] = set(wrt)
        for n in g.nodes:
            if n.op_type in NON_DIFFERENTIABLE:
                continue
            if any(i in reach for i in n.inputs if i):
                reach.update(o for o in n.outputs if o)
        # Tensors the seeds depend on.
        needed = {o for n in g.ancestors(set(seeds)) for o in n.outputs} | set(seeds)
        self._check_blocking(set(wrt), needed)
        on_path = frozenset(
            n.index
            for n in g.nodes
            if n.op_type not in NON_DIFFERENTIABLE
            and any(i in reach for i in n.inputs if i)
            and any(o in needed for o in n.outputs)
        )

        def needs_of(n: Node) -> tuple[bool, ...]:
            return tuple(bool(i) and i in reach for i in n.inputs)

        targets = set(seeds) | set(values) | set(wrt)
        use_ort = forward == "onnxruntime" or (forward == "auto" and dtype == np.float32 and self._ort is not None)
        if use_ort:
            env, tape = self._forward_ort(feeds, targets, on_path, needs_of)
        else:
            env, tape = self._forward(self._feeds(feeds, dtype), targets, on_path, dtype, needs_of)

        grads: dict[str, np.ndarray] = {}
        for name, seed in seeds.items():
            value = env[name]
            s = seed(value) if callable(seed) else seed
            s = np.asarray(s)
            if s.shape != value.shape:
                try:
                    s = np.broadcast_to(s, value.shape)
                except ValueError as e:
                    raise TargetError(
                        f"seed for {name!r} has shape {list(s.shape)}, the tensor has {list(value.shape)}",
                        hint="give a cotangent of the tensor's shape",
                    ) from e
            s = s.astype(value.dtype, copy=False)
            grads[name] = grads[name] + s if name in grads else s

        wrt_set = set(wrt)
        while tape:
            n, call = tape.pop()
            gouts = tuple(grads.get(o) if o else None for o in n.outputs)
            for o in n.outputs:
                if o and o not in wrt_set:
                    grads.pop(o, None)
            if all(x is None for x in gouts):
                continue
            rule = rules.get(n.op_type) or REGISTRY.get_vjp(n.op_type, g.opset)
            if rule is None:
                raise UnsupportedOpError(
                    n.op_type, n.label, g.opset, reason="has no gradient rule in the numpy engine"
                )
            gins = rule(call, *gouts)
            for name, need, gi in zip(n.inputs, call.needs, gins):
                if not need or gi is None:
                    continue
                grads[name] = grads[name] + gi if name in grads else gi
        result_grads = {}
        for name in wrt:
            if name in grads:
                result_grads[name] = grads[name]
            else:
                ref = env.get(name)
                result_grads[name] = np.zeros_like(ref) if ref is not None else np.zeros(())
        out_values = {name: env[name] for name in dict.fromkeys(tuple(seeds) + tuple(values))}
        return GradResult(out_values, result_grads)

    def check_path(self, wrt: Sequence[str], seeds: Sequence[str]) -> None:
        """Raise UnsupportedOpError when a gradient from ``seeds`` to ``wrt`` would cross a
        quantizing or rounding op (whatever engine computes it: the result would be zeros)."""
        needed = {o for n in self.graph.ancestors(set(seeds)) for o in n.outputs} | set(seeds)
        self._check_blocking(set(wrt), needed)

    def _check_blocking(self, wrt: set[str], needed: set[str]) -> None:
        """Refuse a gradient that would cross a quantizing or rounding op: it would be silently 0."""
        g = self.graph
        depends = set(wrt)
        for n in g.nodes:
            if any(i in depends for i in n.inputs if i):
                if n.op_type in VALUE_BLOCKING and any(o in needed for o in n.outputs):
                    raise UnsupportedOpError(
                        n.op_type,
                        n.label,
                        g.opset,
                        reason="lies on the gradient path and has no useful derivative (its output is "
                        "quantized, rounded or selected), so gradients through it would be silently zero",
                        hint="forward-only methods (occlusion, RISE) and kernels/feature maps still work; "
                        "explain the float model before quantization for gradient-based maps",
                    )
                depends.update(o for o in n.outputs if o)

    def _forward_ort(
        self,
        feeds: Mapping[str, np.ndarray],
        targets: set[str],
        on_path: frozenset[int],
        needs_of: Callable[[Node], tuple[bool, ...]],
    ) -> tuple[dict[str, np.ndarray], list[tuple[Node, Call]]]:
        """Forward in onnxruntime with taps on every tensor the tape needs (float32)."""
        if self._ort is None:
            raise ExecutionError("no onnxruntime backend attached", hint="use forward='numpy'")
        g = self.graph
        consts = self.constants(np.dtype(np.float32))
        path_nodes = [n for n in g.nodes if n.index in on_path]
        taps = set(targets)
        for n in path_nodes:
            taps.update(x for x in n.inputs + n.outputs if x and x in g.dynamic)
        env = self._ort.run(feeds, sorted(taps, key=_order(g)))  # type: ignore[attr-defined]
        tape: list[tuple[Node, Call]] = []
        for n in path_nodes:
            args = tuple(
                None if not name else (env[name] if name in env else consts.get(name)) for name in n.inputs
            )
            outs = tuple(env[o] if o else None for o in n.outputs)
            tape.append((n, Call(n.op_type, args, outs, n.attrs, needs_of(n), n.label, g.opset)))
        return env, tape


def _order(graph: Graph) -> Callable[[str], int]:
    position = {name: k for k, name in enumerate(graph.tensor_names())}
    return lambda name: position.get(name, -1)
