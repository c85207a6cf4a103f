"""Weight checks: planted defects are found with the right node and evidence; clean models pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxviz.audit.weights import DUPLICATE_COSINE, near_parallel
from tests import models
from tests.audit.helpers import findings, initializer, one_conv, set_initializer


def _tiny_with(name: str, edit) -> onnx.ModelProto:  # noqa: ANN001
    proto = models.tiny_cnn()
    w = initializer(proto, name)
    edit(w)
    return set_initializer(proto, name, w)


def test_nonfinite_weight_is_an_error_at_its_node() -> None:
    def plant(w: np.ndarray) -> None:
        w[1, 2, 0, 0] = np.nan
        w[0, 0, 0, 0] = np.inf

    (f,) = findings(_tiny_with("conv1.weight", plant), "weights.nonfinite")
    assert f.severity == "error" and f.tensor == "conv1.weight" and f.node == "conv1"
    assert f.evidence["nan"] == 1 and f.evidence["inf"] == 1 and f.evidence["first_index"] == [0, 0, 0, 0]
    assert findings(models.tiny_cnn(), "weights.nonfinite") == []


def test_denormal_weights() -> None:
    def plant(w: np.ndarray) -> None:
        w[0, :3] = 1e-41

    (f,) = findings(_tiny_with("conv2.weight", plant), "weights.denormal")
    assert f.severity == "warning" and f.tensor == "conv2.weight" and f.evidence["denormal"] == 27
    assert findings(models.tiny_cnn(), "weights.denormal") == []


@pytest.mark.parametrize("width", [72, 4608])
def test_near_parallel_screen_finds_exactly_the_brute_force_pairs(width: int) -> None:
    """The projection screen (wide filters) and the Gram path (narrow ones) give the same pairs,
    in the same order, as the full cosine matrix: planted copies at cosines just above and just
    below the threshold, a scaled copy, and random filters."""
    rng = np.random.default_rng(3)
    f = rng.standard_normal((300, width)).astype(np.float32)
    for k, target in enumerate([0.9995, 0.99905, 0.9985, 0.998, 0.99999]):
        # f[20 + k] at cosine `target` from f[k]: mix with a component orthogonal to it
        u = f[k] / np.linalg.norm(f[k])
        o = rng.standard_normal(width)
        o -= (o @ u) * u
        o /= np.linalg.norm(o)
        f[20 + k] = 3.0 * (target * u + np.sqrt(1 - target**2) * o)
    f[299] = 0.5 * f[7]
    f[250:253] = f[40]  # exact copies: compared once, every pair among them reported
    unit = f / np.linalg.norm(f, axis=1, keepdims=True)
    cos = unit.astype(np.float64) @ unit.T.astype(np.float64)
    want = [(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(cos > DUPLICATE_COSINE, k=1)))]
    found = near_parallel(unit, DUPLICATE_COSINE)
    rows, cols = found.pairs.T
    got_cos = found.cosines
    assert list(zip(rows.tolist(), cols.tolist())) == want
    assert found.count == len(want) and found.involved == 12
    assert found.max_cosine == pytest.approx(cos[rows, cols].max(), abs=1e-6)
    assert near_parallel(unit, DUPLICATE_COSINE, 5).pairs.tolist() == [list(p) for p in want[:5]]
    assert want == [(0, 20), (1, 21), (4, 24), (7, 299), (40, 250), (40, 251), (40, 252), (250, 251), (250, 252), (251, 252)]
    np.testing.assert_allclose(got_cos, cos[rows, cols], atol=1e-6)


def test_a_layer_of_identical_filters_is_summarized_without_listing_every_pair() -> None:
    unit = np.full((2048, 64), 1 / 8, dtype=np.float32)
    unit[5] = -unit[5]  # anti-parallel: not a duplicate
    found = near_parallel(unit, DUPLICATE_COSINE, 16)
    assert found.count == 2047 * 2046 // 2 and found.involved == 2047
    assert found.pairs.tolist() == [[0, j] for j in (1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)]
    assert found.max_cosine == pytest.approx(1.0, abs=1e-6)


def test_dead_and_duplicate_filters_of_the_audit_model() -> None:
    proto = models.with_dead_and_duplicate_filters()
    (dead,) = findings(proto, "weights.dead-filters")
    assert dead.node == models.AUDIT_CONV_NODE and dead.evidence["filters"] == [models.DEAD_FILTER]
    (dup,) = findings(proto, "weights.duplicate-filters")
    assert dup.node == models.AUDIT_CONV_NODE and dup.evidence["pairs"] == [list(models.DUPLICATE_FILTERS)]
    assert dup.evidence["max_cosine"] > 0.999
    assert findings(models.tiny_cnn(), "weights.dead-filters") == []
    assert findings(models.tiny_cnn(), "weights.duplicate-filters") == []


def test_scaled_copy_is_a_near_duplicate_but_a_perturbed_one_is_not() -> None:
    def plant(w: np.ndarray) -> None:
        w[4] = 3.0 * w[1]
        w[7] = w[2] + 0.5 * np.abs(w[2]).max()

    (f,) = findings(_tiny_with("conv2.weight", plant), "weights.duplicate-filters")
    assert f.evidence["pairs"] == [[1, 4]]


def _bn_model(var: np.ndarray) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(np.ones(4, np.float32), "s"),
        numpy_helper.from_array(np.zeros(4, np.float32), "bb"),
        numpy_helper.from_array(np.zeros(4, np.float32), "m"),
        numpy_helper.from_array(var.astype(np.float32), "v"),
    ]
    return one_conv([helper.make_node("BatchNormalization", ["conv", "s", "bb", "m", "v"], ["out"], name="bn")], out="out", extra_inits=inits)


def test_batchnorm_variance_near_zero_or_huge() -> None:
    (f,) = findings(_bn_model(np.array([1.0, 0.0, 1e-12, 1e9])), "weights.bn-variance")
    assert f.node == "bn" and f.evidence["low_channels"] == [1, 2] and f.evidence["high_channels"] == [3]
    assert findings(_bn_model(np.array([0.5, 1.0, 2.0, 1.5])), "weights.bn-variance") == []
    assert findings(models.paddle_style_constants(), "weights.bn-variance") == []


def test_extreme_and_float16_range_weights() -> None:
    def plant(w: np.ndarray) -> None:
        w[0, 0, 0, 0] = 2e4
        w[0, 0, 0, 1] = -1e5

    proto = _tiny_with("conv2.weight", plant)
    (ext,) = findings(proto, "weights.extreme")
    assert ext.tensor == "conv2.weight" and ext.evidence["count"] == 2 and ext.evidence["max_abs"] == 1e5
    (f16,) = findings(proto, "weights.float16-overflow")
    assert f16.evidence["tensors"] == ["conv2.weight"] and f16.evidence["counts"] == [1]
    assert findings(models.tiny_cnn(), "weights.extreme") == []
    assert findings(models.tiny_cnn(), "weights.float16-overflow") == []


def test_near_zero_share_is_info_with_a_pruning_hint_when_large() -> None:
    def plant(w: np.ndarray) -> None:
        w[:, :, :2] = 0.0

    (f,) = findings(_tiny_with("conv2.weight", plant), "weights.near-zero")
    assert f.severity == "info" and f.evidence["top_tensors"]["conv2.weight"] > 0.6 and f.evidence["near_zero"] >= 768
    (clean,) = findings(models.tiny_cnn(), "weights.near-zero")
    assert clean.evidence["share"] < 0.1 and clean.hint is None


def test_weights_in_constant_nodes_and_quantized_models_are_read() -> None:
    proto = models.paddle_style_constants()
    for node in proto.graph.node:
        if node.output[0] == "conv2d_1.w_0":
            w = numpy_helper.to_array(node.attribute[0].t).copy()
            w[3] = 0.0
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(w, "conv2d_1.w_0"))
    (f,) = findings(proto, "weights.dead-filters")
    assert f.evidence["filters"] == [3] and "Constant node" in f.evidence["source"]
    assert findings(models.quantized_qdq(), "weights.nonfinite") == []
