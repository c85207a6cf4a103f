"""Generic op checks over the whole case table (forward vs onnxruntime, VJP by finite differences)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxviz.backends.numpy import NON_DIFFERENTIABLE, REGISTRY
from tests.backends.numpy.cases import ALL_CASES
from tests.backends.numpy.opcase import (
    OpCase,
    cast_floats,
    fd_check,
    materialize,
    run_numpy,
    run_onnxruntime,
)

ORT_CASES = [c for c in ALL_CASES if c.check_ort]
GRAD_CASES = [c for c in ALL_CASES if c.check_grad and c.op_type not in NON_DIFFERENTIABLE]


@pytest.mark.parametrize("case", ORT_CASES, ids=lambda c: c.id)
def test_forward_matches_onnxruntime(case: OpCase) -> None:
    inputs = cast_floats(materialize(case), np.float32)
    ours = run_numpy(case, inputs)
    theirs = run_onnxruntime(case, inputs, ours)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_vjp_matches_finite_differences(case: OpCase) -> None:
    lhs, rhs = fd_check(case)
    assert np.isfinite(lhs) and np.isfinite(rhs)
    assert abs(lhs - rhs) <= case.fd_rtol * max(1.0, abs(rhs)) * 10, (lhs, rhs)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_forward_does_not_mutate_inputs(case: OpCase) -> None:
    inputs = cast_floats(materialize(case), np.float64)
    before = [None if v is None else v.copy() for v in inputs]
    run_numpy(case, inputs)
    for a, b in zip(inputs, before):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_every_op_has_a_rule_and_a_case() -> None:
    covered = {c.op_type for c in ALL_CASES}
    missing_case = sorted(REGISTRY.forward_ops() - covered)
    assert not missing_case, f"ops without a test case: {missing_case}"
    no_rule = sorted(REGISTRY.forward_ops() - REGISTRY.vjp_ops() - NON_DIFFERENTIABLE)
    assert not no_rule, f"ops with neither a VJP nor a NON_DIFFERENTIABLE entry: {no_rule}"
    grad_checked = {c.op_type for c in GRAD_CASES}
    unchecked = sorted(REGISTRY.vjp_ops() - grad_checked)
    assert not unchecked, f"VJPs without a finite-difference case: {unchecked}"


def test_issue_op_list_is_covered() -> None:
    required = """Conv ConvTranspose Gemm MatMul Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Reciprocal
    Relu LeakyRelu PRelu Elu Selu Sigmoid HardSigmoid HardSwish Tanh Softplus Erf Gelu Clip Min Max
    Softmax LogSoftmax MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization
    InstanceNormalization LayerNormalization LRN Concat Split Slice Gather Reshape Flatten Transpose
    Squeeze Unsqueeze Expand Tile Pad Resize Upsample Dropout Identity Constant ConstantOfShape Shape
    Cast Sum Mean ReduceMean ReduceSum ReduceMax Where Equal Greater Less Not""".split()
    missing = sorted(set(required) - REGISTRY.forward_ops())
    assert not missing, f"ops the issue requires that have no forward: {missing}"
