"""The numpy engine on whole graphs: forward vs onnxruntime, gradients by finite differences,
pruning, per-call rule overrides and the axioms (batch = per-example, inputs untouched)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxviz.backends.numpy.registry import Call
from onnxviz.errors import InputError, TargetError, UnsupportedOpError
from onnxviz.model import Model
from tests import models

ZOO: dict[str, Callable[[], onnx.ModelProto]] = {
    "tiny_cnn": models.tiny_cnn,
    "tiny_cnn_opset9": lambda: models.tiny_cnn(opset=9),
    "tf2onnx_nhwc": models.tf2onnx_nhwc,
    "paddle_style_constants": models.paddle_style_constants,
    "constant_subgraph_weights": models.constant_subgraph_weights,
    "grayscale_cnn": models.grayscale_cnn,
    "two_input_model": models.two_input_model,
    "non_image_mlp": models.non_image_mlp,
    "dynamic_spatial": models.dynamic_spatial,
    "old_opset_model": models.old_opset_model,
}


def random_feeds(model: Model, batch: int = 2, seed: int = 0, spatial: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in model.inputs:
        assert t.shape is not None
        shape = []
        for axis, d in enumerate(t.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            else:
                shape.append(batch if axis == 0 else spatial)
        feeds[t.name] = rng.standard_normal(shape).astype(t.dtype)
    return feeds


@pytest.mark.parametrize("name", sorted(ZOO))
def test_numpy_forward_matches_onnxruntime(name: str) -> None:
    m = Model.from_proto(ZOO[name]())
    feeds = random_feeds(m)
    ours = m.engine.run(feeds)
    theirs = m.run(feeds)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("path", models.light_model_paths(), ids=lambda p: p.stem)
def test_numpy_forward_matches_onnxruntime_on_light_models(path) -> None:
    m = Model.load(path)
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    names = [n for n in m.graph.tensor_names() if n not in m.graph.input_names]
    probe = names[len(names) // 2]
    ours = m.engine.run({m.inputs[0].name: x}, list(m.graph.output_names) + [probe])
    theirs = m.run(x, [probe])
    for key in ours:
        scale = float(np.abs(theirs[key]).max()) or 1.0
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-3, atol=1e-4 * scale)


def _score(m: Model, feeds: dict[str, np.ndarray], out: str, seed: np.ndarray) -> float:
    return float(np.sum(m.engine.run(feeds, [out], dtype=np.float64)[out] * seed))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_input_gradient_matches_finite_differences(name: str) -> None:
    m = Model.from_proto(ZOO[name]())
    feeds = {k: v.astype(np.float64) for k, v in random_feeds(m, seed=1).items()}
    out = m.outputs[0].name
    value = m.engine.run(feeds, [out], dtype=np.float64)[out]
    seed = np.random.default_rng(2).standard_normal(value.shape)
    wrt = [t.name for t in m.inputs if np.issubdtype(t.dtype, np.floating)]
    res = m.engine.value_and_grad(feeds, {out: seed}, wrt, dtype=np.float64)
    rng = np.random.default_rng(3)
    eps = 1e-6
    for name_in in wrt:
        u = rng.standard_normal(feeds[name_in].shape)
        plus = dict(feeds, **{name_in: feeds[name_in] + eps * u})
        minus = dict(feeds, **{name_in: feeds[name_in] - eps * u})
        fd = (_score(m, plus, out, seed) - _score(m, minus, out, seed)) / (2 * eps)
        ad = float(np.sum(res.grads[name_in] * u))
        assert ad == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_gradient_api_targets_and_batch_equals_per_example() -> None:
    m = Model.from_proto(models.tiny_cnn())
    x = random_feeds(m, batch=3)[m.inputs[0].name]
    x_before = x.copy()
    g_batch = m.gradient(x, target=[1, 2, 0])
    for i, k in enumerate([1, 2, 0]):
        g_one = m.gradient(x[i : i + 1], target=k)
        np.testing.assert_allclose(g_batch[i : i + 1], g_one, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(x, x_before)
    top = np.argmax(m.run(x)[m.outputs[0].name], axis=1)
    np.testing.assert_allclose(m.gradient(x), m.gradient(x, target=list(top)), rtol=1e-6)
    cot = np.zeros((3, m.run(x)[m.outputs[0].name].shape[1]), np.float32)
    cot[:, 2] = 1
    np.testing.assert_allclose(m.gradient(x, target=cot), m.gradient(x, target=2), rtol=1e-6)
    with pytest.raises(TargetError, match="out of range"):
        m.gradient(x, target=1000)
    with pytest.raises(TargetError, match="batch of 3"):
        m.gradient(x, target=[1, 2])


def test_float64_path_returns_float64() -> None:
    m = Model.from_proto(models.tiny_cnn())
    x = random_feeds(m)[m.inputs[0].name]
    g64 = m.gradient(x, target=1, dtype=np.float64)
    g32 = m.gradient(x, target=1)
    assert g64.dtype == np.float64 and g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5 * np.abs(g64).max())


def test_gradient_wrt_intermediate_is_consistent() -> None:
    m = Model.from_proto(models.tiny_cnn())
    feeds = random_feeds(m)
    inp = m.inputs[0].name
    out = m.outputs[0].name
    conv_out = next(n.outputs[0] for n in m.graph.nodes if n.op_type == "Conv")
    value = m.run(feeds)[out]
    seed = np.random.default_rng(0).standard_normal(value.shape).astype(np.float32)
    both = m.value_and_grad(feeds, {out: seed}, [inp, conv_out], dtype=np.float64)
    alone = m.value_and_grad(feeds, {out: seed}, [inp], dtype=np.float64)
    np.testing.assert_allclose(both.grads[inp], alone.grads[inp], rtol=1e-12)
    assert both.grads[conv_out].shape == m.run(feeds, [conv_out])[conv_out].shape
    # Seeding the intermediate itself returns the seed.
    s = np.ones_like(m.run(feeds, [conv_out])[conv_out])
    own = m.value_and_grad(feeds, {conv_out: s}, [conv_out])
    np.testing.assert_array_equal(own.grads[conv_out], s)
    # The input gradient through the intermediate is the VJP of the first conv applied to it.
    conv = next(n for n in m.graph.nodes if n.op_type == "Conv")
    from onnxviz.backends.numpy import REGISTRY

    x = feeds[inp].astype(np.float64)
    w = m.constants[conv.inputs[1]].astype(np.float64)
    b = m.constants[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 else None
    y = REGISTRY.get_forward("Conv", m.opset)(x, w, b, **conv.attrs)  # type: ignore[misc]
    call = Call("Conv", (x, w, b), (y,), conv.attrs, (True, False, False), conv.label, m.opset)
    gx = REGISTRY.get_vjp("Conv", m.opset)(call, both.grads[conv_out])[0]  # type: ignore[misc]
    np.testing.assert_allclose(gx, both.grads[inp], rtol=1e-10, atol=1e-14)


def _with_unsupported_head(base: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a Hardmax (no numpy rule) appended after its output."""
    model = onnx.ModelProto()
    model.CopyFrom(base)
    out = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Hardmax", [out], ["hard"], name="the_head"))
    model.graph.output.append(helper.make_tensor_value_info("hard", onnx.TensorProto.FLOAT, ["N", None]))
    return model


def test_only_the_needed_subgraph_runs() -> None:
    from onnxviz.backends.numpy import REGISTRY

    assert REGISTRY.get_forward("Hardmax", 13) is None
    m = Model.from_proto(_with_unsupported_head(models.tiny_cnn()))
    feeds = random_feeds(m)
    conv_out = next(n.outputs[0] for n in m.graph.nodes if n.op_type == "Conv")
    res = m.value_and_grad(feeds, {conv_out: np.ones_like(m.run(feeds, [conv_out])[conv_out])})
    assert np.abs(res.grads[m.inputs[0].name]).sum() > 0
    with pytest.raises(UnsupportedOpError, match="Hardmax.*the_head") as e:
        m.value_and_grad(feeds, {"hard": lambda v: np.ones_like(v)})
    assert "onnxruntime" in (e.value.hint or "")


def test_rule_override_is_per_call() -> None:
    m = Model.from_proto(models.tiny_cnn())
    x = random_feeds(m)[m.inputs[0].name]
    default = m.gradient(x, target=1)

    def deconv_relu(call: Call, g: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
        return (None if g is None else np.maximum(g, 0),)

    overridden = m.gradient(x, target=1, rules={"Relu": deconv_relu})
    assert not np.allclose(default, overridden)
    np.testing.assert_array_equal(m.gradient(x, target=1), default)


def test_onnxruntime_forward_gives_the_same_gradient() -> None:
    m = Model.from_proto(models.tiny_cnn())
    feeds = random_feeds(m)
    out = m.outputs[0].name
    seed = lambda v: np.eye(v.shape[1], dtype=v.dtype)[[1] * v.shape[0]]  # noqa: E731
    a = m.value_and_grad(feeds, {out: seed}, forward="numpy").grads[m.inputs[0].name]
    b = m.value_and_grad(feeds, {out: seed}, forward="onnxruntime").grads[m.inputs[0].name]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(a).max())


def test_unknown_tensor_names() -> None:
    m = Model.from_proto(models.tiny_cnn())
    feeds = random_feeds(m)
    with pytest.raises(TargetError, match="not in the graph"):
        m.value_and_grad(feeds, {"nope": np.ones(1)})
    with pytest.raises(TargetError, match="not in the graph"):
        m.value_and_grad(feeds, {m.outputs[0].name: lambda v: v}, ["nope"])


@pytest.mark.parametrize("builder", [models.quantized_qdq, models.quantized_qlinear])
def test_quantized_paths_are_refused_not_silently_zero(builder) -> None:
    m = Model.from_proto(builder())
    feeds = random_feeds(m)
    with pytest.raises(UnsupportedOpError, match="silently zero") as e:
        m.gradient(feeds[m.inputs[0].name], target=1)
    assert "occlusion" in (e.value.hint or "")


def test_max_pool_with_nan_windows_propagates_nan() -> None:
    from onnxviz.backends.numpy import REGISTRY

    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    y, idx = REGISTRY.get_forward("MaxPool", 12)(x, kernel_shape=[2, 2], strides=[2, 2])  # type: ignore[misc]
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == 15
    assert idx[0, 0, 0, 0] == 5  # the NaN's flat index


def test_auto_engine_compiles_float32_and_falls_back() -> None:
    m = Model.from_proto(models.tiny_cnn())
    feeds = random_feeds(m)
    out, inp = m.outputs[0].name, m.inputs[0].name
    seed = np.zeros((2, 10), np.float32)
    seed[:, 3] = 1
    ref = m.value_and_grad(feeds, {out: seed}, engine="numpy").grads[inp]
    auto = m.value_and_grad(feeds, {out: seed}).grads[inp]
    compiled = m.value_and_grad(feeds, {out: seed}, engine="ortgrad").grads[inp]
    np.testing.assert_allclose(auto, compiled, rtol=0, atol=0)  # auto took the compiled path
    np.testing.assert_allclose(compiled, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    # an op the compiled backward lacks: auto falls back to numpy, ortgrad refuses
    shrunk = Model.from_proto(models.tiny_cnn_with_unsupported_op())
    with pytest.raises(UnsupportedOpError, match="Shrink"):
        shrunk.value_and_grad(feeds, {out: seed}, engine="ortgrad")
    with pytest.raises(UnsupportedOpError, match="Shrink"):  # and numpy has no Shrink either
        shrunk.value_and_grad(feeds, {out: seed})
    with pytest.raises(InputError, match="engine"):
        m.value_and_grad(feeds, {out: seed}, engine="tpu")
