"""In-graph activation summaries: the scan's numbers equal those computed from the whole
tensors, at every opset spelling of the reductions, and fall back to whole taps when needed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.audit import AuditContext, AuditSettings
from onnxviz.audit import activations as act
from onnxviz.audit.activations import SATURATION_EPS, activation_scan, reference_backend
from tests.audit.helpers import model_of


def _conv_bn_model(opset: int, *, log: bool = False, seed: int = 0) -> onnx.ModelProto:
    """input [N,3,8,8] -> Conv -> BatchNormalization (negative and positive scales) -> Relu ->
    Conv -> Sigmoid -> (Log) -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((6, 3, 3, 3)) * 0.5).astype(np.float32), "w1"),
        numpy_helper.from_array(np.array([1.5, -0.7, 0.3, 2.0, -1.2, 0.9], np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32) * 0.1, "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, 6).astype(np.float32), "var"),
        numpy_helper.from_array((rng.standard_normal((5, 6, 3, 3)) * 3.0).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.zeros(4, np.float32), "fc_bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["conv1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv1", "gamma", "beta", "mean", "var"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "w2"], ["conv2"], name="conv2"),
        helper.make_node("Sigmoid", ["conv2"], ["sig"], name="sig"),
    ]
    last = "sig"
    if log:
        nodes.append(helper.make_node("Sub", ["sig", "half"], ["centred"], name="centred"))
        nodes.append(helper.make_node("Log", ["centred"], ["logged"], name="log"))
        inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
        last = "logged"
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc", "fc_bias"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_bn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def _exact(ctx: AuditContext, name: str) -> np.ndarray:
    return np.concatenate([np.asarray(reference_backend(ctx).run(b, [name])[name]) for b in ctx.batches])


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_summaries_equal_the_numbers_of_the_whole_tensors(opset: int) -> None:
    x = np.random.default_rng(1).uniform(-1, 1, (5, 3, 8, 8)).astype(np.float32)
    ctx = AuditContext(model_of(_conv_bn_model(opset)), x, AuditSettings(batch_size=2))
    scan = activation_scan(ctx)
    assert scan.exact == ()  # every tensor summarized in the graph, none read whole
    by_name = {s.name: s for s in scan.summaries}
    assert list(by_name) == ["conv1", "bn1", "relu1", "conv2", "sig", "gap", "flat", "logits"]
    for name, s in by_name.items():
        v = _exact(ctx, name)
        assert s.shape == v.shape and s.nonfinite == 0
        # conv1 comes from bn1's summary through the inverse affine map: float rounding only
        rtol = 1e-5 if name == "conv1" else 0.0
        np.testing.assert_allclose([s.minimum, s.maximum], [v.min(), v.max()], rtol=rtol, atol=1e-6 if rtol else 0)
        assert 0 <= s.p999 <= np.abs(v).max() * (1 + 1e-6)
        assert abs(s.p999 - np.percentile(np.abs(v), 99.9)) <= 0.25 * np.abs(v).max()
    relu = _exact(ctx, "relu1")
    np.testing.assert_array_equal(by_name["relu1"].channel_max, relu.max(axis=(0, 2, 3)))
    sig = _exact(ctx, "sig")
    near = ((np.abs(sig) <= SATURATION_EPS) | (np.abs(sig - 1) <= SATURATION_EPS)).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(by_name["sig"].saturated_share, near, atol=1e-9)
    assert by_name["sig"].saturated_share.max() > 0  # the test exercises the count
    # the reference outputs of the same pass are the unoptimized model's, batch by batch
    assert [r["logits"].shape[0] for r in scan.reference] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([r["logits"] for r in scan.reference]), _exact(ctx, "logits"))


def test_nan_sends_tensors_to_the_exact_pass_with_exact_counts() -> None:
    x = np.random.default_rng(2).uniform(-1, 1, (3, 3, 8, 8)).astype(np.float32)
    ctx = AuditContext(model_of(_conv_bn_model(13, log=True)), x, AuditSettings())
    scan = activation_scan(ctx)
    assert "logged" in scan.exact and "conv1" not in scan.exact
    logged = next(s for s in scan.summaries if s.name == "logged")
    v = _exact(ctx, "logged")
    assert logged.nan == int(np.isnan(v).sum()) > 0 and logged.nonfinite == int((~np.isfinite(v)).sum())
    finite = v[np.isfinite(v)]
    assert (logged.minimum, logged.maximum) == (float(finite.min()), float(finite.max()))


def test_a_summary_model_that_cannot_run_falls_back_to_whole_taps(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    want = activation_scan(AuditContext(model_of(_conv_bn_model(13)), x, AuditSettings()))

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("onnxruntime refuses the summary model")

    monkeypatch.setattr(act, "make_session", refuse)
    got = activation_scan(AuditContext(model_of(_conv_bn_model(13)), x, AuditSettings()))
    assert set(got.exact) == {s.name for s in got.summaries}
    for a, b in zip(want.summaries, got.summaries):
        assert a.name == b.name
        np.testing.assert_allclose([a.minimum, a.maximum], [b.minimum, b.maximum], rtol=1e-5, atol=1e-6)
        if a.channel_max is not None:
            np.testing.assert_array_equal(a.channel_max, b.channel_max)
    for r, s in zip(want.reference, got.reference):
        np.testing.assert_array_equal(r["logits"], s["logits"])


def _with_rank1_tensor() -> onnx.ModelProto:
    """input [N,3,8,8] -> Conv -> ReduceMean over C,H,W to a rank-1 tensor -> Unsqueeze -> out [N,1]."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["conv"], ["mean"], name="mean", axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one"], ["out"], name="out"),
    ]
    graph = helper.make_graph(
        nodes,
        "rank1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array([1], np.int64), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("budget", [512 * 2**20, 1])
def test_tensors_that_cannot_be_reduced_are_read_whole(budget: int) -> None:
    x = np.random.default_rng(5).uniform(-1, 1, (3, 3, 8, 8)).astype(np.float32)
    ctx = AuditContext(model_of(_with_rank1_tensor()), x, AuditSettings(budget_bytes=budget))
    scan = activation_scan(ctx)
    # the rank-1 tensor is a whole tap: in the summary pass when it fits the budget, else in the exact pass
    assert ("mean" in scan.exact) == (budget == 1) and "conv" not in scan.exact
    for s in scan.summaries:
        v = _exact(ctx, s.name)
        assert (s.minimum, s.maximum, s.shape) == (float(v.min()), float(v.max()), v.shape)
