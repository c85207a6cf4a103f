"""The forward plan of the numpy engine: which nodes run, fused into which steps, and when each
tensor dies.

A plan is built once per (requested tensors, taped nodes) and cached by the engine. Most steps run
one node through its registered forward. Where nothing can observe the tensors in between, a step
runs a chain of nodes as one kernel (forward-only runs, and the part of a gradient run before the
``wrt`` tensors, are where explanation methods spend their forward time):

- ``Conv`` with constant weights followed by per-channel affine nodes (inference
  ``BatchNormalization``; ``Mul``, ``Add``, ``Sub`` or ``Div`` by a per-channel constant): the
  affine map is folded into the conv's weight and bias (the scale composed in float64, the
  product taken in the run's dtype; cached by the engine in a :class:`FoldCache`);
- per-channel affine nodes after any other node, or starting a step: one multiply and one add
  for the whole chain, in place on the head's result when that is a fresh buffer;
- an ``Add`` or ``Sum`` of another input-dependent tensor after that (a residual connection,
  when the other tensor exists before the step runs): added in place;
- a ``Relu`` or a ``Clip`` with constant bounds ending a step: applied in place to the step's
  result when that is a fresh buffer (a conv output, a sum; never a view of another tensor);
- a ``MaxPool`` whose ``Indices`` nothing reads: the maxima only.

A tensor is fused away only when exactly one node that runs reads it (the next node of the chain,
once), it is not requested (outputs, taps, seeds, ``wrt``) and no node of the chain is on the
tape, so VJP rules, their per-call overrides and every requested tensor see what an unfused run
computes. Values differ from an unfused run by rounding only (``x * a + b`` instead of
``(x - mean) * a + b``). Whether a constant is per channel depends on the runtime rank, so that
is checked when the step runs; where the check fails the step runs its nodes one by one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .ops.activation import clip_bounds, clip_into, relu_into
from .ops.pool import max_pool_values
from .registry import REGISTRY

if TYPE_CHECKING:
    from ...graph import Graph, Node

__all__ = ["FoldCache", "Plan", "Step", "build_plan", "run_fused", "run_head"]

Array = np.ndarray
Lookup = Callable[[str], Array | None]
FoldKey = tuple[tuple[int, ...], str, int, int]
Folded = tuple[Array | None, Array | None]

_AFFINE_BINARY = frozenset({"Mul", "Add", "Sub", "Div"})
_ACTIVATIONS = frozenset({"Relu", "Clip"})


@dataclass(frozen=True)
class Step:
    """One unit of the forward run.

    ``head`` runs through its forward (``None``: the step starts with ``affine``); then the
    per-channel ``affine`` nodes, whose operand ``xs[i]`` is the previous node's output (folded
    into the weights when ``conv_fold``); then the ``residual`` Add/Sum; then ``act``.
    ``values_only``: a ``MaxPool`` head computes ``Y`` alone. ``inputs`` are the tensors the
    step reads (constants included), ``outputs`` the tensors it defines.
    """

    head: Node | None
    affine: tuple[Node, ...]
    xs: tuple[str, ...]
    residual: Node | None
    act: Node | None
    values_only: bool
    conv_fold: bool
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def nodes(self) -> tuple[Node, ...]:
        return _chain(self.head, self.affine, self.residual, self.act)

    @property
    def fused(self) -> bool:
        return len(self.nodes) > 1 or self.head is None


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    last_use: Mapping[str, int]  # tensor -> index of the last step that reads it


class FoldCache:
    """Folded per-channel parameters and conv weights, least recently used first out.

    Bounded in bytes (the engine gives it room for one folded copy of every float weight in
    float32 and one in float64), so no sequence of requests grows it without limit.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[FoldKey, Folded] = OrderedDict()
        self._bytes = 0

    def get(self, key: FoldKey) -> Folded | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: FoldKey, value: Folded) -> None:
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        if key in self._items:
            self._bytes -= _nbytes(self._items.pop(key))
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= _nbytes(old)


def _nbytes(value: Folded) -> int:
    return sum(a.nbytes for a in value if a is not None)


# ------------------------------------------------------------------------------------ planning


def build_plan(graph: Graph, targets: frozenset[str], on_path: frozenset[int]) -> Plan:
    """The steps that compute ``targets``; the nodes in ``on_path`` (taped) always run alone."""
    g = graph
    nodes = [
        n for n in g.ancestors(set(targets)) if any(o in g.dynamic for o in n.outputs)
    ]
    reads: dict[str, list[Node]] = {}
    for n in nodes:
        for name in n.inputs:
            if name:
                reads.setdefault(name, []).append(n)

    def runnable(n: Node) -> bool:
        return (
            n.index not in on_path
            and n.domain in ("", "ai.onnx")
            and REGISTRY.get_forward(n.op_type, g.opset) is not None
        )

    def sole_reader(name: str) -> Node | None:
        readers = reads.get(name, ())
        if name in targets or len(readers) != 1 or not runnable(readers[0]):
            return None
        return readers[0]

    def float_const(name: str) -> bool:
        return (
            bool(name)
            and name not in g.dynamic
            and name in g.constants
            and g.constants[name].dtype.kind == "f"
        )

    def single_output(n: Node) -> bool:
        return bool(n.outputs) and bool(n.outputs[0]) and not any(n.outputs[1:])

    def affine_of(n: Node, x: str) -> bool:
        """``n`` maps ``x`` per channel (up to the runtime shape check)."""
        if not single_output(n):
            return False
        if n.op_type == "BatchNormalization":
            return (
                len(n.inputs) == 5
                and n.inputs[0] == x
                and all(float_const(p) for p in n.inputs[1:])
                and not n.attrs.get("training_mode", 0)
                and (g.opset >= 9 or n.attrs.get("spatial", 1) == 1)
            )
        if (
            n.op_type not in _AFFINE_BINARY
            or len(n.inputs) != 2
            or n.inputs.count(x) != 1
        ):
            return False
        other = n.inputs[1] if n.inputs[0] == x else n.inputs[0]
        return float_const(other) and (n.op_type != "Div" or n.inputs[0] == x)

    def residual_of(n: Node, x: str, first: Node) -> bool:
        """``n`` adds to ``x`` another input-dependent tensor that exists before ``first`` runs
        (the step runs where its first node is)."""
        if (
            n.op_type not in ("Add", "Sum")
            or not single_output(n)
            or len(n.inputs) != 2
        ):
            return False
        other = n.inputs[1] if n.inputs[0] == x else n.inputs[0]
        producer = g.producer.get(other)
        return (
            n.inputs.count(x) == 1
            and other in g.dynamic
            and (producer is None or producer.index < first.index)
        )

    def activation_of(n: Node, x: str) -> bool:
        return (
            n.op_type in _ACTIVATIONS
            and single_output(n)
            and n.inputs[0] == x
            and all(
                not name or (name not in g.dynamic and name in g.constants)
                for name in n.inputs[1:]
            )
        )

    steps: list[Step] = []
    absorbed: set[int] = set()
    for n in nodes:
        if n.index in absorbed:
            continue
        values_only = _values_only(n, reads, targets, on_path)
        if not runnable(n) or not (single_output(n) or values_only):
            steps.append(_step(n, (), (), None, None, values_only, False))
            continue
        head: Node | None = n
        affine: list[Node] = []
        xs: list[str] = []
        x = n.outputs[0]
        first = n.inputs[0] if n.inputs else ""
        if first in g.dynamic and affine_of(n, first):
            head, affine, xs = None, [n], [first]
        while (r := sole_reader(x)) is not None and affine_of(r, x):
            affine.append(r)
            xs.append(x)
            x = r.outputs[0]
        r = sole_reader(x)
        residual = r if r is not None and residual_of(r, x, n) else None
        if residual is not None:
            x = residual.outputs[0]
            r = sole_reader(x)
        act = r if r is not None and activation_of(r, x) else None
        if head is None and len(affine) == 1 and residual is None and act is None:
            # a lone Mul/Add/Sub/Div is one pass already (a lone BN is three: it is fused)
            lone = affine[0].op_type != "BatchNormalization"
            head, affine, xs = (affine[0], [], []) if lone else (head, affine, xs)
        conv_fold = (
            head is not None
            and head.op_type == "Conv"
            and bool(affine)
            and all(name not in g.dynamic for name in head.inputs[1:] if name)
        )
        step = _step(
            head, tuple(affine), tuple(xs), residual, act, values_only, conv_fold
        )
        absorbed.update(m.index for m in step.nodes)
        steps.append(step)
    last_use: dict[str, int] = {}
    for k, s in enumerate(steps):
        for name in s.inputs:
            last_use[name] = k
    return Plan(tuple(steps), last_use)


def _values_only(
    n: Node,
    reads: Mapping[str, Sequence[Node]],
    targets: frozenset[str],
    on_path: frozenset[int],
) -> bool:
    """A MaxPool whose Indices nothing reads: absent, or unread, unrequested and off the tape."""
    if n.op_type != "MaxPool" or not n.outputs or not n.outputs[0]:
        return False
    idx = n.outputs[1] if len(n.outputs) > 1 else ""
    return not idx or (
        idx not in targets and not reads.get(idx) and n.index not in on_path
    )


def _chain(
    head: Node | None, affine: tuple[Node, ...], residual: Node | None, act: Node | None
) -> tuple[Node, ...]:
    return tuple(n for n in (head, *affine, residual, act) if n is not None)


def _step(
    head: Node | None,
    affine: tuple[Node, ...],
    xs: tuple[str, ...],
    residual: Node | None,
    act: Node | None,
    values_only: bool,
    conv_fold: bool,
) -> Step:
    nodes = _chain(head, affine, residual, act)
    made: set[str] = set()
    inputs: list[str] = []
    for n in nodes:
        inputs.extend(i for i in n.inputs if i and i not in made and i not in inputs)
        made.update(o for o in n.outputs if o)
    last = nodes[-1]
    outputs = last.outputs[:1] if values_only and last is head else last.outputs
    return Step(
        head,
        affine,
        xs,
        residual,
        act,
        values_only,
        conv_fold,
        tuple(inputs),
        tuple(outputs),
    )


# ------------------------------------------------------------------------------------- running


def run_head(step: Step, args: Sequence[Array | None], opset: int) -> tuple[Array, ...]:
    """The head node through its forward (``values_only``: MaxPool's maxima alone)."""
    n = step.head
    assert n is not None
    if step.values_only:
        return (max_pool_values(*args, **n.attrs),)
    fn = REGISTRY.get_forward(n.op_type, opset)
    assert fn is not None
    result = fn(*args, **n.attrs)
    return result if isinstance(result, tuple) else (result,)


def run_fused(
    step: Step, value: Lookup, opset: int, dtype: np.dtype, folds: FoldCache
) -> Array:
    """The output of a fused step; ``value`` gives every tensor the step reads."""
    head = step.head
    if head is None:
        x = value(step.xs[0])
        assert x is not None
        aff = _affine(step, x, value, dtype, folds)
        if aff is None:
            return _unfused(step, value, opset)
        y, fresh = _apply(x, *aff, inplace=False), True
    else:
        args = [value(i) if i else None for i in head.inputs]
        folded = (
            _folded_conv(step, args, value, opset, dtype, folds)
            if step.conv_fold
            else None
        )
        if folded is not None:
            y, fresh = folded, True
        else:
            y = run_head(step, args, opset)[0]
            fresh = _fresh(y, args)
            if step.affine:
                aff = _affine(step, y, value, dtype, folds)
                if aff is None:
                    return _unfused(step, value, opset, y)
                y, fresh = _apply(y, *aff, inplace=fresh), True
    if step.residual is not None:
        nodes = step.nodes
        before = nodes[nodes.index(step.residual) - 1].outputs[0]
        other = value(next(i for i in step.residual.inputs if i != before))
        if (
            fresh
            and other.dtype == y.dtype
            and np.broadcast_shapes(y.shape, other.shape) == y.shape
        ):
            np.add(y, other, out=y)  # Add and Sum are a + b, and IEEE addition commutes
        else:
            y, fresh = np.add(y, other), True
    if step.act is None:
        return y
    out = y if fresh else None
    if step.act.op_type == "Relu":
        return relu_into(y, out)
    act_args = [value(i) if i else None for i in step.act.inputs[1:]]
    return clip_into(y, *clip_bounds(opset, act_args, step.act.attrs), out)


def _fresh(y: Array, args: Sequence[Array | None]) -> bool:
    """``y`` is a new writeable buffer: it shares memory with none of the node's inputs (and a
    node's result can alias nothing else), so nothing else sees it and it may be overwritten."""
    return bool(y.flags.writeable) and not any(
        a is not None and np.may_share_memory(y, a) for a in args
    )


def _unfused(step: Step, value: Lookup, opset: int, y: Array | None = None) -> Array:
    """The step's nodes one by one through their forwards (``y``: the head's result, if run)."""
    local: dict[str, Array] = {}

    def get(name: str) -> Array | None:
        return local[name] if name in local else value(name)

    for n in step.nodes:
        if n is step.head and y is not None:
            local[n.outputs[0]] = y
            continue
        args = [get(i) if i else None for i in n.inputs]
        if n is step.head:
            outs = run_head(step, args, opset)
        else:
            fn = REGISTRY.get_forward(n.op_type, opset)
            assert fn is not None
            result = fn(*args, **n.attrs)
            outs = result if isinstance(result, tuple) else (result,)
        local[n.outputs[0]] = outs[0]
    return local[step.nodes[-1].outputs[0]]


# ---------------------------------------------------------------------------- per-channel maps


def _channel_vector(c: Array, ndim: int, channels: int) -> Array | None:
    """A constant that broadcasts against an ``(N, C, ...)`` tensor of rank ``ndim`` as one value
    per channel (or one for all), as a float64 ``(C,)`` vector; ``None`` if it is anything else."""
    if c.dtype.kind != "f" or ndim < 2 or c.ndim > ndim:
        return None
    shape = (1,) * (ndim - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (
        1,
        channels,
    ):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))


def _compose(
    step: Step, ndim: int, channels: int, value: Lookup
) -> tuple[Array, Array] | None:
    """Float64 ``(scale, shift)`` with ``affine(x) = x * scale + shift`` per channel, or ``None``
    when a parameter is not per channel for a rank-``ndim`` tensor with ``channels`` channels."""
    scale, shift = np.ones(channels), np.zeros(channels)
    for n, x in zip(step.affine, step.xs):
        if n.op_type == "BatchNormalization":
            params = [value(p) for p in n.inputs[1:5]]
            if ndim < 2 or any(
                p is None or p.dtype.kind != "f" or p.size != channels for p in params
            ):
                return None
            s, b, m, v = (np.asarray(p, np.float64).reshape(-1) for p in params)
            a = s / np.sqrt(v + float(n.attrs.get("epsilon", 1e-5)))
            scale, shift = scale * a, shift * a + (b - m * a)
            continue
        x_first = n.inputs[0] == x
        c_value = value(n.inputs[1] if x_first else n.inputs[0])
        c = None if c_value is None else _channel_vector(c_value, ndim, channels)
        if c is None:
            return None
        if n.op_type == "Mul":
            scale, shift = scale * c, shift * c
        elif n.op_type == "Add":
            shift = shift + c
        elif n.op_type == "Sub":
            scale, shift = (scale, shift - c) if x_first else (-scale, c - shift)
        else:  # Div, x / c (the planner checked the order)
            scale, shift = scale / c, shift / c
    return scale, shift


def _affine(
    step: Step, x: Array, value: Lookup, dtype: np.dtype, folds: FoldCache
) -> Folded | None:
    """``(scale, shift)`` of the step's affine nodes for input ``x``, in ``dtype`` (``None`` for
    an all-ones scale or an all-zeros shift), or ``None`` when they cannot run fused on ``x``."""
    if x.dtype != dtype or dtype.kind != "f" or x.ndim < 2:
        return None
    key = (tuple(n.index for n in step.affine), dtype.str, x.ndim, x.shape[1])
    cached = folds.get(key)
    if cached is not None:
        return cached
    composed = _compose(step, x.ndim, x.shape[1], value)
    if composed is None:
        return None
    scale, shift = composed
    result = (
        None if np.all(scale == 1) else scale.astype(dtype),
        None if np.all(shift == 0) else shift.astype(dtype),
    )
    folds.put(key, result)
    return result


def _apply(
    x: Array, scale: Array | None, shift: Array | None, *, inplace: bool
) -> Array:
    """``x * scale + shift`` per channel, into ``x`` with ``inplace``."""
    view = (-1,) + (1,) * (x.ndim - 2)
    y = x if inplace else None
    if scale is not None:
        y = np.multiply(x, scale.reshape(view), out=y)
    if shift is not None:
        y = np.add(x if y is None else y, shift.reshape(view), out=y)
    return x.copy() if y is None else y


def _folded_conv(
    step: Step,
    args: Sequence[Array | None],
    value: Lookup,
    opset: int,
    dtype: np.dtype,
    folds: FoldCache,
) -> Array | None:
    """The conv with the step's affine nodes folded into its weight and bias; ``None`` when they
    are not per channel or an array is not of the run's dtype (the caller then runs unfolded)."""
    head = step.head
    assert head is not None
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    if (
        x is None
        or w is None
        or dtype.kind != "f"
        or any(a is not None and a.dtype != dtype for a in (x, w, b))
    ):
        return None
    key = ((head.index, *(n.index for n in step.affine)), dtype.str, w.ndim, w.shape[0])
    folded = folds.get(key)
    if folded is None:
        composed = _compose(step, w.ndim, w.shape[0], value)
        if composed is None:
            return None
        scale, shift = composed
        # in the run's dtype: one pass over the weights (the scale is composed in float64
        # and rounded once; a float32 product is then within an ulp of the float64 one)
        w2 = np.multiply(w, scale.astype(dtype).reshape((-1,) + (1,) * (w.ndim - 1)))
        b2 = ((0.0 if b is None else b.astype(np.float64)) * scale + shift).astype(
            dtype
        )
        folded = (w2, b2)
        folds.put(key, folded)
    fn = REGISTRY.get_forward("Conv", opset)
    assert fn is not None
    return fn(x, folded[0], folded[1], **head.attrs)
