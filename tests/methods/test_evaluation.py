"""Evaluation of explanations: deletion/insertion curves with known answers on linear models,
model-parameter randomization (which tensors change, wherever they live) and the sanity check's
verdicts, SSIM and Spearman known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from onnxviz.errors import InputError, TargetError
from onnxviz.methods.base import Explanation, Method, TargetSpec, channel_axis
from onnxviz.methods.evaluation import (
    completeness,
    deletion_insertion,
    randomization_test,
    spearman,
    ssim,
)
from onnxviz.methods.gradient import Gradient, IntegratedGradients, Saliency
from onnxviz.randomize import layer_parameters, parametric_layers, randomized_model
from tests import models as tm

# --------------------------------------------------------------------------------------------
# Linear models: S_k(x) = <W_k, x> + b_k, so every point of every curve is a partial sum
# --------------------------------------------------------------------------------------------


def linear_model(shape: tuple[int, int, int], w: np.ndarray, b: np.ndarray, batch: str | int = "N") -> onnxviz.Model:
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, len(b)])],
        [
            numpy_helper.from_array(w.reshape(len(b), -1).astype(np.float32), "w"),
            numpy_helper.from_array(b.astype(np.float32), "b"),
        ],
    )
    return onnxviz.Model.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def explanation_of(model: onnxviz.Model, maps: np.ndarray, targets: np.ndarray, output: str = "y") -> Explanation:
    """A hand-made explanation carrying ``maps`` (what deletion/insertion reads)."""
    n = maps.shape[0]
    return Explanation(
        method="hand-made",
        variant="test",
        attributions=maps,
        maps=maps,
        signed=True,
        output=output,
        targets=np.asarray(targets, dtype=np.int64),
        scores=np.zeros(n),
        input_name=model.inputs[0].name,
    )


def contributions(w: np.ndarray, x: np.ndarray, channels_last: bool) -> np.ndarray:
    """Per-pixel share of the score, summed over channels: (N, H, W)."""
    return (w * x).sum(axis=3 if channels_last else 1).astype(np.float64)


def expected_curves(contrib: np.ndarray, fill_contrib: np.ndarray, order_maps: np.ndarray, b: float, steps: int):
    """Deletion and insertion curves written out pixel by pixel in the order of ``order_maps``."""
    n, H, W = contrib.shape
    dels, ins = [], []
    for i in range(n):
        order = sorted(range(H * W), key=lambda p: (-order_maps[i].ravel()[p], p))
        c, f = contrib[i].ravel(), fill_contrib[i].ravel()
        d_row, i_row = [], []
        for k in range(steps + 1):
            top = set(order[: int(np.floor(k * H * W / steps + 0.5))])
            d_row.append(b + sum(f[p] if p in top else c[p] for p in range(H * W)))
            i_row.append(b + sum(c[p] if p in top else f[p] for p in range(H * W)))
        dels.append(d_row)
        ins.append(i_row)
    return np.array(dels), np.array(ins)


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("baseline", [0.0, 0.25])
@pytest.mark.parametrize("steps", [5, 7])
def test_linear_model_curves_are_the_partial_sums(channels_last, baseline, steps):
    rng = np.random.default_rng(0)
    shape = (5, 5, 3) if channels_last else (3, 5, 5)
    w = rng.standard_normal((1, *shape))
    b = np.array([0.3])
    m = linear_model(shape, w, b)
    assert channel_axis(m) == (3 if channels_last else 1)
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    contrib = contributions(w, x, channels_last)
    fill = contributions(w, np.full_like(x, baseline), channels_last)
    e = explanation_of(m, contrib, [0, 0, 0])
    r = deletion_insertion(m, x, e, steps=steps, baseline=baseline, softmax=False)

    want_del, want_ins = expected_curves(contrib, fill, contrib, 0.3, steps)
    np.testing.assert_allclose(r.deletion_curve, want_del, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.insertion_curve, want_ins, rtol=1e-5, atol=1e-5)
    counts = np.floor(np.arange(steps + 1) * 25 / steps + 0.5)
    np.testing.assert_allclose(r.fractions, counts / 25)
    trapezoid = lambda c: sum((c[k] + c[k + 1]) / 2 * (r.fractions[k + 1] - r.fractions[k]) for k in range(steps))
    np.testing.assert_allclose(r.deletion_auc, [trapezoid(c) for c in want_del], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.insertion_auc, [trapezoid(c) for c in want_ins], rtol=1e-5, atol=1e-6)
    assert r.steps == steps and r.baseline == f"{baseline:g}" and "raw" in r.score


def test_probability_of_a_two_class_linear_model():
    """Logits (s, -s): the first class's probability is 1 / (1 + exp(-2 s)) at every step."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((3, 4, 4)) * 0.3
    m = linear_model((3, 4, 4), np.stack([w0, -w0]), np.array([0.1, -0.1]))
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    contrib = contributions(w0[None], x, False)
    e = explanation_of(m, contrib, [0, 0])
    r = deletion_insertion(m, x, e, steps=4)
    assert r.score == "softmax probability of 'y'"
    s_del, s_ins = expected_curves(contrib, np.zeros_like(contrib), contrib, 0.1, 4)
    np.testing.assert_allclose(r.deletion_curve, 1 / (1 + np.exp(-2 * s_del)), rtol=1e-5)
    np.testing.assert_allclose(r.insertion_curve, 1 / (1 + np.exp(-2 * s_ins)), rtol=1e-5)


def test_the_true_contribution_order_beats_random_maps():
    """Deleting the largest contributions first gives the lowest remaining score at every step,
    so no map can have a lower deletion AUC (nor a higher insertion AUC) on a linear model."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((1, 3, 8, 8))
    m = linear_model((3, 8, 8), w, np.array([0.0]))
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    contrib = contributions(w, x, False)
    perfect = deletion_insertion(m, x, explanation_of(m, contrib, [0, 0]), softmax=False)
    for seed in range(5):
        noise = np.random.default_rng(100 + seed).standard_normal(contrib.shape)
        other = deletion_insertion(m, x, explanation_of(m, noise, [0, 0]), softmax=False)
        assert np.all(perfect.deletion_curve <= other.deletion_curve + 1e-5)
        assert np.all(perfect.insertion_curve >= other.insertion_curve - 1e-5)
        assert np.all(perfect.deletion_auc < other.deletion_auc)
        assert np.all(perfect.insertion_auc > other.insertion_auc)


def test_ties_are_broken_in_row_major_order():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((1, 1, 3, 4))
    m = linear_model((1, 3, 4), w, np.array([0.0]))
    x = rng.standard_normal((1, 1, 3, 4)).astype(np.float32)
    flat = np.zeros((1, 3, 4))
    r = deletion_insertion(m, x, explanation_of(m, flat, [0]), steps=12, softmax=False)
    c = contributions(w, x, False)[0].ravel()
    np.testing.assert_allclose(r.deletion_curve[0], [c[k:].sum() for k in range(13)], atol=1e-5)


def test_blur_of_a_flat_image_is_the_image():
    """Per-channel constant images are fixed points of the blur: both curves stay at the clean score."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((1, 3, 6, 6))
    m = linear_model((3, 6, 6), w, np.array([0.2]))
    x = np.broadcast_to(rng.standard_normal((2, 3, 1, 1)), (2, 3, 6, 6)).astype(np.float32)
    r = deletion_insertion(m, x, explanation_of(m, rng.standard_normal((2, 6, 6)), [0, 0]), baseline="blur", softmax=False)
    clean = (w * x).reshape(2, -1).sum(axis=1) + 0.2
    np.testing.assert_allclose(r.deletion_curve, np.repeat(clean[:, None], 21, axis=1), rtol=1e-5)
    np.testing.assert_allclose(r.insertion_curve, r.deletion_curve, rtol=1e-5)
    assert r.baseline == "blur (sigma 5)"


def test_batched_equals_per_sample_and_fixed_batch_models():
    x = np.random.default_rng(5).random((3, 3, 32, 32)).astype(np.float32)
    m = onnxviz.Model.from_proto(tm.tiny_cnn())
    e = Saliency().explain(m, x)
    whole = deletion_insertion(m, x, e, steps=10, batch_size=7)
    for i in range(3):
        one = dataclasses.replace(e, maps=e.maps[i : i + 1], targets=e.targets[i : i + 1])
        r = deletion_insertion(m, x[i : i + 1], one, steps=10, batch_size=1000)
        np.testing.assert_allclose(r.deletion_curve[0], whole.deletion_curve[i], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(r.insertion_curve[0], whole.insertion_curve[i], rtol=1e-5, atol=1e-7)
    fixed = onnxviz.Model.from_proto(tm.tiny_cnn(batch=1))
    rf = deletion_insertion(fixed, x, e, steps=10)
    np.testing.assert_allclose(rf.deletion_auc, whole.deletion_auc, rtol=1e-5)
    np.testing.assert_allclose(rf.insertion_auc, whole.insertion_auc, rtol=1e-5)
    # The first deletion point and the last insertion point are the clean probabilities.
    logits = m.run(x)["logits"].astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True))[np.arange(3), e.targets]
    np.testing.assert_allclose(whole.deletion_curve[:, 0], p, rtol=1e-5)
    np.testing.assert_allclose(whole.insertion_curve[:, -1], p, rtol=1e-5)


def test_nhwc_model_with_probability_output_is_not_softmaxed_twice():
    m = onnxviz.Model.from_proto(tm.tf2onnx_nhwc())
    x = np.random.default_rng(6).random((2, 32, 32, 3)).astype(np.float32)
    e = Gradient().explain(m, x)
    r = deletion_insertion(m, x, e, steps=4)
    assert r.score == "probability output 'dense'"
    out = m.run(x)["dense"]
    np.testing.assert_allclose(r.deletion_curve[:, 0], out[np.arange(2), e.targets], rtol=1e-5)
    black = m.run(np.zeros_like(x))["dense"][np.arange(2), e.targets]
    np.testing.assert_allclose(r.deletion_curve[:, -1], black, rtol=1e-5)
    np.testing.assert_allclose(r.insertion_curve[:, 0], black, rtol=1e-5)


def test_inputs_and_explanation_are_untouched():
    m = onnxviz.Model.from_proto(tm.tiny_cnn())
    x = np.random.default_rng(7).random((2, 3, 32, 32)).astype(np.float32)
    e = Saliency().explain(m, x)
    x0, maps0 = x.copy(), e.maps.copy()
    deletion_insertion(m, x, e, steps=3, baseline="blur")
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(e.maps, maps0)


def test_deletion_insertion_refuses_bad_arguments():
    m = onnxviz.Model.from_proto(tm.tiny_cnn())
    x = np.zeros((2, 3, 32, 32), np.float32)
    e = explanation_of(m, np.zeros((2, 32, 32)), [0, 1], output="logits")
    with pytest.raises(InputError, match="maps have shape"):
        deletion_insertion(m, x[:1], e)
    with pytest.raises(InputError, match="baseline"):
        deletion_insertion(m, x, e, baseline="noise")
    with pytest.raises(InputError, match="steps"):
        deletion_insertion(m, x, e, steps=0)
    cot = explanation_of(m, np.zeros((2, 32, 32)), [-1, -1], output="logits")
    with pytest.raises(TargetError, match="cotangent"):
        deletion_insertion(m, x, cot)
    seed = np.zeros((2, 10))
    seed[:, 3] = 1
    r = deletion_insertion(m, x, cot, target=seed, steps=2)
    np.testing.assert_allclose(r.deletion_curve[:, 0], m.run(x)["logits"][:, 3], rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Randomized models
# --------------------------------------------------------------------------------------------


def weights_of(model: onnxviz.Model) -> dict[tuple[str, str], np.ndarray]:
    """Every learned tensor by (layer, role), read through the node inputs (names change)."""
    out = {}
    for label in parametric_layers(model, batchnorm=True):
        for p in layer_parameters(model, label):
            out[(label, p.role)] = np.asarray(model.constants[p.tensor])
    return out


@pytest.mark.parametrize(
    "build, chosen, n_changed",
    [
        (tm.tiny_cnn, ["conv2"], 2),
        (tm.paddle_style_constants, ["linear_0.tmp_0", "conv2d_0.tmp_0"], 4),  # Constant nodes, Add biases
        (tm.constant_subgraph_weights, ["conv2", "logits"], 4),  # Cast / Reshape / ConstantOfShape
        (tm.tf2onnx_nhwc, ["model/dense/MatMul"], 2),
        (lambda: tm.old_opset_model(7), ["conv1_1"], 2),  # IR 3: initializers are graph inputs
    ],
    ids=["initializers", "constant_nodes", "folded", "matmul_add", "ir3"],
)
def test_randomized_model_changes_exactly_the_chosen_layers(build, chosen, n_changed):
    proto = build()
    m = onnxviz.Model.from_proto(proto)
    before_bytes = m.proto.SerializeToString()
    before = weights_of(m)
    r = randomized_model(m, chosen, np.random.default_rng(0))
    onnx.checker.check_model(r.proto, full_check=True)
    after = weights_of(r)
    assert after.keys() == before.keys()
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed == {k for k in before if k[0] in chosen} and len(changed) == n_changed
    for k in changed:
        assert after[k].shape == before[k].shape and after[k].dtype == before[k].dtype
        assert 0.5 < after[k].std() / before[k].std() < 2.0
    assert m.proto.SerializeToString() == before_bytes  # the original is untouched
    assert r.graph.input_names == m.graph.input_names and [n.label for n in r.graph.nodes] == [n.label for n in m.graph.nodes]
    x = np.random.default_rng(1).random((2, *[d if isinstance(d, int) and d > 0 else 1 for d in m.inputs[0].shape[1:]]))
    out = m.outputs[0].name
    assert not np.allclose(r.run(x.astype(np.float32))[out], m.run(x.astype(np.float32))[out])


def test_randomized_light_model_with_constant_fill_weights():
    """The light models' weights are one number each (ConstantOfShape): zero spread, so the random
    weights take their root mean square as standard deviation."""
    path = next(p for p in tm.light_model_paths() if "squeezenet" in p.name)
    m = onnxviz.load(path)
    layers = parametric_layers(m)
    assert len(layers) == 26 and m.graph.node(layers[0]).op_type == "Conv"
    before = weights_of(m)
    r = randomized_model(m, layers[:2], np.random.default_rng(0))
    onnx.checker.check_model(r.proto)
    after = weights_of(r)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed == {(layers[0], "weight"), (layers[0], "bias"), (layers[1], "weight"), (layers[1], "bias")}
    w0, w1 = before[(layers[0], "weight")], after[(layers[0], "weight")]
    assert w0.std() < 1e-6 and abs(w1.std() / np.sqrt(np.mean(w0.astype(np.float64) ** 2)) - 1) < 0.1
    # Layers below and above keep their (folded) values; the dead ConstantOfShape nodes stay.
    assert len(r.graph.nodes) == len(m.graph.nodes)


def test_randomized_model_is_deterministic_and_refuses_non_layers():
    m = onnxviz.Model.from_proto(tm.tiny_cnn())
    a = weights_of(randomized_model(m, ["logits"], np.random.default_rng(3)))
    b = weights_of(randomized_model(m, ["logits"], np.random.default_rng(3)))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="not a layer"):
        randomized_model(m, ["relu1"])
    with pytest.raises(InputError, match="no node"):
        randomized_model(m, ["nope"])


def test_parametric_layers_in_topological_order():
    paddle = onnxviz.Model.from_proto(tm.paddle_style_constants())
    assert parametric_layers(paddle) == ["conv2d_0.tmp_0", "conv2d_1.tmp_0", "linear_0.tmp_0"]
    assert parametric_layers(paddle, batchnorm=True) == [
        "conv2d_0.tmp_0", "batch_norm_0.tmp_2", "conv2d_1.tmp_0", "batch_norm_1.tmp_2", "linear_0.tmp_0",
    ]
    assert [(p.role, p.tensor) for p in layer_parameters(paddle, "conv2d_0.tmp_0")] == [
        ("weight", "conv2d_0.w_0"), ("bias", "conv2d_0.b_0"),
    ]


# --------------------------------------------------------------------------------------------
# The sanity check
# --------------------------------------------------------------------------------------------


class EdgeDetector(Method):
    """A "method" that ignores the model: the gradient magnitude of the image itself."""

    name = "edges"
    needs_gradients = False

    def _explain(self, model, feeds, input_name, target: TargetSpec, rng) -> Explanation:
        x = feeds[input_name].astype(np.float64).sum(axis=channel_axis(model, input_name))
        gy, gx = np.gradient(x, axis=(1, 2))
        maps = np.hypot(gy, gx)
        return Explanation(self.name, "image edges", maps, maps, False, target.output, target.classes,
                           np.zeros(len(maps)), input_name)


@pytest.fixture(scope="module")
def cnn() -> onnxviz.Model:
    return onnxviz.Model.from_proto(tm.tiny_cnn())


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((4, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("method", [Gradient(), Saliency()], ids=["gradient", "saliency"])
def test_gradient_maps_change_with_the_weights(cnn, images, method):
    before = cnn.proto.SerializeToString()
    r = randomization_test(cnn, images, method, rng=np.random.default_rng(0))
    assert r.verdict == "trustworthy"
    assert r.layers == ("logits", "conv2", "conv1") and r.mode == "cascade"
    assert r.spearman_abs.shape == r.spearman_signed.shape == r.ssim.shape == (3, 4)
    assert r.maps.shape == (3, 4, 32, 32)
    assert r.mean_spearman_abs[0] < 0.5 and np.all(r.ssim.mean(axis=1) < 0.5)
    assert cnn.proto.SerializeToString() == before
    np.testing.assert_array_equal(r.targets, method.explain(cnn, images).targets)


def test_a_model_independent_map_is_insensitive(cnn, images):
    r = randomization_test(cnn, images, EdgeDetector())
    assert r.verdict == "insensitive"
    np.testing.assert_allclose(r.spearman_abs, 1.0)
    np.testing.assert_allclose(r.ssim, 1.0)


def test_independent_and_cascade_share_the_top_step(cnn, images):
    a = randomization_test(cnn, images[:2], Gradient(), layers="cascade", rng=np.random.default_rng(5))
    b = randomization_test(cnn, images[:2], Gradient(), layers="independent", rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.maps[0], b.maps[0])  # same random top layer in both modes
    assert not np.allclose(a.maps[2], b.maps[2])  # everything random vs only conv1 random
    c = randomization_test(cnn, images[:2], Gradient(), top=1, rng=np.random.default_rng(5))
    assert c.layers == ("logits",)
    np.testing.assert_array_equal(c.maps[0], a.maps[0])  # deterministic under a fixed rng
    with pytest.raises(InputError):
        randomization_test(cnn, images, Gradient(), layers="bottom-up")
    with pytest.raises(InputError):
        randomization_test(cnn, images, Gradient(), threshold=0)


# --------------------------------------------------------------------------------------------
# Similarity measures and completeness
# --------------------------------------------------------------------------------------------


def test_ssim_known_answers():
    rng = np.random.default_rng(8)
    a = rng.random((2, 20, 20))
    np.testing.assert_allclose(ssim(a, a), 1.0)
    # Constant maps: no variance, so SSIM is the luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    c1 = 0.01**2
    got = ssim(np.full((1, 16, 16), 0.2), np.full((1, 16, 16), 0.7))
    np.testing.assert_allclose(got, (2 * 0.2 * 0.7 + c1) / (0.2**2 + 0.7**2 + c1))
    np.testing.assert_allclose(ssim(a, a[::-1]), ssim(a[::-1], a))
    noisy = [ssim(a, np.clip(a + s * rng.standard_normal(a.shape), 0, 1)).mean() for s in (0.05, 0.2, 0.5)]
    assert noisy[0] > noisy[1] > noisy[2]
    assert ssim(np.zeros((1, 6, 6)), np.zeros((1, 6, 6)))[0] == 1.0  # smaller than a window


def test_spearman_known_answers():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(9)
    a = rng.standard_normal((3, 5, 5))
    np.testing.assert_allclose(spearman(a, np.exp(a)), 1.0)
    np.testing.assert_allclose(spearman(a, -a), -1.0)
    b = np.round(rng.standard_normal((3, 5, 5)))  # ties
    want = [spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(3)]
    np.testing.assert_allclose(spearman(a, b), want)
    flat = np.zeros((1, 5, 5))
    assert spearman(flat, flat)[0] == 1.0 and spearman(flat, a[:1])[0] == 0.0


def test_completeness_reads_integrated_gradients(cnn, images):
    e = IntegratedGradients(steps=16).explain(cnn, images[:2])
    np.testing.assert_array_equal(completeness(e), e.trust["completeness_error"])
    with pytest.raises(InputError, match="completeness"):
        completeness(Saliency().explain(cnn, images[:2]))
