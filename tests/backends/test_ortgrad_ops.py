"""Every compiled-backward emitter against the numpy engine's VJP, over the numpy op case table.

For each case of ``tests/backends/numpy/cases`` whose op has an emitter, the one-node model goes
through :class:`onnxviz.backends.ortgrad.OrtGradBackend` (float32, onnxruntime) with random
cotangents on its float outputs, and the input gradients are compared with the numpy rule's in
float64 (the samplers keep inputs away from kinks and ties). A case the compiled backward
refuses (a geometry or attribute it does not invert) must say so with ``UnsupportedOpError``;
every emitter must pass at least one case.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnxviz.backends.numpy import REGISTRY, Call
from onnxviz.backends.ortgrad import EMITTERS, OrtGradBackend

from onnxviz.errors import UnsupportedOpError
from onnxviz.model import Model
from tests.backends.numpy.cases import ALL_CASES
from tests.backends.numpy.opcase import (
    OpCase,
    cast_floats,
    grad_inputs,
    materialize,
    one_node_model,
    run_numpy,
)

#: Ops the compiled backward rewrites into others before emitting (Upsample -> Resize).
UPGRADED = frozenset({"Upsample"})
#: Cases onnxruntime can run (``check_ort``; e.g. not Split-13 with the engine's own
#: num_outputs attribute) whose op has an emitter.
CASES = [c for c in ALL_CASES
         if (c.op_type in EMITTERS or c.op_type in UPGRADED) and c.check_grad and c.check_ort and not c.domain
         and c.opset >= 9]


def _data_only(case: OpCase) -> OpCase:
    """The case with every input but the first made a constant: the compiled backward gives input
    gradients only (no weight, bias or statistics gradients)."""
    inputs = materialize(case)
    rest = tuple(i for i, v in enumerate(inputs) if i > 0 and v is not None)
    return dataclasses.replace(case, constant_inputs=tuple(sorted(set(case.constant_inputs) | set(rest))),
                               grad_wrt=(0,))


def _compare(case: OpCase) -> bool:
    """True when the compiled gradients match; False when the case is refused by node (with its
    data input alone differentiated too)."""
    if _compare_as_is(case):
        return True
    return len(case.inputs) > 1 and _compare_as_is(_data_only(case))


def _compare_as_is(case: OpCase) -> bool:
    inputs32 = cast_floats(materialize(case), np.float32)
    outputs = run_numpy(case, inputs32)
    wrt = grad_inputs(case, inputs32)
    if not wrt:
        pytest.skip("no differentiable input")
    proto = one_node_model(case, inputs32, outputs)
    m = Model.from_proto(proto, check=False)  # outputs declared without shapes
    rng = np.random.default_rng(1)
    gouts = case.grad_outputs
    if gouts is None:
        gouts = tuple(i for i, o in enumerate(outputs) if np.issubdtype(o.dtype, np.floating))
    seeds = {f"y{i}": rng.standard_normal(outputs[i].shape).astype(np.float32) for i in gouts}
    feeds = {f"x{i}": v for i, v in enumerate(inputs32) if v is not None and i not in case.constant_inputs}
    try:
        got = OrtGradBackend(m.graph, proto).value_and_grad(feeds, seeds, [f"x{i}" for i in wrt])
    except UnsupportedOpError:
        return False
    inputs64 = cast_floats(inputs32, np.float64)
    outputs64 = run_numpy(case, inputs64)
    cot = [seeds[f"y{i}"].astype(np.float64) if f"y{i}" in seeds else None for i in range(len(outputs64))]
    call = Call(case.op_type, tuple(inputs64), outputs64, dict(case.attrs), tuple(i in wrt for i in range(len(inputs64))),
                "case", case.opset)
    rule = REGISTRY.get_vjp(case.op_type, case.opset)
    assert rule is not None
    want = rule(call, *cot)
    for i in wrt:
        g, w = got.grads[f"x{i}"], want[i]
        assert w is not None and g.shape == w.shape, (i, g.shape, None if w is None else w.shape)
        scale = max(float(np.linalg.norm(w)), 1e-6)
        assert float(np.linalg.norm(g.astype(np.float64) - w)) <= 2e-4 * scale, (
            i, float(np.linalg.norm(g - w)) / scale)
    return True


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_emitter_matches_the_numpy_rule(case: OpCase) -> None:
    if not _compare(case):
        pytest.skip("refused by the compiled backward (UnsupportedOpError naming the node)")


def test_every_emitter_passes_a_case() -> None:
    passed = set()
    for case in CASES:
        if case.op_type in passed:
            continue
        try:
            if _compare(case):
                passed.add(case.op_type)
        except pytest.skip.Exception:
            continue
    no_case = sorted((set(EMITTERS) | UPGRADED) - passed - {"Dropout"})
    assert not no_case, f"emitters without a passing case: {no_case}"
