"""The optimization loop: Adam, redirected ReLU, reproducibility, layouts, galleries, DeepDream."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnxviz.backends.numpy.registry import Call

from onnxviz import Model
from onnxviz.errors import InputError, TargetError, UnsupportedOpError
from onnxviz.maximize import (
    Adam,
    FFTParam,
    channel,
    class_logit,
    dream,
    evaluate,
    layer_l2,
    total_variation,
    visualize,
)
from onnxviz.maximize import objectives as O
from onnxviz.maximize.optimize import Evaluator, redirected_relu_vjp
from onnxviz.maximize.transforms import Resize
from tests import models
from tests.maximize import gabor_cnn


@pytest.fixture(scope="module")
def gabor() -> Model:
    return Model.from_proto(gabor_cnn(24))


def test_adam_on_a_quadratic() -> None:
    """Ascent on ``-|p - a|^2 / 2``: the first step is ``lr * sign(grad)``, then it converges."""
    a = np.array([3.0, -1.0, 0.25])
    adam = Adam(lr=0.05)
    p = np.zeros(3)
    state = adam.init(p)
    p1, state = adam.step(p, a - p, state)
    np.testing.assert_allclose(p1, 0.05 * np.sign(a), rtol=1e-6)
    p = p1
    for _ in range(2000):
        p, state = adam.step(p, a - p, state)
    np.testing.assert_allclose(p, a, atol=1e-3)
    assert state.t == 2001


def test_adam_update_in_place_is_step() -> None:
    """``update`` (the loop's, in place) and ``step`` (pure) take the same steps."""
    rng = np.random.default_rng(0)
    adam = Adam(lr=0.05)
    p = rng.standard_normal((4, 5)).astype(np.float32)
    q = p.copy()
    s_pure, s_inplace = adam.init(p), adam.init(q)
    for _ in range(5):
        g = rng.standard_normal(p.shape).astype(np.float32)
        before = p.copy()
        p, s_pure = adam.step(p, g, s_pure)
        assert not np.array_equal(p, before)
        m_before = s_inplace.m
        s_inplace = adam.update(q, g, s_inplace)
        assert s_inplace.m is m_before  # the moments are updated in place
        np.testing.assert_allclose(q, p, rtol=1e-6, atol=1e-7)
    assert s_inplace.t == s_pure.t == 5


def test_redirected_relu_rule() -> None:
    y = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    g = np.array([[1.0, -3.0, -1.0], [2.0, -1.0, 0.5], [4.0, 0.0, -2.0]])
    call = Call("Relu", (y,), (y,), {}, (True,))
    (gx,) = redirected_relu_vjp(call, g)
    # row 0: live unit has gradient -> ordinary rule; row 1: all dead -> only g > 0 passes;
    # row 2: the live unit has zero gradient -> redirected as well
    np.testing.assert_array_equal(gx, [[0.0, -3.0, 0.0], [2.0, 0.0, 0.5], [4.0, 0.0, 0.0]])


def test_redirected_relu_revives_a_dead_unit() -> None:
    m = Model.from_proto(models.with_dead_and_duplicate_filters())
    obj = channel("relu1", models.NEVER_ACTIVE_FILTER)
    off = visualize(m, obj, rng=0, steps=2, redirect_relu_steps=0, transforms=None, size=None)
    on = visualize(m, obj, rng=0, steps=2, redirect_relu_steps=2, transforms=None)
    p0 = FFTParam(32, 32, 3).init(1, np.random.default_rng(off.settings.init_seed))
    np.testing.assert_array_equal(off.params, p0.astype(np.float32))  # zero gradient: no step
    assert np.abs(on.params - p0).max() > 1e-3


def test_reproducible_from_the_seed(gabor: Model) -> None:
    obj = channel("relu2", [0, 3])
    a = visualize(gabor, obj, rng=7, steps=3)
    b = visualize(gabor, obj, rng=7, steps=3)
    c = visualize(gabor, obj, rng=8, steps=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.history, b.history)
    assert not np.array_equal(a.images, c.images)
    assert a.settings.seed == 7 and a.settings.batch == 2 and a.history.shape == (3, 2)
    g = visualize(gabor, obj, rng=np.random.default_rng(7), steps=3)
    np.testing.assert_array_equal(g.images, a.images)  # a Generator seeded alike is the same run


def test_inputs_are_what_final_was_measured_on(gabor: Model) -> None:
    vis = visualize(gabor, channel("relu3", [1, 2, 5]), rng=0, steps=4)
    assert vis.inputs.shape == (3, 3, 24, 24) and vis.inputs.dtype == np.float32
    assert vis.images.shape == (3, 24, 24, 3) and 0 <= vis.images.min() and vis.images.max() <= 1
    relu3 = gabor.run(vis.inputs, taps=["relu3"])["relu3"]  # onnxruntime, independent of the engine
    np.testing.assert_allclose(vis.final, relu3[np.arange(3), [1, 2, 5]].mean(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_allclose(evaluate(gabor, channel("relu3", [1, 2, 5]), vis.inputs), vis.final, rtol=1e-5)


def test_nhwc_model_gets_nhwc_inputs() -> None:
    m = Model.from_proto(models.tf2onnx_nhwc())
    vis = visualize(m, channel("model/conv2d_1/Relu:0", [0, 5]), rng=0, steps=2)
    assert vis.inputs.shape == (2, 32, 32, 3)
    assert vis.settings.preprocess["layout"] == "NHWC"
    out = m.run(vis.inputs, taps=["model/conv2d_1/Relu:0"])["model/conv2d_1/Relu:0"]
    np.testing.assert_allclose(vis.final, out[[0, 1], [0, 5]].mean(axis=(1, 2)), rtol=1e-4)


def test_grey_model_gets_one_channel() -> None:
    m = Model.from_proto(models.grayscale_cnn())
    vis = visualize(m, class_logit("Plus214_Output_0", 3), rng=0, steps=2)
    assert vis.inputs.shape == (1, 1, 28, 28)
    assert vis.images.shape == (1, 28, 28, 1)


def test_gallery_in_one_batch_equals_separate_runs(gabor: Model) -> None:
    """Same init blocks and the same (batch-shared) transform draws: the same images."""
    chans = list(range(8))
    batch = visualize(gabor, channel("relu2", chans), rng=3, steps=4, dtype=np.float64)
    init = FFTParam(24, 24, 3).init(8, np.random.default_rng(batch.settings.init_seed))
    for i in (0, 5):
        alone = visualize(gabor, channel("relu2", chans[i]), rng=3, steps=4, init=init[i : i + 1], dtype=np.float64)
        np.testing.assert_allclose(alone.images[0], batch.images[i], atol=1e-5)
        np.testing.assert_allclose(alone.history[:, 0], batch.history[:, i], rtol=1e-4, atol=1e-6)


def test_only_the_needed_subgraph_runs() -> None:
    """A head the numpy engine cannot run (Hardmax) does not matter for a layer objective."""
    proto = gabor_cnn(24)
    proto.graph.node.append(helper.make_node("Hardmax", ["logits"], ["hard"]))
    proto.graph.output.append(helper.make_tensor_value_info("hard", onnx.TensorProto.FLOAT, ["N", 10]))
    m = Model.from_proto(proto)
    vis = visualize(m, channel("relu1", 2), rng=0, steps=2)
    assert np.isfinite(vis.final).all()
    with pytest.raises(UnsupportedOpError):
        visualize(m, class_logit("hard", 1), rng=0, steps=1)


def test_image_regularizer_alone_and_progress(gabor: Model) -> None:
    seen: list[int] = []
    vis = visualize(
        gabor, -total_variation(), rng=0, steps=30, param="pixel", transforms=None,
        progress=lambda step, vals: seen.append(step),
    )
    assert seen == list(range(30))
    assert vis.history[-1, 0] > vis.history[0, 0]  # TV went down


def test_argument_errors(gabor: Model) -> None:
    with pytest.raises(TargetError, match="batch of 2"):
        visualize(gabor, channel("relu2", [0, 1]), rng=0, steps=1, batch=3)
    # a size other than the model's fixed 24x24 runs natively on its convolutional part (below)
    assert visualize(gabor, channel("relu2", 0), rng=0, steps=1, size=(32, 32)).inputs.shape[-2:] == (32, 32)
    with pytest.raises(InputError, match="Generator or an int"):
        visualize(gabor, channel("relu2", 0), rng="seed", steps=1)  # type: ignore[arg-type]


def test_dynamic_size_model_uses_the_requested_size() -> None:
    m = Model.from_proto(models.dynamic_spatial())
    vis = visualize(m, channel("relu2", 1), rng=0, steps=2, size=(20, 28))
    assert vis.inputs.shape == (1, 3, 20, 28)


@pytest.mark.parametrize("dynamic", [False, True])
def test_dream_raises_the_layer_objective(dynamic: bool) -> None:
    m = Model.from_proto(models.dynamic_spatial() if dynamic else gabor_cnn(24))
    layer = "relu2"
    img = np.random.default_rng(0).uniform(0.3, 0.7, (24, 24, 3)).astype(np.float32)
    out = dream(m, img, layers=layer, octaves=2, steps_per_octave=4, jitter=4, rng=0)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    from onnxviz.inputs import Preprocess
    from onnxviz.maximize.param import ModelInput

    mi = ModelInput(Preprocess.from_model(m.input()))
    before = evaluate(m, layer_l2(layer), mi.forward(img[None]))
    after = evaluate(m, layer_l2(layer), mi.forward(out[None]))
    assert after[0] > 1.5 * before[0]
    again = dream(m, img, layers=layer, octaves=2, steps_per_octave=4, jitter=4, rng=0)
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize(
    "objective",
    [
        channel("relu2", [1, 4, 7]),
        channel("relu2", [1, 4, 7]) - 0.5 * O.Objective([(1.0, O.LayerL2("relu1"))]),
        O.Objective([(1.0, O.ClassLogit("logits", [2, 3, 9]))]),
    ],
    ids=["linear", "mixed", "class-logit"],
)
def test_linear_seeds_built_before_the_forward_give_the_same_step(objective: O.Objective) -> None:
    """After one call the evaluator knows the tensors' shapes and builds linear terms' seeds as
    arrays (no seed-evaluating forward); values and gradients are those of the first call."""
    model = Model.from_proto(models.tiny_cnn())
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ev = Evaluator(model, objective, "input", np.float32, "numpy")
    first = ev(x, None, None)
    assert ev._shapes  # learned
    second = ev(x, None, None)
    np.testing.assert_allclose(second[0], first[0], rtol=1e-6)
    np.testing.assert_allclose(second[1], first[1], rtol=1e-5, atol=1e-7)
    for name in objective.tensors:
        seed = objective.seed_array(name, ev._shapes[x.shape][name], np.float32)
        linear = all(t.linear for _, t in objective.terms if t.tensor == name)
        assert (seed is not None) == linear


def test_fixed_size_model_takes_transformed_images_natively_at_its_own_size() -> None:
    """Without a size, a fixed 32x32 model still renders its convolutional layers natively: the
    transforms' enlarged images (pad 12, jitter, scale) reach relu2 unresized, as in Lucid.
    Its logits too (global pooling makes the head size-free); behind a Reshape to [1, -1] and a
    Gemm sized for 8x8 they are not, and the transformed images are resized back to 8x8."""
    model = Model.from_proto(models.tiny_cnn(batch=1))
    vis = visualize(model, channel("relu2", [0, 3]), steps=2, rng=1)
    assert vis.images.shape == (2, 32, 32, 3) and vis.inputs.shape == (2, 3, 32, 32)
    assert not any("Resize" in t for t in vis.settings.transforms)
    np.testing.assert_allclose(vis.final, evaluate(model, channel("relu2", [0, 3]), vis.inputs), rtol=1e-5)
    logits = visualize(model, class_logit("logits", 2), steps=2, rng=1)
    assert not any("Resize" in t for t in logits.settings.transforms)
    flat = visualize(Model.from_proto(models.fixed_flatten_cnn()), class_logit("logits", 2), steps=2, rng=1)
    assert flat.settings.transforms[-1] == repr(Resize((8, 8)))
    # without transforms nothing changes size: the model itself runs (its resize is the identity)
    plain = visualize(model, channel("relu2", 0), steps=2, rng=1, transforms=None)
    assert plain.settings.transforms == (repr(Resize((32, 32))),)


def test_fixed_size_model_renders_a_conv_layer_at_another_size() -> None:
    """tiny_cnn exported at a fixed 32x32: relu2 comes from convolutions only, so a 20x24
    render runs natively (no final Resize) on the freed part; behind a Reshape to [1, -1] and a
    Gemm, a size change cannot run, and the error says so."""
    model = Model.from_proto(models.tiny_cnn(batch=1))
    assert model.inputs[0].shape == (1, 3, 32, 32)
    vis = visualize(model, channel("relu2", [0, 3]), steps=3, size=(20, 24), rng=1)
    assert vis.images.shape == (2, 20, 24, 3)
    assert vis.inputs.shape == (2, 3, 20, 24)
    assert not any("Resize" in t for t in vis.settings.transforms)
    free = model.size_free(("relu2",), (2, 3), (20, 24))
    assert free is not None
    np.testing.assert_allclose(vis.final, evaluate(free, channel("relu2", [0, 3]), vis.inputs), rtol=1e-5)
    with pytest.raises(InputError, match="fully convolutional"):
        visualize(Model.from_proto(models.fixed_flatten_cnn()), class_logit("logits", 2), steps=1, size=(6, 6), rng=0)
