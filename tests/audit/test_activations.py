"""Activation checks over given inputs or the generated probe set."""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnxviz.audit import audit
from tests import models
from tests.audit.helpers import findings, initializer, model_of, one_conv, set_initializer


def test_dead_relu_channels_with_probe_and_with_given_inputs() -> None:
    proto = models.with_dead_and_duplicate_filters()
    (f,) = findings(proto, "activations.dead-channels")
    assert f.node == "relu1" and f.evidence["channels"] == [models.DEAD_FILTER, models.NEVER_ACTIVE_FILTER]
    assert f.evidence["after"] == models.AUDIT_CONV_NODE and "probe" in f.evidence["inputs"]
    x = np.random.default_rng(1).uniform(-2, 2, (3, 3, 32, 32)).astype(np.float32)
    result = audit(model_of(proto), x, checks=["activations.dead-channels"])
    (g,) = result.findings
    assert g.evidence["channels"] == [2, 3] and "given inputs (3 samples)" in g.evidence["inputs"]
    assert result.inputs.startswith("given inputs")
    assert findings(models.tiny_cnn(), "activations.dead-channels") == []


def test_saturated_sigmoid_units() -> None:
    proto = one_conv([helper.make_node("Sigmoid", ["conv"], ["out"], name="sig")], out="out", weight_scale=200.0)
    (f,) = findings(proto, "activations.saturated")
    assert f.node == "sig" and f.evidence["count"] >= 3 and f.evidence["bounds"] == [0.0, 1.0]
    calm = one_conv([helper.make_node("Tanh", ["conv"], ["out"], name="tanh")], out="out", weight_scale=0.05)
    assert findings(calm, "activations.saturated") == []


def test_first_node_producing_nan_is_named() -> None:
    proto = one_conv(
        [
            helper.make_node("Log", ["conv"], ["logged"], name="log"),
            helper.make_node("Relu", ["logged"], ["out"], name="after"),
        ],
        out="out",
    )
    (f,) = findings(proto, "activations.nonfinite")
    assert f.severity == "error" and f.node == "log" and f.tensor == "logged"
    assert f.evidence["nan"] > 0 and f.evidence["tensors_affected"] == 2
    assert findings(models.tiny_cnn(), "activations.nonfinite") == []


def test_ranges_evidence_per_tensor() -> None:
    (f,) = findings(models.tiny_cnn(), "activations.ranges")
    table = f.evidence["tensors"]
    assert list(table) == ["conv1", "relu1", "pool1", "conv2", "relu2", "gap", "flatten", "logits"]
    lo, hi, p999 = table["relu1"]
    assert lo == 0.0 and 0 < p999 <= hi
    assert f.severity == "info"


def test_float16_overflowing_activations() -> None:
    proto = models.tiny_cnn()
    set_initializer(proto, "conv2.weight", initializer(proto, "conv2.weight") * 1e5)
    (f,) = findings(proto, "activations.float16-overflow")
    assert f.tensor == "conv2" and f.evidence["max_abs"][0] > 65504
    assert findings(models.tiny_cnn(), "activations.float16-overflow") == []


def test_probe_set_is_seeded_and_fixed_batch_models_run_in_pieces() -> None:
    a = findings(models.tiny_cnn(), "activations.ranges", seed=3)[0].evidence["tensors"]
    b = findings(models.tiny_cnn(), "activations.ranges", seed=3)[0].evidence["tensors"]
    assert a == b
    result = audit(model_of(models.old_opset_model(9)), checks=["activations.ranges"], probe_samples=4)
    assert "(4 samples)" in result.inputs
