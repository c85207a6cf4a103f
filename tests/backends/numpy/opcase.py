"""One op case = one node with sampled inputs; the generic checks run over the whole table.

Checks (tests/backends/numpy/test_ops.py):
- forward: the numpy forward against onnxruntime on a one-node model (float32);
- backward: a random-projection finite-difference check of the VJP in float64,
  ``<u, VJP(v)>`` against ``<v, (f(x + eps u) - f(x - eps u)) / (2 eps)>``.

Samplers keep inputs away from kinks and ties (e.g. no values near 0 for Relu, distinct values
for Max), so that the central difference is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxviz.backends.numpy import REGISTRY, Call

Sampler = Callable[[np.random.Generator], np.ndarray]
InputSpec = Union[Sampler, np.ndarray, None]


@dataclass(frozen=True)
class OpCase:
    """A one-node test case.

    inputs: one entry per ONNX input: a sampler ``rng -> array``, a fixed array, or ``None`` for
        an omitted optional input.
    grad_wrt: input indices to check by finite differences (default: every floating input that
        is not constant).
    constant_inputs: inputs fed to onnxruntime as initializers (shapes, axes, pads, scales...).
    grad_outputs: outputs that get a random cotangent (default: every floating output).
    """

    op_type: str
    inputs: Sequence[InputSpec]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    opset: int = 17
    name: str = ""
    grad_wrt: tuple[int, ...] | None = None
    constant_inputs: tuple[int, ...] = ()
    n_outputs: int = 1
    grad_outputs: tuple[int, ...] | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    check_ort: bool = True
    check_grad: bool = True
    fd_eps: float = 1e-6
    fd_rtol: float = 1e-6
    domain: str = ""

    @property
    def id(self) -> str:
        return f"{self.op_type}-{self.opset}" + (f"-{self.name}" if self.name else "")


def materialize(case: OpCase, seed: int = 0) -> list[np.ndarray | None]:
    rng = np.random.default_rng(seed)
    out: list[np.ndarray | None] = []
    for spec in case.inputs:
        if spec is None:
            out.append(None)
        elif isinstance(spec, np.ndarray):
            out.append(spec.copy())
        else:
            out.append(np.asarray(spec(rng)))
    return out


def cast_floats(values: Sequence[np.ndarray | None], dtype: type) -> list[np.ndarray | None]:
    return [
        v.astype(dtype) if v is not None and np.issubdtype(v.dtype, np.floating) else v
        for v in values
    ]


def run_numpy(case: OpCase, inputs: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    fn = REGISTRY.get_forward(case.op_type, case.opset)
    assert fn is not None, f"no numpy forward for {case.op_type} at opset {case.opset}"
    result = fn(*inputs, **dict(case.attrs))
    return result if isinstance(result, tuple) else (result,)


def one_node_model(
    case: OpCase, inputs: Sequence[np.ndarray | None], outputs: Sequence[np.ndarray]
) -> onnx.ModelProto:
    graph_inputs, inits, names = [], [], []
    for i, value in enumerate(inputs):
        if value is None:
            names.append("")
            continue
        name = f"x{i}"
        names.append(name)
        if i in case.constant_inputs:
            inits.append(numpy_helper.from_array(value, name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, value.shape))
    while names and names[-1] == "":
        names.pop()
    out_names = [f"y{i}" for i in range(len(outputs))]
    graph_outputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), None)
        for n, v in zip(out_names, outputs)
    ]
    node = helper.make_node(case.op_type, names, out_names, domain=case.domain, **dict(case.attrs))
    graph = helper.make_graph([node], "case", graph_inputs, graph_outputs, initializer=inits)
    opsets = [helper.make_opsetid("", case.opset)]
    if case.domain:
        opsets.append(helper.make_opsetid(case.domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, 8)
    return model


def run_onnxruntime(case: OpCase, inputs: Sequence[np.ndarray | None], outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    model = one_node_model(case, inputs, outputs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {
        f"x{i}": v for i, v in enumerate(inputs) if v is not None and i not in case.constant_inputs
    }
    return sess.run(None, feeds)


def grad_inputs(case: OpCase, inputs: Sequence[np.ndarray | None]) -> tuple[int, ...]:
    if case.grad_wrt is not None:
        return case.grad_wrt
    return tuple(
        i
        for i, v in enumerate(inputs)
        if v is not None and np.issubdtype(v.dtype, np.floating) and i not in case.constant_inputs
    )


def fd_check(case: OpCase, seed: int = 0) -> tuple[float, float]:
    """Return ``(<u, VJP(v)>, <v, JVP_fd(u)>)`` in float64."""
    inputs = cast_floats(materialize(case, seed), np.float64)
    outputs = run_numpy(case, inputs)
    rng = np.random.default_rng(seed + 1)
    wrt = grad_inputs(case, inputs)
    gouts = case.grad_outputs
    if gouts is None:
        gouts = tuple(i for i, o in enumerate(outputs) if np.issubdtype(o.dtype, np.floating))
    cot: list[np.ndarray | None] = [None] * len(outputs)
    for i in gouts:
        cot[i] = rng.standard_normal(outputs[i].shape)
    rule = REGISTRY.get_vjp(case.op_type, case.opset)
    assert rule is not None, f"no VJP for {case.op_type} at opset {case.opset}"
    needs = tuple(i in wrt for i in range(len(inputs)))
    call = Call(case.op_type, tuple(inputs), outputs, dict(case.attrs), needs, "case", case.opset)
    grads = rule(call, *cot)
    assert len(grads) == len(inputs), f"VJP returned {len(grads)} grads for {len(inputs)} inputs"
    directions = {i: rng.standard_normal(inputs[i].shape) for i in wrt}  # type: ignore[union-attr]
    lhs = 0.0
    for i in wrt:
        g = grads[i]
        assert g is not None, f"VJP gave no gradient for input {i}"
        assert g.shape == inputs[i].shape, f"grad {i} shape {g.shape} != {inputs[i].shape}"  # type: ignore[union-attr]
        lhs += float(np.sum(directions[i] * g))

    def shifted(sign: float) -> tuple[np.ndarray, ...]:
        moved = list(inputs)
        for i in wrt:
            moved[i] = inputs[i] + sign * case.fd_eps * directions[i]  # type: ignore[operator]
        return run_numpy(case, moved)

    plus, minus = shifted(1.0), shifted(-1.0)
    rhs = 0.0
    for i in gouts:
        rhs += float(np.sum(cot[i] * (plus[i] - minus[i]) / (2 * case.fd_eps)))  # type: ignore[operator]
    return lhs, rhs
