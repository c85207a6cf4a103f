"""Occlusion and RISE: known answers on linear models, forward-only operation on a model the
numpy engine cannot run, RISE's determinism and mask statistics, and Captum's Occlusion."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxviz.backends.numpy import REGISTRY

import onnxviz
from onnxviz.errors import InputError, UnsupportedOpError
from onnxviz.methods.cam import GradCAM
from onnxviz.methods.gradient import Saliency
from onnxviz.methods.perturbation import RISE, Occlusion
from tests import models as tm


def linear_model(shape: tuple[int, int, int], weights: np.ndarray, bias: np.ndarray, batch="N") -> onnxviz.Model:
    """x (batch, *shape) -> Flatten -> Gemm: S_k(x) = <W_k, x> + b_k, for any layout."""
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, len(bias)])],
        [
            numpy_helper.from_array(weights.reshape(len(bias), -1).astype(np.float32), "w"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    return onnxviz.Model.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def expected_occlusion(x, w, fill, starts_y, starts_x, wh, ww, channels_last):
    """Average over covering windows of <W, x - fill> summed over the window (all channels)."""
    n = x.shape[0]
    H, W = (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])
    total, count = np.zeros((n, H, W)), np.zeros((H, W))
    for y in starts_y:
        for xo in starts_x:
            for i in range(n):
                if channels_last:
                    d = (w[i] * (x[i] - fill[i]))[y : y + wh, xo : xo + ww, :].sum()
                else:
                    d = (w[i] * (x[i] - fill[i]))[:, y : y + wh, xo : xo + ww].sum()
                total[i, y : y + wh, xo : xo + ww] += d
            count[y : y + wh, xo : xo + ww] += 1
    return total / count


@pytest.mark.parametrize("batch", ["N", 1], ids=["dynamic_batch", "fixed_batch_1"])
@pytest.mark.parametrize("baseline", [0.0, 0.25, "mean"])
def test_occlusion_on_a_linear_model_is_the_window_sum(batch, baseline):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 10, 10))
    b = np.array([0.1, -0.3, 2.0])
    m = linear_model((2, 10, 10), w, b, batch=batch)
    n = 1 if batch == 1 else 2
    x = rng.standard_normal((n, 2, 10, 10)).astype(np.float32)
    t = [2, 0][:n]
    e = Occlusion(window=(4, 3), strides=(4, 3), baseline=baseline, batch_size=5).explain(m, x, target=t)
    if baseline == "mean":
        fill = x.mean(axis=(2, 3), keepdims=True)
    else:
        fill = np.full((n, 1, 1, 1), baseline)
    # Captum's origins 0, 4 (rows) and 0, 3, 6 (cols), plus windows flush with the border (6; 7).
    ref = expected_occlusion(x.astype(np.float64), w[t], fill, [0, 4, 6], [0, 3, 6, 7], 4, 3, False)
    np.testing.assert_allclose(e.maps, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e.attributions, np.repeat(ref[:, None], 2, axis=1), rtol=1e-4, atol=1e-4)
    assert e.signed and e.trust["windows"] == 12


def test_occlusion_nhwc_uses_the_input_layout():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 8, 8, 3))
    m = linear_model((8, 8, 3), w, np.zeros(2))
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    e = Occlusion(window=4, strides=2, baseline="mean").explain(m, x, target=1)
    fill = x.mean(axis=(1, 2), keepdims=True)
    ref = expected_occlusion(x.astype(np.float64), w[[1, 1]], fill, [0, 2, 4], [0, 2, 4], 4, 4, True)
    np.testing.assert_allclose(e.maps, ref, rtol=1e-4, atol=1e-4)
    assert e.attributions.shape == x.shape


def test_occlusion_defaults_and_argument_checks():
    m = onnxviz.Model.from_proto(tm.tiny_cnn())
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    e = Occlusion().explain(m, x)
    assert e.trust["window"] == (4, 4) and e.trust["strides"] == (2, 2) and e.trust["windows"] == 15 * 15
    with pytest.raises(InputError):
        Occlusion(baseline="grey")
    with pytest.raises(InputError):
        Occlusion(window=0).explain(m, x)


def shrink_model(with_shrink: bool) -> onnxviz.Model:
    return onnxviz.Model.from_proto(tm.tiny_cnn_with_unsupported_op() if with_shrink else tm.tiny_cnn())


def test_forward_methods_run_where_the_numpy_engine_cannot():
    plain, shrunk = shrink_model(False), shrink_model(True)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    if REGISTRY.get_forward("Shrink", 13) is None:
        # The input gradient crosses Shrink, which no gradient engine can differentiate ...
        with pytest.raises(UnsupportedOpError, match="Shrink"):
            Saliency().explain(shrunk, x)
        # ... while Grad-CAM's path (the last conv layer to the output) does not: the compiled
        # backward runs the forward, Shrink included, in onnxruntime.
        np.testing.assert_allclose(GradCAM().explain(shrunk, x).maps, GradCAM().explain(plain, x).maps, atol=1e-5)
    for method in (Occlusion(window=8, strides=8), RISE(n_masks=64)):
        got = method.explain(shrunk, x, target=3)
        want = method.explain(plain, x, target=3)
        np.testing.assert_allclose(got.maps, want.maps, rtol=1e-5, atol=1e-6)
        assert np.ptp(got.maps) > 0


def test_rise_is_deterministic_per_rng_and_batch_equals_per_example():
    m = onnxviz.Model.from_proto(tm.tiny_cnn())
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    before = x.copy()
    method = RISE(n_masks=100, batch_size=30)
    a = method.explain(m, x, target=[1, 5], rng=np.random.default_rng(7))
    b = method.explain(m, x, target=[1, 5], rng=np.random.default_rng(7))
    c = method.explain(m, x, target=[1, 5], rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.allclose(a.maps, c.maps)
    np.testing.assert_array_equal(x, before)
    for i, t in enumerate([1, 5]):
        one = method.explain(m, x[i : i + 1], target=t, rng=np.random.default_rng(7))
        np.testing.assert_allclose(one.maps[0], a.maps[i], rtol=1e-6)
    assert a.maps.min() >= 0 and not a.signed and "softmax" in a.variant


def test_rise_normalisation_on_a_constant_score():
    """S = b for every mask: the saliency is b * mean_i M_i / p, about b since E[M] = p."""
    m = linear_model((1, 28, 28), np.zeros((1, 1, 28, 28)), np.array([2.0]))
    x = np.ones((1, 1, 28, 28), np.float32)
    e = RISE(n_masks=1000, softmax=False).explain(m, x, target=0)
    assert abs(e.maps.mean() - 2.0) < 0.1 and np.abs(e.maps - 2.0).max() < 0.4
    assert "raw target score" in e.variant and e.signed


def test_rise_peaks_at_the_one_pixel_the_score_reads():
    """S = x_q: saliency(r) is proportional to sum_i M_i(q) M_i(r), largest at r = q."""
    w = np.zeros((1, 1, 28, 28))
    w[0, 0, 9, 19] = 1.0
    m = linear_model((1, 28, 28), w, np.zeros(1))
    e = RISE(n_masks=1500, softmax=False).explain(m, np.ones((1, 1, 28, 28), np.float32), target=0)
    peak = np.unravel_index(np.argmax(e.maps[0]), (28, 28))
    assert abs(peak[0] - 9) <= 1 and abs(peak[1] - 19) <= 1


def test_occlusion_matches_captum_on_an_exported_model(tmp_path):
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    from tests import torch_models

    module = torch_models.build("vgg", seed=1)
    m = onnxviz.Model.load(torch_models.export(module, tmp_path / "vgg.onnx", opset=13))
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ours = Occlusion(window=8, strides=4, baseline=0.0).explain(m, x, target=[2, 6])
    ref = (
        captum_attr.Occlusion(module)
        .attribute(
            torch.from_numpy(x), sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0, target=[2, 6],
            perturbations_per_eval=64,
        )
        .detach()
        .numpy()
    )
    err = np.abs(ours.attributions - ref).max() / np.abs(ref).max()
    print(f"Occlusion vs Captum: relative error {err:.2e}")
    assert err < 1e-3, err
