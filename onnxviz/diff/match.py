"""Which tensor of model B is which tensor of model A.

Two versions of a model (FP32 and its quantized or FP16 copy, a re-export, another optimization
level) compute the same function through differently named and differently wrapped tensors.
Matching is done in two steps:

1. **By name.** A tensor that exists, input-dependent, under the same name in both models is the
   same tensor. Quantizers keep the names of the float tensors they wrap, so this pairs most of a
   quantized model.
2. **By graph position** for the rest. Both graphs are reduced to a *skeleton* of float
   operations and walked from the inputs in topological order: a node of A is matched to the
   first unused node of B with the same canonical op whose inputs are the partners of its inputs.

The skeleton hides what a conversion adds around the float ops:

- quantization wrappers are transparent: ``QuantizeLinear``, ``DequantizeLinear``,
  ``DynamicQuantizeLinear`` (its scale and zero-point outputs are side values, never matched),
  ``Cast``, ``Identity``, ``Dropout``: their output is the same value as their input;
- quantized ops stand for their float op: ``QLinearConv`` and ``ConvInteger`` are ``Conv``,
  ``QLinearMatMul``, ``MatMulInteger``, ``QGemm``, ``Gemm`` and ``MatMul`` are one dense op,
  ``QLinearX`` is ``X``;
- an ``Add``/``Sub``/``Mul``/``Div`` with a constant (or quantization-scale) operand, or a
  ``BatchNormalization``, directly after a conv or dense op is absorbed into it (the bias of a
  ``ConvInteger``, the rescale of its integer accumulator, a batch norm an optimizer folded);
- a ``Relu``/``Clip`` present in one model only is skipped (quantizers fold it into the output
  range of the preceding op): the value before it stays unmatched, the value after it is paired.

Each skeleton value is represented by one tensor: the first float tensor along its wrapper chain
(the float output of a QDQ conv, the ``DequantizeLinear`` output after a ``QLinearConv``), or the
last tensor of an absorbed chain (the rescaled, biased output of a ``ConvInteger``). Only float
tensors of equal shape are compared; every other float value is listed as unmatched, with why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..graph import Graph, Node, TensorInfo
from ..model import Model

__all__ = [
    "ABSORBED_OPS",
    "OPTIONAL_OPS",
    "TRANSPARENT_OPS",
    "Matching",
    "NodePair",
    "TensorPair",
    "UnmatchedTensor",
    "canonical_op",
    "match_tensors",
]

#: Ops whose (first) output is the same value as their (first input-dependent) input.
TRANSPARENT_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "Cast",
        "CastLike",
        "Identity",
        "Dropout",
    }
)
#: Activations a quantizer may fold into the output range of the op before them.
OPTIONAL_OPS = frozenset({"Relu", "Clip"})
#: Element-wise ops with one input-dependent operand that fuse into a preceding conv/dense op.
ABSORBED_OPS = frozenset({"Add", "Sub", "Mul", "Div", "BatchNormalization"})
_LINEAR = frozenset({"Conv", "ConvTranspose", "Dense"})
_COMMUTATIVE = frozenset({"Add", "Mul", "Sum", "Max", "Min", "Mean"})
_CANONICAL = {
    "QLinearConv": "Conv",
    "ConvInteger": "Conv",
    "Gemm": "Dense",
    "MatMul": "Dense",
    "QGemm": "Dense",
    "QLinearMatMul": "Dense",
    "MatMulInteger": "Dense",
}

Side = Literal["A", "B"]


def canonical_op(op_type: str) -> str:
    """The float op a (possibly quantized) op computes: ``QLinearConv`` -> ``Conv``, ``Gemm`` -> ``Dense``."""
    if op_type in _CANONICAL:
        return _CANONICAL[op_type]
    if op_type.startswith("QLinear") and len(op_type) > len("QLinear"):
        return canonical_op(op_type[len("QLinear") :])
    return op_type


@dataclass(frozen=True)
class TensorPair:
    """Tensor ``a`` of model A and tensor ``b`` of model B hold the same values (up to drift).

    ``node`` and ``op_type`` are those of the node of A that produces ``a`` (``"input"`` for a
    graph input); ``matched_by`` is ``"name"`` or ``"position"``.
    """

    a: str
    b: str
    matched_by: Literal["name", "position"]
    node: str
    op_type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class NodePair:
    """A node of A and the node of B that computes the same float op (by graph position)."""

    a: str
    b: str
    op_a: str
    op_b: str


@dataclass(frozen=True)
class UnmatchedTensor:
    """A float tensor of one model with no compared counterpart in the other, and why."""

    model: Side
    tensor: str
    reason: str


@dataclass(frozen=True)
class Matching:
    """The result of :func:`match_tensors`; ``pairs`` in A's topological order."""

    pairs: tuple[TensorPair, ...]
    unmatched: tuple[UnmatchedTensor, ...]
    nodes: tuple[NodePair, ...]
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]

    def partner(self, a: str) -> str | None:
        """The B tensor compared with A's tensor ``a``, if any."""
        for p in self.pairs:
            if p.a == a:
                return p.b
        return None

    def unmatched_in(self, model: Side) -> list[str]:
        return [u.tensor for u in self.unmatched if u.model == model]


# ------------------------------------------------------------------------------------ skeleton
@dataclass
class _Value:
    tensors: list[str]
    rep: str
    node: int | None  # skeleton node producing it; None for a graph input


@dataclass
class _SNode:
    index: int
    op: str
    head: Node
    inputs: tuple[int, ...]
    outputs: list[int] = field(default_factory=list)
    signature: tuple[tuple[int, ...], ...] = ()


class _Skeleton:
    """A graph reduced to its float ops (see the module docstring)."""

    def __init__(self, model: Model, infos: Mapping[str, TensorInfo]) -> None:
        graph = model.graph
        self.graph = graph
        self.infos = infos
        self.values: list[_Value] = []
        self.value_of: dict[str, int] = {}
        self.nodes: list[_SNode] = []
        self.consumers: dict[int, list[_SNode]] = {}
        dynamic = graph.dynamic
        side: set[str] = set()
        for name in graph.input_names:
            self._new_value(name, None)
        for n in graph.nodes:
            main = [i for i in n.inputs if i and i in dynamic and i not in side and i in self.value_of]
            outs = [o for o in n.outputs if o]
            if not main:
                if any(i in side or i in dynamic for i in n.inputs if i):
                    side.update(outs)  # computed from quantization scales only
                continue
            if n.op_type in TRANSPARENT_OPS and outs:
                self._alias(self.value_of[main[0]], outs[0], absorb=False)
                side.update(outs[1:])  # DynamicQuantizeLinear scale/zero point, Dropout mask
                continue
            if n.op_type in ABSORBED_OPS and len(main) == 1 and outs and self._absorbs(main[0]):
                self._alias(self.value_of[main[0]], outs[0], absorb=True)
                continue
            snode = _SNode(
                len(self.nodes),
                canonical_op(n.op_type),
                n,
                tuple(self.value_of[i] for i in main),
                signature=self._signature(n),
            )
            self.nodes.append(snode)
            for v in snode.inputs:
                self.consumers.setdefault(v, []).append(snode)
            for o in outs:
                snode.outputs.append(self._new_value(o, snode.index))

    def _new_value(self, name: str, node: int | None) -> int:
        self.values.append(_Value([name], name, node))
        self.value_of[name] = len(self.values) - 1
        return len(self.values) - 1

    def _alias(self, v: int, name: str, *, absorb: bool) -> None:
        value = self.values[v]
        value.tensors.append(name)
        self.value_of[name] = v
        if self.is_float(name) and (absorb or not self.is_float(value.rep)):
            value.rep = name

    def _absorbs(self, tensor: str) -> bool:
        """Whether an element-wise op on ``tensor`` fuses into the conv/dense op that made it."""
        v = self.values[self.value_of[tensor]]
        if v.node is None or self.nodes[v.node].op not in _LINEAR:
            return False
        return len(self.graph.consumers.get(tensor, ())) == 1

    def _signature(self, n: Node) -> tuple[tuple[int, ...], ...]:
        """Sorted dims of the node's constant weights (rank >= 2): tells parallel branches apart,
        whatever the weight layout (a transposed dense weight has the same sorted dims)."""
        dims = []
        for i in n.inputs:
            info = self.infos.get(i) if i and i not in self.graph.dynamic else None
            if info is not None and info.shape is not None and len(info.shape) >= 2:
                dims.append(tuple(sorted(int(d) if isinstance(d, int) else -1 for d in info.shape)))
        return tuple(sorted(dims))

    def producer_op(self, v: int) -> str:
        node = self.values[v].node
        return "input" if node is None else self.nodes[node].op

    def last_float(self, v: int) -> str | None:
        floats = [t for t in self.values[v].tensors if self.is_float(t)]
        return floats[-1] if floats else None

    def is_float(self, name: str) -> bool:
        info = self.infos.get(name)
        return info is not None and info.dtype.kind == "f"

    def order(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.graph.tensor_names())}


# ------------------------------------------------------------------------------------ matching
def match_tensors(
    a: Model,
    b: Model,
    infos_a: Mapping[str, TensorInfo] | None = None,
    infos_b: Mapping[str, TensorInfo] | None = None,
) -> Matching:
    """Pair the input-dependent float tensors of ``a`` and ``b`` (see the module docstring).

    ``infos_*`` give each tensor's shape and dtype, best as observed in a forward pass (shapes
    then include the batch); without them ONNX shape inference is used.
    """
    ia = dict(infos_a) if infos_a is not None else a.infer_shapes()
    ib = dict(infos_b) if infos_b is not None else b.infer_shapes()
    _add_initializer_infos(a.graph, ia)
    _add_initializer_infos(b.graph, ib)
    sa, sb = _Skeleton(a, ia), _Skeleton(b, ib)
    inputs = _pair_names(a.graph.input_names, b.graph.input_names)
    outputs = _pair_names(a.graph.output_names, b.graph.output_names)

    corr: dict[int, int] = {}  # value of A -> value of B, for the walk (many to one allowed)
    claimed: dict[str, tuple[str, Literal["name", "position"]]] = {}  # A tensor -> (B tensor, how)
    taken_b: set[str] = set()

    def claim(ta: str, tb: str, how: Literal["name", "position"]) -> None:
        if ta not in claimed and tb not in taken_b:
            claimed[ta] = (tb, how)
            taken_b.add(tb)

    for name in a.graph.tensor_names():
        if name in sb.value_of and name in sa.value_of:
            va, vb = sa.value_of[name], sb.value_of[name]
            # A name is trusted when the same float op made it on both sides: a quantizer that
            # folds a Relu into a Conv gives the Conv output the Relu's name.
            if sa.producer_op(va) == sb.producer_op(vb):
                claim(name, name, "name")
                corr.setdefault(va, vb)
    for ta, tb in inputs:
        corr.setdefault(sa.value_of[ta], sb.value_of[tb])
        claim(ta, tb, "name" if ta == tb else "position")

    node_pairs: list[NodePair] = []
    used_b: set[int] = set()
    early: dict[int, int] = {}  # value of B -> the value of A computed by the same op
    late: dict[int, int] = {}  # value of B -> a value of A after an activation B folded in
    for an in sa.nodes:
        if any(v not in corr for v in an.inputs):
            continue
        bn = _find(an, [corr[v] for v in an.inputs], sb, used_b)
        if bn is not None:
            used_b.add(bn.index)
            node_pairs.append(NodePair(an.head.label, bn.head.label, an.head.op_type, bn.head.op_type))
            for va, vb in zip(an.outputs, bn.outputs):
                corr.setdefault(va, vb)
                early.setdefault(vb, va)
        elif an.op in OPTIONAL_OPS and len(an.inputs) == 1 and an.outputs:
            # B has no such activation here: it was folded into the op before it (into the
            # clipping of its output quantization, or into a fused op).
            va, vb = an.outputs[0], corr[an.inputs[0]]
            corr.setdefault(va, vb)
            late[vb] = va
    for vb, va in late.items():
        after = sb.last_float(vb)
        if after is not None and after != sb.values[vb].rep:
            # The quantize/dequantize pair after B's op clips: its output is the activation.
            claim(sa.values[va].rep, after, "position")
        else:
            claim(sa.values[va].rep, sb.values[vb].rep, "position")
    for vb, va in early.items():
        claim(sa.values[va].rep, sb.values[vb].rep, "position")

    order_a = sa.order()
    pairs: list[TensorPair] = []
    rejected: dict[str, str] = {}
    rejected_b: dict[str, str] = {}
    for ta, (tb, how) in sorted(claimed.items(), key=lambda kv: order_a.get(kv[0], len(order_a))):
        why = _incomparable(ia.get(ta), ib.get(tb))
        if why is not None:
            rejected[ta] = f"paired by {how} with B's {tb!r}, but {why}"
            rejected_b[tb] = f"paired by {how} with A's {ta!r}, but {why}"
            continue
        node = a.graph.producer.get(ta)
        shape = ia[ta].shape or ()
        pairs.append(
            TensorPair(
                ta,
                tb,
                how,
                node.label if node else "input",
                node.op_type if node else "input",
                tuple(int(d) for d in shape if isinstance(d, int)),
            )
        )
    compared_a = {p.a for p in pairs}
    compared_b = {p.b for p in pairs}
    unmatched = _unmatched("A", sa, compared_a, rejected, sb, corr, True) + _unmatched(
        "B", sb, compared_b, rejected_b, sa, {vb: va for va, vb in corr.items()}, False
    )
    return Matching(tuple(pairs), tuple(unmatched), tuple(node_pairs), tuple(inputs), tuple(outputs))


def _find(an: _SNode, b_ins: list[int], sb: _Skeleton, used: set[int]) -> _SNode | None:
    """The first unused node of B computing ``an``'s op on ``b_ins`` (weights of the same shape
    preferred), looking through one optional activation B has and A has not."""

    def fits(bn: _SNode, ins: list[int]) -> bool:
        if bn.index in used or bn.op != an.op or len(bn.inputs) != len(ins):
            return False
        if an.op in _COMMUTATIVE:
            return sorted(bn.inputs) == sorted(ins)
        return list(bn.inputs) == ins

    cands = [bn for bn in sb.consumers.get(b_ins[0], []) if fits(bn, b_ins)]
    if not cands and len(b_ins) == 1 and an.op not in OPTIONAL_OPS:
        for r in sb.consumers.get(b_ins[0], []):
            if r.op in OPTIONAL_OPS and len(r.inputs) == 1 and r.outputs and r.index not in used:
                cands += [bn for bn in sb.consumers.get(r.outputs[0], []) if fits(bn, [r.outputs[0]])]
    if not cands:
        return None
    return min(cands, key=lambda bn: (bn.signature != an.signature, bn.index))


def _incomparable(ia: TensorInfo | None, ib: TensorInfo | None) -> str | None:
    if ia is None or ib is None or ia.shape is None or ib.shape is None:
        return "a shape is unknown"
    if ia.dtype.kind != "f" or ib.dtype.kind != "f":
        return f"not both float ({ia.dtype} vs {ib.dtype})"
    if tuple(ia.shape) != tuple(ib.shape):
        return f"shapes differ ({_shape(ia.shape)} vs {_shape(ib.shape)})"
    return None


def _unmatched(
    side: Side,
    own: _Skeleton,
    compared: set[str],
    rejected: Mapping[str, str],
    other: _Skeleton,
    corr: Mapping[int, int],
    own_is_a: bool,
) -> list[UnmatchedTensor]:
    """One entry per value of ``own`` whose tensors are all uncompared (listed by representative)."""
    other_side = "B" if own_is_a else "A"
    out: list[UnmatchedTensor] = []
    for v, value in enumerate(own.values):
        if any(t in compared for t in value.tensors):
            continue
        rep = value.rep
        if rep in rejected:
            out.append(UnmatchedTensor(side, rep, rejected[rep]))
            continue
        if not own.is_float(rep):
            if v in corr:
                info = own.infos.get(rep)
                kind = str(info.dtype) if info is not None else "unknown type"
                out.append(UnmatchedTensor(side, rep, f"{kind} tensor (quantized): not compared"))
            continue
        partner = corr.get(v)
        if partner is not None:
            out.append(
                UnmatchedTensor(
                    side,
                    rep,
                    f"same position as {other_side}'s {other.values[partner].rep!r}, which is compared "
                    "with a later tensor (an op fused away)",
                )
            )
        else:
            out.append(UnmatchedTensor(side, rep, f"no counterpart in {other_side}"))
    return out


def _pair_names(a: Sequence[str], b: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs by name, then the rest in order."""
    pairs = [(n, n) for n in a if n in b]
    rest_a = [n for n in a if n not in b]
    rest_b = [n for n in b if n not in a]
    pairs += list(zip(rest_a, rest_b))
    order = {n: k for k, n in enumerate(a)}
    return sorted(pairs, key=lambda p: order[p[0]])


def _add_initializer_infos(graph: Graph, infos: dict[str, TensorInfo]) -> None:
    """Constant shapes (for node signatures), where shape inference or a run left them out."""
    for name, value in graph.constants.items():
        if name not in infos:
            infos[name] = TensorInfo(name, tuple(int(d) for d in np.shape(value)), np.asarray(value).dtype)


def _shape(shape: tuple[object, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
