"""Gradient attribution methods: known answers on hand-built models, the axioms (IG completeness,
batch = per-example, inputs untouched, determinism under a fixed rng), layouts and the registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.errors import InputError
from onnxviz.methods import gradient as G
from onnxviz.methods.base import Method
from onnxviz.methods.registry import METHODS, explain, get_method
from onnxviz.model import Model
from tests import models

#: Small settings that keep every method fast; used wherever a test loops over METHODS.
QUICK: dict[str, dict[str, Any]] = {
    "smoothgrad": {"samples": 5, "batch_size": 4},
    "integrated_gradients": {"steps": 7, "batch_size": 4},
}
GRADIENT_FAMILY = [n for n, cls in METHODS.items() if issubclass(cls, G.GradientMethod)]


def quick(name: str, **extra: Any) -> Method:
    return METHODS[name](**{**QUICK.get(name, {}), **extra})


# --------------------------------------------------------------------------------------------
# Tiny models with known answers
# --------------------------------------------------------------------------------------------


def _opset_model(nodes, inputs, outputs, inits, opset: int = 13) -> Model:
    graph = helper.make_graph(nodes, "t", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return Model.from_proto(proto)


def linear_image_model(seed: int = 0) -> tuple[Model, np.ndarray]:
    """input [N, 3, 4, 4] -> Flatten -> Gemm (W [5, 48], transB) -> logits: gradient of class k is W[k]."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((5, 48)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    model = _opset_model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        {"W": w, "B": b},
    )
    return model, w


def conv_gemm_model(seed: int = 1) -> Model:
    """Conv (no activation) -> Flatten -> Gemm: linear in the input, so IG is exact for any rule."""
    rng = np.random.default_rng(seed)
    inits = {
        "cw": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3,
        "cb": rng.standard_normal(4).astype(np.float32),
        "W": rng.standard_normal((6, 4 * 8 * 8)).astype(np.float32) * 0.1,
        "B": rng.standard_normal(6).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["conv"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    return _opset_model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6])],
        inits,
    )


def one_relu_model(act: str = "Relu", seed: int = 2) -> tuple[Model, np.ndarray, np.ndarray, np.ndarray]:
    """x [N, 6] -> Gemm W1 [5, 6] + b1 -> act -> Gemm W2 [3, 5] -> y [N, 3]."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((5, 6)).astype(np.float32)
    b1 = rng.standard_normal(5).astype(np.float32)
    w2 = rng.standard_normal((3, 5)).astype(np.float32)
    inits = {"W1": w1, "B1": b1, "W2": w2}
    if act == "Relu":
        act_node = helper.make_node("Relu", ["h"], ["a"])
    else:  # ReLU6 as PyTorch exports it (opset 11+: bounds as inputs)
        inits["lo"] = np.array(0.0, np.float32)
        inits["hi"] = np.array(1.0, np.float32)
        act_node = helper.make_node("Clip", ["h", "lo", "hi"], ["a"])
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
        act_node,
        helper.make_node("MatMul", ["a", "W2T"], ["y"]),
    ]
    inits["W2T"] = np.ascontiguousarray(w2.T)
    del inits["W2"]
    model = _opset_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return model, w1, b1, w2


def image_batch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Known answers
# --------------------------------------------------------------------------------------------


def test_gradient_of_a_linear_model_is_the_weight_row() -> None:
    model, w = linear_image_model()
    x = image_batch((3, 3, 4, 4))
    targets = np.array([0, 4, 2])
    e = G.Gradient().explain(model, x, targets)
    np.testing.assert_allclose(e.attributions, w[targets].reshape(3, 3, 4, 4), rtol=1e-6)
    np.testing.assert_allclose(e.maps, w[targets].reshape(3, 3, 4, 4).sum(axis=1), rtol=1e-5, atol=1e-6)
    sal = G.Saliency().explain(model, x, targets)
    np.testing.assert_allclose(sal.maps, np.abs(w[targets].reshape(3, 3, 4, 4)).max(axis=1), rtol=1e-6)
    assert not sal.signed and e.signed
    gxi = G.GradientXInput().explain(model, x, targets)
    np.testing.assert_allclose(gxi.attributions, x * w[targets].reshape(3, 3, 4, 4), rtol=1e-6)
    np.testing.assert_array_equal(e.targets, targets)
    logits = x.reshape(3, -1) @ w.T + model.constants["B"]
    np.testing.assert_allclose(e.scores, logits[np.arange(3), targets], rtol=1e-5)


@pytest.mark.parametrize("rule", G.IG_RULES)
@pytest.mark.parametrize("baseline", ["zero", "array"])
def test_ig_on_a_linear_model_is_gradient_times_difference(rule: str, baseline: str) -> None:
    model = conv_gemm_model()
    x = image_batch((2, 3, 8, 8))
    base: Any = "zero" if baseline == "zero" else image_batch((3, 8, 8), seed=9)
    b = 0.0 if baseline == "zero" else base
    grad = G.Gradient(dtype="float64").explain(model, x, 3).attributions
    e = G.IntegratedGradients(9, rule, base, dtype="float64", batch_size=5).explain(model, x, 3)
    total = G.ig_rule(rule, 9)[1].sum()  # 1 for every rule but Captum's trapezoid (1 - 1/9)
    np.testing.assert_allclose(e.attributions, total * grad * (x.astype(np.float64) - b), rtol=1e-10, atol=1e-12)
    if rule != "riemann_trapezoid_captum":
        assert np.all(e.trust["completeness_error"] < 1e-9)
    else:
        np.testing.assert_allclose(e.trust["completeness_error"], 1 / 9, rtol=1e-9)


@pytest.mark.parametrize("rule", ["gauss-legendre", "riemann_trapezoid"])
def test_ig_completeness_on_a_relu_cnn(rule: str) -> None:
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((2, 3, 32, 32))
    e = G.IntegratedGradients(64, rule, batch_size=32).explain(model, x)
    t = e.trust
    assert np.all(t["completeness_error"] < 0.01), t["completeness_error"]
    np.testing.assert_allclose(t["attribution_sum"], e.attributions.reshape(2, -1).sum(axis=1), rtol=1e-5)
    logits = model.run(x)["logits"]
    np.testing.assert_allclose(t["score"], logits[np.arange(2), e.targets], rtol=1e-5)
    zero = model.run(np.zeros_like(x))["logits"]
    np.testing.assert_allclose(t["baseline_score"], zero[np.arange(2), e.targets], rtol=1e-5)


def test_ig_rules_match_their_definitions() -> None:
    a, w = G.ig_rule("riemann_trapezoid", 5)
    np.testing.assert_allclose(a, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(w, [0.125, 0.25, 0.25, 0.25, 0.125])
    a, w = G.ig_rule("riemann_trapezoid_captum", 5)
    np.testing.assert_allclose(w, [0.1, 0.2, 0.2, 0.2, 0.1])
    np.testing.assert_allclose(G.ig_rule("riemann_left", 4)[0], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(G.ig_rule("riemann_right", 4)[0], [0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(G.ig_rule("riemann_middle", 4)[0], [0.125, 0.375, 0.625, 0.875])
    a, w = G.ig_rule("gauss-legendre", 6)
    assert np.all((a > 0) & (a < 1))
    # Gauss-Legendre with n nodes integrates polynomials of degree 2n - 1 exactly.
    np.testing.assert_allclose(np.sum(w * a**11), 1 / 12, rtol=1e-12)


def test_ig_blur_and_uniform_baselines() -> None:
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((2, 3, 32, 32))
    ig = G.IntegratedGradients(16, baseline="blur", blur_sigma=2.0)
    base = ig.baselines(model, x, "input", np.random.default_rng(0))
    assert base.shape == x.shape
    np.testing.assert_allclose(base.mean(axis=(2, 3)), x.mean(axis=(2, 3)), atol=5e-3)  # about the same means
    assert base.std() < 0.5 * x.std()
    flat = np.broadcast_to(np.array([0.2, 0.5, 0.9], np.float32)[None, :, None, None], x.shape)
    np.testing.assert_allclose(ig.baselines(model, flat, "input", np.random.default_rng(0)), flat, rtol=1e-6)
    np.testing.assert_allclose(base[:, 0], ig.baselines(model, x[:, :1], "input", np.random.default_rng(0))[:, 0])
    e = ig.explain(model, x)
    assert np.all(e.trust["completeness_error"] < 0.05)
    assert "blur (sigma 2)" in e.variant
    uni = G.IntegratedGradients(8, baseline="uniform")
    u = uni.baselines(model, x, "input", np.random.default_rng(0))
    assert np.all(u >= x.reshape(2, -1).min(1)[:, None, None, None])
    assert np.all(u <= x.reshape(2, -1).max(1)[:, None, None, None])
    a = uni.explain(model, x, rng=np.random.default_rng(5)).attributions
    np.testing.assert_array_equal(a, uni.explain(model, x, rng=np.random.default_rng(5)).attributions)
    assert not np.allclose(a, uni.explain(model, x, rng=np.random.default_rng(6)).attributions)


def test_guided_backprop_and_deconvnet_on_one_relu() -> None:
    model, w1, b1, w2 = one_relu_model()
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    k = np.array([0, 1, 2, 1])
    h = x @ w1.T + b1
    g_out = w2[k]  # dy_k / da
    plain = (g_out * (h > 0)) @ w1
    guided = (np.maximum(g_out, 0) * (h > 0)) @ w1
    deconv = np.maximum(g_out, 0) @ w1
    assert np.any((g_out < 0) & (h > 0)), "the test needs negative cotangents at active units"
    np.testing.assert_allclose(G.Gradient().explain(model, x, k).attributions, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(G.GuidedBackprop().explain(model, x, k).attributions, guided, rtol=1e-5, atol=1e-6)
    e = G.Deconvnet().explain(model, x, k)
    np.testing.assert_allclose(e.attributions, deconv, rtol=1e-5, atol=1e-6)
    assert e.maps.shape == (4, 1, 6)  # flat features: one row per sample


def test_guided_and_deconv_treat_clip_only_when_asked() -> None:
    model, w1, b1, w2 = one_relu_model("Clip")
    x = np.random.default_rng(4).standard_normal((4, 6)).astype(np.float32)
    k = np.array([2, 0, 1, 2])
    h = x @ w1.T + b1
    inside = (h >= 0) & (h <= 1)
    g_out = w2[k]
    np.testing.assert_allclose(
        G.GuidedBackprop().explain(model, x, k).attributions, (g_out * inside) @ w1, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        G.GuidedBackprop(ops=("Relu", "Clip")).explain(model, x, k).attributions,
        (np.maximum(g_out, 0) * inside) @ w1,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        G.Deconvnet(ops=("Clip",)).explain(model, x, k).attributions, np.maximum(g_out, 0) @ w1, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(InputError):
        G.GuidedBackprop(ops=("Sigmoid",))


def test_smoothgrad_is_the_mean_gradient_over_its_noise() -> None:
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((2, 3, 32, 32))
    sg = G.SmoothGrad(6, 0.2, batch_size=5, dtype="float64")
    rng = np.random.default_rng(11)
    sigma = sg.sigmas(x)
    np.testing.assert_allclose(sigma, 0.2 * (x.reshape(2, -1).max(1) - x.reshape(2, -1).min(1)))
    grads = []
    for i in range(2):  # the documented draw order: sample-major, one standard normal per value
        noisy = x[i] + rng.standard_normal((6, 3, 32, 32)) * sigma[i]
        target = int(np.argmax(model.run(x[i : i + 1])["logits"]))
        grads.append(G.Gradient(dtype="float64").explain(model, noisy, target).attributions)
    grads_arr = np.stack(grads)
    kinds = {
        "smoothgrad": grads_arr.mean(1),
        "smoothgrad_sq": (grads_arr**2).mean(1),
        "vargrad": grads_arr.var(1),
    }
    for kind, want in kinds.items():
        e = G.SmoothGrad(6, 0.2, kind=kind, batch_size=5, dtype="float64").explain(
            model, x, rng=np.random.default_rng(11)
        )
        np.testing.assert_allclose(e.attributions, want, rtol=1e-9, atol=1e-12)
        assert e.signed == (kind == "smoothgrad")


def test_smoothgrad_without_noise_is_the_gradient() -> None:
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((2, 3, 32, 32))
    grad = G.Gradient().explain(model, x).attributions
    np.testing.assert_allclose(G.SmoothGrad(3, 0.0).explain(model, x).attributions, grad, rtol=1e-6, atol=1e-9)
    absolute = G.SmoothGrad(3, 0.0, sigma_absolute=True, kind="vargrad").explain(model, x)
    np.testing.assert_allclose(absolute.attributions, 0, atol=1e-9)
    np.testing.assert_allclose(G.SmoothGrad(3, 0.5, sigma_absolute=True).sigmas(x), [0.5, 0.5])


def test_smoothgrad_is_deterministic_under_a_seed() -> None:
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((2, 3, 32, 32))
    sg = G.SmoothGrad(4, batch_size=3)
    a = sg.explain(model, x, rng=np.random.default_rng(1)).attributions
    np.testing.assert_array_equal(a, sg.explain(model, x, rng=np.random.default_rng(1)).attributions)
    assert not np.allclose(a, sg.explain(model, x, rng=np.random.default_rng(2)).attributions)
    np.testing.assert_array_equal(sg.explain(model, x).attributions, sg.explain(model, x).attributions)


# --------------------------------------------------------------------------------------------
# Axioms over every method
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRADIENT_FAMILY)
def test_batch_equals_per_example(name: str) -> None:
    """A batch gives what the samples give one by one (random methods: one by one with the same
    generator, continued), and the chunk size does not matter."""
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((3, 3, 32, 32))
    targets = np.array([1, 7, 4])
    method = quick(name)
    batch = method.explain(model, x, targets, rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    for i in range(3):
        one = method.explain(model, x[i : i + 1], targets[i : i + 1], rng=rng)
        np.testing.assert_allclose(one.attributions[0], batch.attributions[i], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(one.maps[0], batch.maps[i], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=1e-5)
    other = quick(name, batch_size=1).explain(model, x, targets, rng=np.random.default_rng(0))
    np.testing.assert_allclose(other.attributions, batch.attributions, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", GRADIENT_FAMILY)
def test_inputs_are_untouched(name: str) -> None:
    model = Model.from_proto(models.two_input_model())
    feeds = {"image": image_batch((2, 3, 32, 32)), "meta": image_batch((2, 4), seed=1)}
    copies = {k: v.copy() for k, v in feeds.items()}
    for input_name in ("image", "meta"):
        quick(name).explain(model, feeds, input_name=input_name)
        for k, value in feeds.items():
            np.testing.assert_array_equal(value, copies[k])


@pytest.mark.parametrize("name", GRADIENT_FAMILY)
def test_result_shapes_and_record(name: str) -> None:
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((2, 3, 32, 32))
    e = quick(name).explain(model, x)
    assert e.method == name == METHODS[name].name
    assert e.attributions.shape == x.shape and e.attributions.dtype == np.float32
    assert e.maps.shape == (2, 32, 32)
    assert e.variant and e.input_name == "input" and e.output == "logits"
    assert e.to_json()["params"]["dtype"] == "float32"
    np.testing.assert_array_equal(e.targets, np.argmax(model.run(x)["logits"], axis=1))
    assert quick(name, dtype="float64").explain(model, x).attributions.dtype == np.float64


@pytest.mark.parametrize("name", GRADIENT_FAMILY)
def test_nhwc_and_grayscale_maps(name: str) -> None:
    nhwc = Model.from_proto(models.tf2onnx_nhwc())
    x = image_batch((2, 32, 32, 3))
    e = quick(name).explain(nhwc, x)
    assert e.attributions.shape == x.shape and e.maps.shape == (2, 32, 32)
    how = METHODS[name].reduction
    np.testing.assert_allclose(e.maps, np.abs(e.attributions).max(3) if how == "max_abs" else e.attributions.sum(3))
    gray = Model.from_proto(models.grayscale_cnn())
    g = quick(name).explain(gray, image_batch((2, 1, 28, 28)))
    assert g.attributions.shape == (2, 1, 28, 28) and g.maps.shape == (2, 28, 28)


def test_nhwc_gradient_is_the_transposed_nchw_gradient() -> None:
    """The NHWC model starts with a Transpose to NCHW: the input attribution must be the gradient
    at that NCHW tensor transposed back (channels last), not a scrambled one."""
    nhwc = Model.from_proto(models.tf2onnx_nhwc())
    x = image_batch((2, 32, 32, 3))
    inner = "model/conv2d/Conv2D__6:0"
    seed = np.zeros((2, 10), np.float32)
    seed[:, 3] = 1
    g_nchw = nhwc.value_and_grad(x, {"dense": seed}, wrt=[inner]).grads[inner]
    e = G.Gradient().explain(nhwc, x, 3)
    np.testing.assert_allclose(e.attributions, g_nchw.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(e.maps, g_nchw.sum(axis=1), rtol=1e-4, atol=1e-9)


def test_several_inputs_attribute_to_the_named_one() -> None:
    model = Model.from_proto(models.two_input_model())
    feeds = {"image": image_batch((2, 3, 32, 32)), "meta": image_batch((2, 4), seed=1)}
    want = model.gradient(feeds, 1, wrt="meta")
    e = G.Gradient().explain(model, feeds, 1, input_name="meta")
    np.testing.assert_allclose(e.attributions, want, rtol=1e-5, atol=1e-7)
    assert e.input_name == "meta" and e.maps.shape == (2, 1, 4)
    ig = G.IntegratedGradients(32).explain(model, feeds, 1, input_name="image")
    assert ig.attributions.shape == (2, 3, 32, 32)
    # Completeness with the other input held fixed: F(image, meta) - F(0, meta).
    f = model.run(feeds)["score"][:, 1] - model.run({**feeds, "image": np.zeros_like(feeds["image"])})["score"][:, 1]
    np.testing.assert_allclose(ig.trust["score"] - ig.trust["baseline_score"], f, rtol=1e-4)
    assert np.all(ig.trust["completeness_error"] < 0.01)


def test_fixed_batch_model() -> None:
    model = Model.from_proto(models.tiny_cnn(batch=2))
    x = image_batch((2, 3, 32, 32))
    dynamic = Model.from_proto(models.tiny_cnn())
    for method in (G.IntegratedGradients(5, batch_size=3), G.SmoothGrad(3, batch_size=4)):
        a = method.explain(model, x).attributions
        np.testing.assert_allclose(a, method.explain(dynamic, x).attributions, rtol=1e-5, atol=1e-7)


def test_float64_and_onnxruntime_forward_agree_with_float32() -> None:
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((2, 3, 32, 32))
    ref = G.IntegratedGradients(8, dtype="float64").explain(model, x).attributions
    for kw in ({}, {"forward": "onnxruntime"}):
        got = G.IntegratedGradients(8, **kw).explain(model, x).attributions
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5


# --------------------------------------------------------------------------------------------
# Validation and the registry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: G.IntegratedGradients(rule="simpson"),
        lambda: G.IntegratedGradients(1, "riemann_trapezoid"),
        lambda: G.IntegratedGradients(baseline="black"),
        lambda: G.SmoothGrad(kind="smoothgrad_cubed"),
        lambda: G.SmoothGrad(samples=0),
        lambda: G.SmoothGrad(noise=-1),
        lambda: G.Saliency(batch_size=0),
        lambda: G.Saliency(dtype="float16"),
        lambda: G.Saliency(forward="tensorflow"),
        lambda: G.Saliency(forward="onnxruntime", dtype="float64"),
    ],
)
def test_bad_parameters_raise_input_error(make) -> None:
    with pytest.raises(InputError):
        make()


def test_baseline_of_the_wrong_shape() -> None:
    model = Model.from_proto(models.tiny_cnn())
    with pytest.raises(InputError, match="baseline"):
        G.IntegratedGradients(4, baseline=np.zeros((3, 16, 16))).explain(model, image_batch((1, 3, 32, 32)))


def test_registry_and_explain() -> None:
    for name, cls in METHODS.items():
        assert cls.name == name and get_method(name) is cls
    model = Model.from_proto(models.tiny_cnn())
    x = image_batch((2, 3, 32, 32))
    e = explain(model, x, "integrated_gradients", 2, steps=5, rule="riemann_middle")
    direct = G.IntegratedGradients(5, "riemann_middle").explain(model, x, 2)
    np.testing.assert_array_equal(e.attributions, direct.attributions)
    assert e.params["steps"] == 5
    np.testing.assert_array_equal(explain(model, x).maps, G.Saliency().explain(model, x).maps)
    with pytest.raises(InputError, match="unknown method"):
        explain(model, x, "lime")
    with pytest.raises(InputError, match="no parameter"):
        explain(model, x, "saliency", steps=4)


def test_registry_names_match_classes() -> None:
    from onnxviz.methods.registry import METHODS

    assert len(METHODS) == 18
    for key, cls in METHODS.items():
        assert cls.name == key
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring naming its paper and variant"


def test_balanced_chunks_cover_the_rows_in_near_equal_pieces() -> None:
    from onnxviz.methods.base import chunks

    def sizes(n: int, size: int, balanced: bool) -> list[int]:
        pieces = list(chunks(n, size, balanced=balanced))
        assert [p.start for p in pieces] == [0] + [p.stop for p in pieces[:-1]] and pieces[-1].stop == n
        return [p.stop - p.start for p in pieces]

    assert sizes(50, 16, False) == [16, 16, 16, 2]
    # one batch size where a few more pieces allow it (each size is a compiled backward of its own)
    assert sizes(50, 16, True) == [10] * 5
    assert sizes(100, 16, True) == [10] * 10
    assert sizes(48, 16, True) == [16, 16, 16]
    assert sizes(49, 16, True) == [13, 12, 12, 12]  # 4 to 6 pieces: none divides 49
    assert sizes(7, 16, True) == [7]
    assert sizes(17, 16, True) == [9, 8]
