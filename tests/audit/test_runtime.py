"""Runtime consistency: silent when runtimes agree; names the first diverging tensor when not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from onnxviz.audit import audit
from onnxviz.audit.runtime import compare_outputs
from tests import models
from tests.audit.helpers import audit_proto, model_of


class _Perturbed:
    """Wraps a runner and adds 1.0 to every tensor at or after ``start`` in topological order."""

    def __init__(self, run, order: Sequence[str], start: str) -> None:  # noqa: ANN001
        self._run = run
        self._late = set(order[order.index(start) :])

    def run(self, feeds: Mapping[str, np.ndarray], taps: Sequence[str] = ()) -> dict[str, np.ndarray]:
        values = dict(self._run(feeds, taps))
        return {k: (v + 1.0 if k in self._late else v) for k, v in values.items()}


def test_runtimes_agree_on_clean_models() -> None:
    for proto in (models.tiny_cnn(), models.paddle_style_constants()):
        result = audit_proto(proto, ["runtime"])
        assert result.findings == (), result.findings
        assert set(result.checks_run) == {"runtime.ort-optimizations", "runtime.numpy-engine"}


def test_ort_optimization_divergence_names_first_tensor() -> None:
    model = model_of(models.tiny_cnn())
    order = model.graph.tensor_names()
    model.__dict__["ort"] = _Perturbed(model.ort.run, order, "conv2")
    result = audit(model, checks=["runtime.ort-optimizations"], probe_samples=2)
    (f,) = result.findings
    assert f.severity == "warning" and f.tensor == "conv2" and f.node == "conv2"
    assert f.evidence["first_diverging"]["op"] == "Conv"
    assert f.evidence["outputs"]["logits"]["max_abs"] > 0.5


def test_numpy_engine_divergence_names_first_tensor() -> None:
    model = model_of(models.tiny_cnn())
    order = model.graph.tensor_names()
    engine = model.engine

    class FakeEngine:
        def run(self, feeds, outputs):  # noqa: ANN001, ANN202
            return _Perturbed(lambda f, t: engine.run(f, t), order, "relu2").run(feeds, outputs)

    model.__dict__["engine"] = FakeEngine()
    (f,) = audit(model, checks=["runtime.numpy-engine"], probe_samples=2).findings
    assert f.tensor == "relu2" and f.evidence["samples_compared"] == 1
    (g,) = audit(model, checks=["runtime.numpy-engine"], probe_samples=3, engine_samples=2).findings
    assert g.evidence["samples_compared"] == 2


def test_numpy_engine_check_is_skipped_for_ops_it_cannot_run() -> None:
    result = audit_proto(models.quantized_qlinear(), ["runtime.numpy-engine"])
    if result.skipped:
        assert "numpy engine" in result.skipped[0].reason
    from onnx import helper

    from tests.audit.helpers import one_conv

    proto = one_conv([helper.make_node("Flatten", ["conv"], ["f"]), helper.make_node("Hardmax", ["f"], ["out"], axis=1)], out="out")
    skipped = audit_proto(proto, ["runtime.numpy-engine"]).skipped
    assert skipped and "Hardmax" in skipped[0].reason


def test_compare_outputs_metrics() -> None:
    ref = [{"y": np.array([[0.1, 0.9, 0.0, 0.2, 0.3, 0.4]], np.float32)}]
    same = compare_outputs(ref, ref, ["y"], rtol=1e-3, atol=1e-6)[0]
    assert same.within and same.max_abs == 0 and same.top1 == 1.0 and same.top5 == 1.0
    other = [{"y": np.array([[0.95, 0.9, 0.0, 0.2, 0.3, 0.4]], np.float32)}]
    diff = compare_outputs(ref, other, ["y"], rtol=1e-3, atol=1e-6)[0]
    assert not diff.within and diff.top1 == 0.0 and abs(diff.max_abs - 0.85) < 1e-6 and diff.rel_l2 > 0.5
