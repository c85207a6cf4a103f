"""Model-parameter randomization: copies of a model with chosen layers' weights re-drawn at random.

The sanity check of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", sec. 3.1) compares
an explanation of the trained model with explanations of copies whose learned weights are
replaced by random ones; :func:`onnxviz.methods.evaluation.randomization_test` drives it, this
module makes the copies.

A layer is a node with learned parameters (:func:`parametric_layers`): ``Conv``,
``ConvTranspose``, ``Gemm`` and ``MatMul`` with a constant weight operand, optionally
``BatchNormalization`` (scale and shift). Its bias is the node's own bias input or, as
paddle2onnx and tf2onnx export them, the constant operand of an ``Add`` that is the only consumer
of the layer's output. Weights may live anywhere onnxviz can fold them from (initializers,
``Constant`` nodes, constant subgraphs such as the light models' ``ConstantOfShape``):
:func:`randomized_model` never edits them where they live but points the consuming node's input
at a new initializer holding the random values, so weights shared with other layers stay intact
and the original model is untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import InputError
from .graph import Node
from .model import Model

__all__ = ["Parameter", "layer_parameters", "parametric_layers", "random_like", "randomized_model"]

#: Op types whose constant operands are learned weights, and the input slots of weight and bias.
_WEIGHT_SLOTS: dict[str, tuple[tuple[int, str], ...]] = {
    "Conv": ((1, "weight"), (2, "bias")),
    "ConvTranspose": ((1, "weight"), (2, "bias")),
    "Gemm": ((0, "weight"), (1, "weight"), (2, "bias")),
    "MatMul": ((0, "weight"), (1, "weight")),
    "BatchNormalization": ((1, "scale"), (2, "bias")),
}


@dataclass(frozen=True)
class Parameter:
    """One learned tensor of a layer: the node input slot that reads it.

    ``node`` is the label of the consuming node (the layer itself, or its bias ``Add``), ``slot``
    the input index on that node, ``tensor`` the constant's name and ``role`` one of
    ``"weight"``, ``"bias"``, ``"scale"``.
    """

    node: str
    slot: int
    tensor: str
    role: str


def _is_constant(model: Model, name: str) -> bool:
    return bool(name) and name not in model.graph.dynamic


def _own_parameters(model: Model, node: Node) -> list[Parameter]:
    params = []
    for slot, role in _WEIGHT_SLOTS.get(node.op_type, ()):
        if slot < len(node.inputs) and _is_constant(model, node.inputs[slot]):
            params.append(Parameter(node.label, slot, node.inputs[slot], role))
    if node.op_type in ("Gemm", "MatMul"):
        # Exactly one constant matrix operand; two constants fold away, none is not a layer.
        weights = [p for p in params if p.role == "weight"]
        if len(weights) != 1:
            return []
    return params


def _fused_bias(model: Model, node: Node) -> Parameter | None:
    """The constant operand of an ``Add`` that alone consumes the layer's output (a bias exported
    as a separate node, as paddle2onnx and tf2onnx do)."""
    consumers = model.graph.consumers.get(node.outputs[0], ())
    if len(consumers) != 1 or consumers[0].op_type != "Add" or node.outputs[0] in model.graph.output_names:
        return None
    add = consumers[0]
    for slot, name in enumerate(add.inputs):
        if name != node.outputs[0] and _is_constant(model, name):
            return Parameter(add.label, slot, name, "bias")
    return None


def layer_parameters(model: Model, layer: str) -> tuple[Parameter, ...]:
    """The learned tensors of ``layer`` (a node label), weight first; empty if it has none."""
    try:
        node = model.graph.node(layer)
    except KeyError as e:
        raise InputError(
            f"model has no node {layer!r}", hint="use a label from parametric_layers(model)"
        ) from e
    params = _own_parameters(model, node)
    if params and node.op_type != "BatchNormalization" and not any(p.role == "bias" for p in params):
        bias = _fused_bias(model, node)
        if bias is not None:
            params.append(bias)
    return tuple(params)


def parametric_layers(model: Model, *, batchnorm: bool = False) -> list[str]:
    """Labels of the nodes with learned weights, in topological order (input side first).

    ``Conv``, ``ConvTranspose``, and ``Gemm``/``MatMul`` with exactly one constant matrix
    operand; ``BatchNormalization`` too when ``batchnorm`` (its scale and shift are learned, its
    running statistics are not and are never randomized).
    """
    kinds = set(_WEIGHT_SLOTS) - (set() if batchnorm else {"BatchNormalization"})
    return [n.label for n in model.graph.nodes if n.op_type in kinds and _own_parameters(model, n)]


def random_like(value: np.ndarray, role: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian values of ``value``'s shape and dtype, zero mean, with ``value``'s standard deviation.

    A tensor without spread (a constant fill, as in the light models, where every weight is one
    number) keeps its magnitude instead: its root mean square is used. An all-zero weight gets He
    scaling ``sqrt(2 / fan_in)``; an all-zero bias or scale stays zero (what a fresh layer holds).
    """
    v = value.astype(np.float64)
    std = float(v.std()) if v.size else 0.0
    if not std > 1e-6 * float(np.abs(v).max(initial=0.0)):
        std = float(np.sqrt(np.mean(v * v))) if v.size else 0.0
    if std == 0.0 and role == "weight" and value.ndim >= 2:
        fan_in = int(np.prod(value.shape[1:])) if value.ndim > 2 else int(value.shape[0])
        std = float(np.sqrt(2.0 / max(fan_in, 1)))
    return (rng.standard_normal(value.shape) * std).astype(value.dtype)


def randomized_model(
    model: Model, layers: Sequence[str] | Iterable[str], rng: np.random.Generator | None = None
) -> Model:
    """A new :class:`Model` whose ``layers`` (node labels) have random weights and biases.

    Each parameter (see :func:`layer_parameters`) is replaced by :func:`random_like` values drawn
    from ``rng`` (default: seed 0) in the order of ``layers`` and then of the parameters. The
    consuming node's input is pointed at a new initializer; constants no longer used anywhere are
    dropped, nodes are kept so that node labels (``op_type#index`` for unnamed nodes) stay valid
    in the copy. ``model`` itself is not modified.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    plan: list[Parameter] = []
    for label in dict.fromkeys(layers):
        params = layer_parameters(model, label)
        if not params:
            raise InputError(
                f"node {label!r} ({model.graph.node(label).op_type}) is not a layer with learned weights",
                hint=f"choose among parametric_layers(model), e.g. {parametric_layers(model)[:4]}",
            )
        plan.extend(params)

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    g = proto.graph
    taken = (
        {t.name for t in g.initializer}
        | {v.name for v in g.input}
        | {v.name for v in g.output}
        | {o for n in g.node for o in n.output}
    )
    constants = model.constants
    for p in plan:
        if p.tensor not in constants:
            raise InputError(
                f"the {p.role} {p.tensor!r} of node {p.node!r} is not a constant onnxviz can fold",
                hint="the layer's weights are computed by ops the folder does not know",
            )
        value = np.asarray(constants[p.tensor])
        new = _unique(f"{p.tensor}.randomized", taken)
        taken.add(new)
        g.initializer.append(numpy_helper.from_array(random_like(value, p.role, rng), new))
        if proto.ir_version < 4:
            # Before IR 4 every initializer must also be declared as a graph input.
            g.input.append(
                helper.make_tensor_value_info(new, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
            )
        g.node[model.graph.node(p.node).index].input[p.slot] = new
    _drop_unused_initializers(proto)
    return Model.from_proto(proto, check=False)


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    k = 1
    while f"{name}.{k}" in taken:
        k += 1
    return f"{name}.{k}"


def _drop_unused_initializers(proto: onnx.ModelProto) -> None:
    """Remove initializers nothing reads any more (and their graph-input declarations)."""
    g = proto.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    # Subgraphs (If/Loop bodies) may read outer-scope initializers by name.
    for n in g.node:
        for attr in n.attribute:
            for sub in list(attr.g.node if attr.HasField("g") else []) + [x for s in attr.graphs for x in s.node]:
                used.update(sub.input)
    keep = [t for t in g.initializer if t.name in used]
    dropped = {t.name for t in g.initializer} - {t.name for t in keep}
    if not dropped:
        return
    del g.initializer[:]
    g.initializer.extend(keep)
    inputs = [v for v in g.input if v.name not in dropped]
    del g.input[:]
    g.input.extend(inputs)
