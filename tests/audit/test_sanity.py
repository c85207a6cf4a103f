"""explanations.randomization: the top-layer randomization test of saliency and Grad-CAM as an audit check.

The true positive is a real model, not a patched verdict: when every class score reads one
feature (a width-1 bottleneck before the classifier), ``dS_c/dx = W[c, 0] * df/dx`` and
randomizing the classifier can only rescale the saliency map, so its ranking (Spearman of
|map|) stays exactly 1.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.audit import INTERNAL, audit, exit_code, sanity
from onnxviz.audit.sanity import RandomizationCheck
from onnxviz.methods.evaluation import RandomizationResult
from onnxviz.model import Model
from tests import models
from tests.audit.helpers import audit_proto, initializer, model_of, set_initializer

CHECK = "explanations.randomization"


def _image_model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], classes: int = 5) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "sanity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def one_feature_bottleneck() -> onnx.ModelProto:
    """Conv (1 filter) - Relu - GlobalAveragePool - Flatten - Gemm (1 -> 5): every class score is
    a multiple of the same single feature."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], name="classifier", transB=1),
    ]
    inits = {
        "w1": rng.standard_normal((1, 3, 3, 3)) * 0.5,
        "b1": np.full(1, 0.5),
        "w2": rng.standard_normal((5, 1)),
        "b2": rng.standard_normal(5) * 0.1,
    }
    return _image_model(nodes, inits)


def no_spatial_head() -> onnx.ModelProto:
    """A conv whose kernel covers the whole 16x16 image: no spatial map for a CAM."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv"], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("Flatten", ["relu"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], name="classifier", transB=1),
    ]
    inits = {
        "w1": rng.standard_normal((8, 3, 16, 16)) * 0.05,
        "b1": np.zeros(8),
        "w2": rng.standard_normal((5, 8)),
        "b2": np.zeros(5),
    }
    return _image_model(nodes, inits)


def test_trustworthy_maps_on_tiny_cnn_are_info_with_the_numbers() -> None:
    result = audit_proto(models.tiny_cnn(), [CHECK])
    assert result.checks_run == (CHECK,) and not result.skipped
    assert result.verdict == "pass"
    found = {f.evidence["method"]: f for f in result.by_check(CHECK)}
    assert set(found) == {"saliency", "gradcam"}
    for f in found.values():
        assert f.severity == "info" and f.node == "logits"  # the Gemm, labelled by its output
        assert f.evidence["layer"] == "logits" and f.evidence["samples"] == sanity.MAX_SAMPLES
        assert f.evidence["spearman_abs_mean"] < f.evidence["threshold"] == 0.5
        assert len(f.evidence["spearman_abs"]) == len(f.evidence["ssim"]) == sanity.MAX_SAMPLES
        assert "depend on what this model learned" in f.message
    assert f"mean Spearman {found['saliency'].evidence['spearman_abs_mean']:.2f}" in found["saliency"].message
    assert CHECK in result.timings


def test_one_feature_bottleneck_makes_saliency_insensitive() -> None:
    result = audit_proto(one_feature_bottleneck(), [CHECK])
    (warning,) = [f for f in result.by_check(CHECK) if f.evidence["method"] == "saliency"]
    assert warning.severity == "warning"
    assert warning.message == (
        "saliency maps barely change when the top layer is randomized (mean Spearman 1.00): they do not "
        "reflect what this model learned; do not trust them for this model"
    )
    assert warning.evidence["spearman_abs_mean"] == pytest.approx(1.0)
    assert warning.evidence["ssim_mean"] == pytest.approx(1.0, abs=1e-3)  # same map up to scale
    assert warning.node == warning.evidence["layer"] == "classifier" and warning.hint
    assert result.verdict == "warn" and exit_code(result, "warning") == 1 and exit_code(result) == 0


def test_verdict_is_taken_over_samples_whose_maps_rank_pixels() -> None:
    flat, varied = np.zeros((4, 4)), np.arange(16.0).reshape(4, 4)

    def result(originals: list[np.ndarray], s_abs: list[float]) -> RandomizationResult:
        n = len(originals)
        return RandomizationResult(
            "gradcam", "v", "cascade", ("fc",), np.zeros(n, np.int64), np.stack(originals),
            np.stack([np.stack(originals)]), np.array([s_abs]), np.array([s_abs]), np.array([s_abs]), 0.5,
            "insensitive" if np.mean(s_abs) >= 0.5 else "trustworthy",
        )

    check = RandomizationCheck()
    inconclusive = check._judge("Grad-CAM", result([flat, flat], [1.0, 1.0]))
    assert inconclusive.severity == "info" and "inconclusive" in inconclusive.message
    assert inconclusive.evidence["flat_maps"] == 2
    # Two flat originals agree trivially (Spearman 1) and must not outvote the informative ones.
    mixed = check._judge("Grad-CAM", result([flat, flat, varied, varied], [1.0, 1.0, 0.1, 0.2]))
    assert mixed.severity == "info" and mixed.evidence["spearman_abs_mean"] == pytest.approx(0.15)
    assert mixed.evidence["flat_maps"] == 2


def test_model_without_a_cam_layer_still_checks_saliency() -> None:
    found = audit_proto(no_spatial_head(), [CHECK]).by_check(CHECK)
    by_method = {f.evidence["method"]: f for f in found}
    assert set(by_method) == {"saliency", "gradcam"}
    skipped = by_method["gradcam"]
    assert skipped.severity == "info" and skipped.message.startswith("Grad-CAM not checked:") and skipped.hint
    assert "spearman_abs_mean" in by_method["saliency"].evidence


@pytest.mark.parametrize("builder", [models.quantized_qdq, models.tiny_cnn_with_unsupported_op])
def test_model_the_engine_cannot_differentiate_is_skipped_with_an_info(builder) -> None:  # noqa: ANN001
    result = audit_proto(builder(), [CHECK])
    assert CHECK not in result.checks_run
    (skip,) = result.skipped
    (info,) = result.by_check(CHECK)
    assert info.severity == "info" and result.verdict == "pass"
    op = info.evidence["op"]
    assert op in ("QuantizeLinear", "Shrink") and info.node == info.evidence["node"]
    assert skip.check == CHECK and op in skip.reason and repr(info.node) in skip.reason
    assert info.hint


def test_not_applicable_without_an_image_input() -> None:
    result = audit_proto(models.non_image_mlp(), [CHECK])
    assert result.by_check(CHECK) == [] and [s.check for s in result.skipped] == [CHECK]
    assert "image input" in result.skipped[0].reason


def test_not_applicable_when_the_outputs_are_not_finite() -> None:
    proto = models.tiny_cnn()
    w = initializer(proto, "conv1.weight")
    w[0, 0, 0, 0] = np.nan
    result = audit_proto(set_initializer(proto, "conv1.weight", w), [CHECK])
    assert result.by_check(CHECK) == [] and "not finite" in result.skipped[0].reason


def test_at_most_max_samples_given_samples_even_when_the_batch_is_fixed() -> None:
    model = model_of(models.tiny_cnn(batch=1))
    x = np.random.default_rng(3).uniform(0, 1, (6, 3, 32, 32)).astype(np.float32)
    result = audit(model, x, checks=[CHECK])
    assert result.inputs == "given inputs (6 samples)"
    assert {f.evidence["samples"] for f in result.by_check(CHECK)} == {sanity.MAX_SAMPLES}


def test_a_crash_in_the_check_becomes_an_internal_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("kaboom")

    monkeypatch.setattr(sanity, "randomization_test", boom)
    result = audit(Model.from_proto(models.tiny_cnn(), check=False), checks=[CHECK], probe_samples=2)
    (crash,) = result.by_check(INTERNAL)
    assert crash.severity == "error" and CHECK in crash.message and "kaboom" in crash.message
    assert result.checks_run == (CHECK,) and CHECK in result.timings
