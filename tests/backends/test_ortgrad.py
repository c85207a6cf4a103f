"""The compiled onnxruntime backward against the numpy engine (the reference): same gradients on
the hand-built models, MobileNet-V2 and the light ResNet-50; overlapping MaxPool windows
accumulate; an op without an emitter is refused by name so callers can fall back."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxviz.backends.ortgrad import EMITTERS, OrtGradBackend

from onnxviz.errors import TargetError, UnsupportedOpError
from onnxviz.model import Model
from tests import models

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from zoo import mobilenet_v2

SMALL: dict[str, tuple[Callable[[], onnx.ModelProto], tuple[int, ...]]] = {
    "tiny_cnn": (models.tiny_cnn, (2, 3, 32, 32)),
    "tiny_cnn_opset9": (lambda: models.tiny_cnn(opset=9), (2, 3, 32, 32)),
    "dynamic_spatial": (models.dynamic_spatial, (2, 3, 21, 30)),
    "tf2onnx_nhwc": (models.tf2onnx_nhwc, ()),
    "paddle_style_constants": (models.paddle_style_constants, ()),
    "two_input_model": (models.two_input_model, ()),
    "non_image_mlp": (models.non_image_mlp, ()),
}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)  # light ResNet-50 gradients reach 1e16
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def feeds_for(m: Model, shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for t in m.inputs:
        dims = shape or tuple(d if isinstance(d, int) and d > 0 else (2 if k == 0 else 24) for k, d in enumerate(t.shape))
        out[t.name] = rng.standard_normal(dims).astype(np.float32)
    return out


def compare(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], seed_tensor: str | None = None,
            *, reference_dtype: type = np.float32, tol: float = 1e-4) -> None:
    m = Model.from_proto(proto)
    out = seed_tensor or m.outputs[0].name
    value = m.engine.run(feeds, [out])[out]
    seed = np.random.default_rng(1).standard_normal(value.shape).astype(np.float32)
    wrt = list(m.graph.input_names)
    ref = m.value_and_grad({k: v.astype(reference_dtype) for k, v in feeds.items()},
                           {out: seed.astype(reference_dtype)}, wrt, dtype=reference_dtype)
    got = OrtGradBackend(m.graph, proto).value_and_grad(feeds, {out: seed}, wrt)
    assert rel(got.values[out], ref.values[out]) < 1e-5
    for w in wrt:
        assert got.grads[w].dtype == np.float32 and got.grads[w].shape == feeds[w].shape
        assert rel(got.grads[w], ref.grads[w]) < tol, w


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradient_matches_numpy_engine(name: str) -> None:
    builder, shape = SMALL[name]
    proto = builder()
    compare(proto, feeds_for(Model.from_proto(proto), shape))


def test_light_resnet50_matches_numpy_engine() -> None:
    """Seeded before the softmax: with the light model's constant classifier weights every class
    gets the same logit, and a cotangent through the softmax then cancels to rounding noise."""
    path = next(p for p in models.light_model_paths() if p.stem == "light_resnet50")
    proto = onnx.load(path)
    m = Model.from_proto(proto)
    logits = next(n for n in m.graph.nodes if n.op_type == "Softmax").inputs[0]
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    compare(proto, {m.inputs[0].name: x}, logits)


def test_mobilenet_v2_matches_float64_reference() -> None:
    """Against the float64 numpy engine, within float32's own reach on this model: onnxruntime's
    NCHWc convolutions sum in another order and flip the ReLU6 mask of a unit or two sitting
    within rounding of a bound (measured on this input: compiled 4.7e-3, numpy float32 2.1e-3,
    PyTorch float32 1.5e-2 off float64). A wrong rule lands far above 2e-2."""
    proto = mobilenet_v2()
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    compare(proto, {"input": x}, reference_dtype=np.float64, tol=2e-2)


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-1.0, 1.0), (0.5, None), (None, 0.25), (-3.4e38, 2.0), (None, None)])
def test_clip_and_relu_masks(bounds: tuple[float | None, float | None]) -> None:
    """Conv -> Clip -> Relu -> Conv; inputs keep every unit away from the bounds."""
    rng = np.random.default_rng(4)
    lo, hi = bounds
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w2")]
    clip_inputs = ["c"]
    for name, v in (("lo", lo), ("hi", hi)):
        if v is not None:
            inits.append(numpy_helper.from_array(np.array(v, np.float32), name))
        clip_inputs.append(name if v is not None else "")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c"]), helper.make_node("Clip", clip_inputs, ["k"]),
         helper.make_node("Relu", ["k"], ["r"]), helper.make_node("Conv", ["r", "w2"], ["y"])],
        "clip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 6, 6])], initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m = Model.from_proto(proto)
    for seed in range(50):  # an input whose pre-activations all sit 1e-3 or more from every kink
        x = np.random.default_rng(seed).standard_normal((2, 3, 8, 8)).astype(np.float32)
        c = m.run({"x": x}, taps=["c"])["c"]
        kinks = [0.0] + [v for v in bounds if v is not None and abs(v) < 1e3]
        if min(np.abs(c - k).min() for k in kinks) > 1e-3:
            break
    compare(proto, {"x": x}, reference_dtype=np.float64, tol=1e-5)


def _max_pool_model(**attrs: object) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], **attrs)], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, None, None])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_overlapping_max_pool_windows_accumulate() -> None:
    """Each 3x3 image has its maximum in the centre, which all four 2x2 stride-1 windows pick: its
    gradient is the sum of the four cotangents. Batch and channel differ in the seeds, so indices
    that were per image instead of flat over N*C*H*W would show."""
    x = np.arange(36, dtype=np.float32).reshape(2, 2, 3, 3) * 0.01
    x[:, :, 1, 1] = 10.0 + np.arange(4, dtype=np.float32).reshape(2, 2)
    seed = np.arange(1, 17, dtype=np.float32).reshape(2, 2, 2, 2)
    proto = _max_pool_model(kernel_shape=[2, 2], strides=[1, 1])
    m = Model.from_proto(proto)
    got = OrtGradBackend(m.graph, proto).value_and_grad({"x": x}, {"y": seed}, ["x"]).grads["x"]
    expected = np.zeros_like(x)
    expected[:, :, 1, 1] = seed.sum(axis=(2, 3))
    np.testing.assert_array_equal(got, expected)
    ref = m.value_and_grad({"x": x}, {"y": seed}, ["x"]).grads["x"]
    np.testing.assert_array_equal(got, ref)


def test_padded_strided_max_pool_matches_numpy_engine() -> None:
    proto = _max_pool_model(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = np.random.default_rng(3).standard_normal((2, 2, 3, 3)).astype(np.float32)
    compare(proto, {"x": x})


CONV_GEOMETRIES: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, object]]] = {
    # name: (x shape, w shape, attributes); stride-1 cases take the flipped-kernel Conv path,
    # strided ones ConvTranspose
    "3x3-pad1": ((2, 4, 9, 11), (6, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    "1x1": ((2, 8, 7, 7), (5, 8, 1, 1), {}),
    "asym-pads": ((2, 3, 8, 9), (4, 3, 3, 2), {"pads": [0, 2, 1, 0]}),
    "dilated": ((1, 3, 12, 12), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 1, 3]}),
    "grouped": ((2, 6, 8, 8), (9, 2, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    "depthwise": ((2, 8, 10, 10), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    "depthwise-x2": ((1, 4, 9, 9), (8, 1, 5, 5), {"group": 4, "pads": [2, 2, 2, 2]}),
    "same-lower": ((1, 3, 8, 7), (4, 3, 4, 4), {"auto_pad": "SAME_LOWER"}),
    "pads-beyond-kernel": ((1, 2, 6, 6), (3, 2, 3, 3), {"pads": [3, 0, 0, 3]}),
    "1d": ((2, 3, 17), (5, 3, 5), {"pads": [2, 1]}),
    "strided": ((2, 4, 11, 10), (6, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "strided-7x7-stem": ((2, 3, 31, 30), (8, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    "strided-3x3-odd": ((1, 5, 13, 14), (6, 5, 3, 3), {"strides": [2, 2], "pads": [1, 0, 2, 1]}),
    "strided-5x4-s3": ((2, 4, 17, 16), (3, 4, 5, 4), {"strides": [3, 3], "pads": [2, 1, 0, 2]}),
    "strided-same-upper": ((1, 4, 15, 12), (5, 4, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "strided-1x1": ((1, 6, 10, 9), (4, 6, 1, 1), {"strides": [2, 2]}),
    "strided-uneven": ((1, 3, 12, 11), (4, 3, 3, 3), {"strides": [2, 1], "pads": [1, 1, 1, 1]}),
    "strided-depthwise": ((1, 6, 9, 9), (6, 1, 3, 3), {"group": 6, "strides": [2, 1], "pads": [1, 1, 1, 1]}),
    "strided-depthwise-even": ((2, 4, 10, 10), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "strided-depthwise-same": ((1, 4, 11, 8), (8, 1, 5, 5), {"group": 4, "strides": [3, 2], "auto_pad": "SAME_UPPER"}),
    "strided-depthwise-dilated": ((1, 3, 13, 12), (3, 1, 3, 3), {"group": 3, "strides": [2, 2], "dilations": [2, 1]}),
    "strided-depthwise-big-pads": ((1, 2, 7, 7), (2, 1, 3, 3), {"group": 2, "strides": [2, 2], "pads": [3, 0, 0, 3]}),
    "strided-depthwise-1d": ((2, 5, 15), (5, 1, 4), {"group": 5, "strides": [3], "pads": [1, 2]}),
}


@pytest.mark.parametrize("name", sorted(CONV_GEOMETRIES))
def test_conv_input_gradient_geometries(name: str) -> None:
    x_shape, w_shape, attrs = CONV_GEOMETRIES[name]
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(x_shape))], initializer=[w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compare(proto, {"x": rng.standard_normal(x_shape).astype(np.float32)}, reference_dtype=np.float64, tol=1e-5)


def test_old_softmax_is_upgraded_exactly() -> None:
    """Softmax-11 on a [2, 3, 4] tensor normalizes over the last two axes together (2-D coercion)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=1)],
        "softmax11", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])], initializer=[w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    compare(proto, {"x": np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)})


def test_intermediate_wrt_values_and_function_seeds() -> None:
    proto = models.tiny_cnn()
    m = Model.from_proto(proto)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)

    def seed(v: np.ndarray) -> np.ndarray:
        s = np.zeros_like(v)
        s[:, 3] = 1
        return s

    ref = m.value_and_grad({"input": x}, {"logits": seed}, ["input", "relu1"], values=["pool1"])
    got = OrtGradBackend(m.graph, proto).value_and_grad({"input": x}, {"logits": seed}, ["input", "relu1"],
                                                       values=["pool1"])
    for name in ("input", "relu1"):
        assert rel(got.grads[name], ref.grads[name]) < 1e-5
    np.testing.assert_allclose(got.values["pool1"], ref.values["pool1"], rtol=1e-5, atol=1e-6)
    assert set(got.values) == {"logits", "pool1"}


def test_op_without_emitter_is_refused_by_node() -> None:
    assert "Shrink" not in EMITTERS
    proto = models.tiny_cnn_with_unsupported_op()
    m = Model.from_proto(proto)
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    with pytest.raises(UnsupportedOpError) as info:
        OrtGradBackend(m.graph, proto).value_and_grad({"input": x}, {"logits": np.ones((1, 10), np.float32)},
                                                      ["input"])
    assert info.value.node == "the_shrink" and info.value.op_type == "Shrink"
    assert "numpy" in (info.value.hint or "")


def _conv_bn_chain() -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> strided Conv -> BatchNormalization -> GlobalAveragePool."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             [("w1", (4, 3, 3, 3)), ("w2", (5, 4, 3, 3)), ("g1", (4,)), ("b1", (4,)), ("m1", (4,)), ("g2", (5,)),
              ("b2", (5,)), ("m2", (5,))]]
    inits += [numpy_helper.from_array(rng.uniform(0.5, 2, s).astype(np.float32), n) for n, s in [("v1", (4,)), ("v2", (5,))]]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c2", "g2", "b2", "m2", "v2"], ["n2"]),
        helper.make_node("GlobalAveragePool", ["n2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_batch_norm_scales_fold_into_the_conv_gradients_unless_the_conv_output_is_wanted() -> None:
    proto = _conv_bn_chain()
    m = Model.from_proto(proto)
    x = np.random.default_rng(4).standard_normal((2, 3, 10, 10))
    seed = np.random.default_rng(5).standard_normal((2, 5, 1, 1))
    backend = OrtGradBackend(m.graph, proto)
    compiled = backend.model({"x": x.astype(np.float32)}, ["y"], ["x"])

    def scalings(model: onnx.ModelProto) -> int:
        return sum(n.op_type == "Mul" and n.input[1].startswith("bn_scale") for n in model.graph.node)

    assert scalings(compiled) == 0  # both scales folded (stride 1 and 2)
    ref = m.value_and_grad({"x": x}, {"y": seed}, ["x", "c1"], dtype=np.float64)
    got = backend.value_and_grad({"x": x.astype(np.float32)}, {"y": seed.astype(np.float32)}, ["x"])
    assert rel(got.grads["x"], ref.grads["x"]) < 1e-5
    kept = backend.model({"x": x.astype(np.float32)}, ["y"], ["x", "c1"])
    assert scalings(kept) == 1  # c1's gradient is an output: its scale is not folded
    both = backend.value_and_grad({"x": x.astype(np.float32)}, {"y": seed.astype(np.float32)}, ["x", "c1"])
    for name in ("x", "c1"):
        assert rel(both.grads[name], ref.grads[name]) < 1e-5


def test_average_pool_over_the_whole_map_is_broadcast_back_without_a_conv_transpose() -> None:
    rng = np.random.default_rng(6)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("AveragePool", ["r"], ["y"], kernel_shape=[6, 5])]
    graph = helper.make_graph(nodes, "gap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 1, 1])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m = Model.from_proto(proto)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    compiled = OrtGradBackend(m.graph, proto).model({"x": x}, ["y"], ["x"])
    assert not any(n.op_type == "ConvTranspose" for n in compiled.graph.node)
    compare(proto, {"x": x})


@pytest.mark.parametrize("n", [1, 2, 5])
def test_independent_rows_run_in_parallel_halves_with_the_same_results(n: int) -> None:
    """Two halves at once on one session compiled for the half batch (an odd batch padded with a
    zero-seeded copy of its last row, cut from the results): same values and gradients as one run,
    intermediate ``wrt`` and requested values included; a single row is never split."""
    proto = models.tiny_cnn()
    m = Model.from_proto(proto)
    x = np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)
    seed = np.random.default_rng(1).standard_normal((n, 10)).astype(np.float32)
    backend = OrtGradBackend(m.graph, proto, threads=2)
    whole = backend.value_and_grad({"input": x}, {"logits": seed}, ["input", "relu1"], values=["pool1"])
    split = backend.value_and_grad({"input": x}, {"logits": seed}, ["input", "relu1"], values=["pool1"],
                                   independent_rows=True)
    for name in ("input", "relu1"):
        assert split.grads[name].shape == whole.grads[name].shape
        np.testing.assert_allclose(split.grads[name], whole.grads[name], rtol=1e-5, atol=1e-6)
    for name in ("logits", "pool1"):
        assert split.values[name].shape == whole.values[name].shape
        np.testing.assert_allclose(split.values[name], whole.values[name], rtol=1e-5, atol=1e-6)
    batches = sorted(key[3][0][1][0] for key in backend._cache)
    assert batches == ([1] if n == 1 else sorted({n, -(-n // 2)})), batches
    threads = {key[3][0][1][0]: key[4] for key in backend._cache}
    if n > 1:
        assert threads[-(-n // 2)] == 1  # each half gets its share of the two threads


def test_independent_rows_errors_reach_the_caller() -> None:
    """A failure in the parallel half is raised in the calling thread, as onnxviz's own error."""
    proto = models.tiny_cnn()
    m = Model.from_proto(proto)
    backend = OrtGradBackend(m.graph, proto, threads=2)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with pytest.raises(TargetError, match="seed for 'logits'"):
        backend.value_and_grad({"input": x}, {"logits": np.ones((4, 7), np.float32)}, ["input"],
                               independent_rows=True)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("independent_rows", [False, True])
def test_summed_rows_equal_the_sum_of_row_gradients(name: str, independent_rows: bool) -> None:
    builder, shape = SMALL[name]
    proto = builder()
    m = Model.from_proto(proto)
    feeds = feeds_for(m, shape)
    out = m.outputs[0].name
    value = m.engine.run(feeds, [out])[out]
    seed = np.random.default_rng(1).standard_normal(value.shape).astype(np.float32)
    wrt = list(m.graph.input_names)
    backend = OrtGradBackend(m.graph, proto, threads=2)
    rows = backend.value_and_grad(feeds, {out: seed}, wrt)
    summed = backend.value_and_grad(feeds, {out: seed}, wrt, independent_rows=independent_rows, sum_rows=True)
    for w in wrt:
        want = rows.grads[w].sum(axis=0, keepdims=True)
        assert summed.grads[w].shape == want.shape
        np.testing.assert_allclose(summed.grads[w], want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
    np.testing.assert_allclose(summed.values[out], rows.values[out], rtol=1e-5, atol=1e-6)


def test_rows_are_summed_before_the_first_linear_ops() -> None:
    """Conv -> BatchNormalization -> Relu: the sum is taken at the BatchNormalization's output,
    so the conv's input gradient (its flipped-kernel Conv) runs on one row; a seed or a second
    ``wrt`` on the way stops the walk where its own gradient is wanted."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "w": rng.standard_normal((4, 3, 3, 3)), "scale": rng.random(4) + 0.5, "bias": rng.standard_normal(4),
        "mean": rng.standard_normal(4), "var": rng.random(4) + 0.5, "mul": rng.standard_normal((1, 3, 1, 1)),
    }.items()]
    nodes = [
        helper.make_node("Mul", ["x", "mul"], ["xs"]),
        helper.make_node("Conv", ["xs", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    proto = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    m = Model.from_proto(proto)
    backend = OrtGradBackend(m.graph, proto)
    x = np.random.default_rng(1).standard_normal((6, 3, 8, 8)).astype(np.float32)
    summed = backend._build({"x": x}, ("y",), ("x",), (), sum_rows=True)[0]
    reduce = [n for n in summed.graph.node if n.op_type == "ReduceSum"]
    assert len(reduce) == 1
    # the BN output's gradient (the Relu mask's product) is what gets summed
    relu_grad = next(n for n in summed.graph.node if reduce[0].input[0] in n.output)
    assert relu_grad.op_type == "Mul"
    got = backend.value_and_grad({"x": x}, {"y": np.ones((6, 4), np.float32)}, ["x"], sum_rows=True)
    ref = m.value_and_grad({"x": x.astype(np.float64)}, {"y": np.ones((6, 4))}, ["x"], dtype=np.float64)
    np.testing.assert_allclose(got.grads["x"][0], ref.grads["x"].sum(axis=0), rtol=1e-4, atol=1e-5)
    from onnxviz.backends.ortgrad import _row_sum_points

    path, consts = m.graph.nodes, m.graph.constants
    shapes = {"x": (6, 3, 8, 8), "xs": (6, 3, 8, 8)}
    assert _row_sum_points(path, ["x"], consts, shapes, set()) == {"bn"}
    assert _row_sum_points(path, ["x"], consts, shapes, {"c"}) == {"xs"}
    assert _row_sum_points(path, ["x", "xs"], consts, shapes, set()) == {"x", "bn"}
    # a constant that broadcasts the tensor to a bigger shape is not a per-row linear map
    assert _row_sum_points(path, ["x"], consts, {"x": (6, 3, 8, 8), "xs": (6, 6, 8, 8)}, set()) == {"x"}


def _single_op_model(op: str, x_shape: tuple[int, ...], **attrs: object) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], **attrs)], op.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(x_shape))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("x_shape", "attrs"),
    [
        ((2, 7, 5, 6), {"size": 5, "alpha": 0.3, "beta": 0.75, "bias": 1.5}),
        ((1, 3, 5, 5), {"size": 9}),  # window wider than the channels
        ((1, 8, 3, 2), {"size": 3, "alpha": 1.0, "beta": 1.2}),
    ],
)
def test_lrn_gradient_matches_float64(x_shape: tuple[int, ...], attrs: dict[str, object]) -> None:
    proto = _single_op_model("LRN", x_shape, **attrs)
    x = np.random.default_rng(6).standard_normal(x_shape).astype(np.float32)
    compare(proto, {"x": x}, reference_dtype=np.float64, tol=1e-5)


@pytest.mark.parametrize(("x_shape", "size", "reason"), [((2, 6, 4, 4), 4, "even size"), ((2, 6, 9), 3, "3-D input")])
def test_lrn_onnxruntime_cannot_run_is_refused_by_node(x_shape: tuple[int, ...], size: int, reason: str) -> None:
    """onnxruntime's LRN kernel takes odd sizes and 4-D inputs only: the compiled backward says
    so by node, and ``Model.value_and_grad`` goes to the numpy engine, whose rule covers the rest."""
    proto = _single_op_model("LRN", x_shape, size=size, alpha=0.5, beta=0.6, bias=2.0)
    m = Model.from_proto(proto)
    x = np.random.default_rng(6).standard_normal(x_shape).astype(np.float32)
    with pytest.raises(UnsupportedOpError, match=reason):
        OrtGradBackend(m.graph, proto).value_and_grad({"x": x}, {"y": np.ones_like(x)}, ["x"])
    got = m.value_and_grad({"x": x}, {"y": np.ones_like(x)}, ["x"]).grads["x"]
    want = m.value_and_grad({"x": x.astype(np.float64)}, {"y": np.ones(x_shape)}, ["x"], dtype=np.float64)
    np.testing.assert_allclose(got, want.grads["x"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("x_shape", "attrs"),
    [
        ((2, 3, 7, 7), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        ((1, 4, 9, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ((1, 2, 8, 9), {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [2, 0, 1, 1]}),
        ((2, 3, 11), {"kernel_shape": [4], "strides": [2], "pads": [1, 2]}),
        ((1, 2, 6, 6), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ],
)
def test_average_pool_with_padding_matches_float64(x_shape: tuple[int, ...], attrs: dict[str, object]) -> None:
    """Padding left out of the counts (the default): border windows average fewer values, so
    their cotangents spread with larger weights."""
    proto = _single_op_model("AveragePool", x_shape, **attrs)
    x = np.random.default_rng(7).standard_normal(x_shape).astype(np.float32)
    compare(proto, {"x": x}, reference_dtype=np.float64, tol=1e-5)


@pytest.mark.parametrize("name", ["bvlc_alexnet", "inception_v1", "inception_v2", "shufflenet"])
def test_light_models_with_lrn_or_padded_average_pools_compile(name: str) -> None:
    """The light models whose LRN or padding-excluding AveragePool used to send them to the
    numpy engine: compiled gradients of the logits match the numpy engine's (ZFNet-512, whose
    LRNs are AlexNet's, is left out: its numpy reference alone takes 11 s)."""
    path = next(p for p in models.light_model_paths() if p.stem == f"light_{name}")
    proto = onnx.load(path)
    m = Model.from_proto(proto)
    softmax = [n for n in m.graph.nodes if n.op_type == "Softmax"]
    seed_tensor = softmax[-1].inputs[0] if softmax else m.outputs[0].name
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in m.inputs[0].shape)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    compare(proto, {m.inputs[0].name: x}, seed_tensor, tol=1e-3)


def test_large_constants_reach_onnxruntime_as_buffers_and_inspection_gets_them_inline() -> None:
    """The compiled model carries its weights as external-data placeholders (handed to
    onnxruntime as numpy buffers: no protobuf serialization of the weights); ``model()`` writes
    them inline, so what it returns runs on its own and gives the same gradient."""
    proto = models.tiny_cnn()
    m = Model.from_proto(proto)
    backend = OrtGradBackend(m.graph, proto)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    compiled, seeds, grads, external = backend._build({"input": x}, ("logits",), ("input",), ())
    placeholders = [t for t in compiled.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert placeholders and {t.name for t in placeholders} <= set(external)
    assert all(not t.raw_data for t in placeholders)
    inline = backend.model({"input": x}, ["logits"], ["input"])
    assert not any(t.data_location == TensorProto.EXTERNAL for t in inline.graph.initializer)
    import onnxruntime as ort

    seed = np.random.default_rng(1).standard_normal((2, 10)).astype(np.float32)
    session = ort.InferenceSession(inline.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run([grads[0][1]], {"input": x, seeds[0][1]: seed})
    want = backend.value_and_grad({"input": x}, {"logits": seed}, ["input"]).grads["input"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_segmentation_style_model_with_resize_and_layer_norm_compiles() -> None:
    """Conv -> stride-2 conv -> GELU -> LayerNormalization over channels-last -> bilinear Resize
    back up -> concat with the skip -> 1x1 conv (a tiny U-Net/ConvNeXt mix): the compiled
    gradient of a mask region's sum matches float64, with no op falling back."""
    rng = np.random.default_rng(8)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Gelu", ["c2"], ["g2"], domain=""),
        helper.make_node("Transpose", ["g2"], ["t2"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["t2", "ln_s", "ln_b"], ["n2"], axis=-1),
        helper.make_node("Transpose", ["n2"], ["b2"], perm=[0, 3, 1, 2]),
        helper.make_node("Resize", ["b2", "", "scales"], ["u2"], mode="linear"),
        helper.make_node("Concat", ["r1", "u2"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["y"]),
    ]
    inits = [init("w1", 6, 3, 3, 3), init("w2", 8, 6, 3, 3), init("ln_s", 8), init("ln_b", 8), init("w3", 2, 14, 1, 1),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    graph = helper.make_graph(nodes, "seg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 16, 16])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    seed = np.zeros((2, 2, 16, 16), np.float32)
    seed[:, 1, 4:12, 4:12] = 1.0  # one class's mask region
    m = Model.from_proto(proto)
    got = OrtGradBackend(m.graph, proto).value_and_grad({"x": x}, {"y": seed}, ["x"])
    want = m.value_and_grad({"x": x.astype(np.float64)}, {"y": seed.astype(np.float64)}, ["x"], dtype=np.float64)
    assert rel(got.grads["x"], want.grads["x"]) < 1e-4


def test_space_to_depth_by_strided_slices_compiles() -> None:
    """YOLOv5's Focus layer: four stride-2 slices of the image concatenated on channels, then a
    conv; also a reversed slice (step -1). Compiled gradients match float64."""
    rng = np.random.default_rng(9)

    def ints(name: str, *values: int) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, dtype=np.int64), name)

    nodes, parts = [], []
    for k, (dy, dx) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        nodes.append(helper.make_node("Slice", ["x", f"s{k}", "e", "ax", "st"], [f"p{k}"]))
        parts.append(f"p{k}")
    nodes += [
        helper.make_node("Concat", parts, ["cat"], axis=1),
        helper.make_node("Slice", ["cat", "rs", "re", "rax", "rst"], ["rev"]),
        helper.make_node("Conv", ["rev", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [ints(f"s{k}", dy, dx) for k, (dy, dx) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)])]
    inits += [ints("e", 2 ** 62, 2 ** 62), ints("ax", 2, 3), ints("st", 2, 2),
              ints("rs", -1), ints("re", -(2 ** 63)), ints("rax", 3), ints("rst", -1),
              numpy_helper.from_array((rng.standard_normal((4, 12, 3, 3)) * 0.3).astype(np.float32), "w")]
    graph = helper.make_graph(nodes, "focus", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5, 5])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    compare(proto, {"x": x}, reference_dtype=np.float64, tol=1e-5)
