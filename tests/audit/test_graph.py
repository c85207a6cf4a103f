"""Graph checks: each fires on a model built to trigger it, and stays silent on a clean one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxviz.model import load
from onnxviz.audit import audit
from tests import models
from tests.audit.helpers import findings, one_conv


def test_checker_rejects_dangling_input_and_passes_clean() -> None:
    proto = one_conv([helper.make_node("Add", ["conv", "nowhere"], ["out"], name="add")], out="out", output_shape=["N", 4, 8, 8])
    (f,) = findings(proto, "graph.checker")
    assert f.severity == "error" and "nowhere" in f.message + str(f.evidence), f
    assert findings(models.tiny_cnn(), "graph.checker") == []


def test_versions_newer_opset_is_an_error() -> None:
    proto = models.tiny_cnn()
    proto.opset_import[0].version = onnx.defs.onnx_opset_version() + 1
    (f,) = findings(proto, "graph.versions")
    assert f.severity == "error" and f.evidence["opset"] == onnx.defs.onnx_opset_version() + 1
    assert findings(models.tiny_cnn(), "graph.versions") == []


def _custom(domain: str, op: str) -> onnx.ModelProto:
    proto = one_conv([helper.make_node(op, ["conv"], ["out"], name="custom_node", domain=domain)], out="out")
    proto.opset_import.append(helper.make_opsetid(domain, 1))
    return proto


def test_custom_domains_unknown_is_error_and_contrib_is_info() -> None:
    (f,) = findings(_custom("my.company", "Frobnicate"), "graph.custom-domains")
    assert f.severity == "error" and f.node == "custom_node" and f.evidence["ops"] == ["Frobnicate"]
    (g,) = findings(_custom("com.microsoft", "Gelu"), "graph.custom-domains")
    assert g.severity == "info" and "onnxruntime" in g.message
    assert findings(models.tiny_cnn(), "graph.custom-domains") == []


def test_ort_support_names_the_op_it_cannot_load() -> None:
    (f,) = findings(_custom("my.company", "Frobnicate"), "graph.ort-support")
    assert f.severity == "error" and f.evidence["op"] == "Frobnicate" and f.node == "custom_node"
    assert findings(_custom("com.microsoft", "Gelu"), "graph.ort-support") == []
    assert findings(models.tiny_cnn(), "graph.ort-support") == []


def test_gradient_support_names_ops_without_numpy_rules() -> None:
    proto = one_conv(
        [
            helper.make_node("Flatten", ["conv"], ["flat"], name="flatten"),
            helper.make_node("Hardmax", ["flat"], ["out"], name="hardmax", axis=1),
        ],
        out="out",
    )
    (f,) = findings(proto, "graph.gradient-support")
    assert f.severity == "warning" and f.evidence["op"] == "Hardmax" and f.node == "hardmax"
    assert "gradient" in f.message
    (cut,) = findings(models.quantized_qdq(), "graph.gradient-support")
    assert cut.severity == "info" and "QuantizeLinear" in cut.evidence["ops"]
    assert findings(models.tiny_cnn(), "graph.gradient-support") == []


def test_unused_initializer_dead_node_and_unused_opset() -> None:
    proto = models.tiny_cnn()
    proto.graph.initializer.append(numpy_helper.from_array(np.ones(5, np.float32), "leftover"))
    proto.graph.node.append(helper.make_node("Relu", ["conv2"], ["dangling_out"], name="dangling"))
    proto.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    result = audit(models_model(proto), checks=["graph.unused-initializers", "graph.dead-nodes", "graph.unused-opsets"])
    (u,) = result.by_check("graph.unused-initializers")
    assert u.severity == "warning" and u.evidence["initializers"] == ["leftover"] and u.evidence["values"] == 5
    (d,) = result.by_check("graph.dead-nodes")
    assert d.severity == "warning" and d.evidence["nodes"] == ["dangling"]
    (o,) = result.by_check("graph.unused-opsets")
    assert o.severity == "warning" and o.evidence["domain"] == "ai.onnx.ml"
    clean = audit(models_model(models.tiny_cnn()), checks=["graph.unused-initializers", "graph.dead-nodes", "graph.unused-opsets"])
    assert clean.findings == ()


def models_model(proto: onnx.ModelProto):  # noqa: ANN201 - small local helper
    from tests.audit.helpers import model_of

    return model_of(proto)


def test_initializers_as_inputs_is_info_on_old_exports() -> None:
    (f,) = findings(models.old_opset_model(7), "graph.initializers-as-inputs")
    assert f.severity == "info" and "bn1_var" in f.evidence["initializers"]
    assert findings(models.tiny_cnn(), "graph.initializers-as-inputs") == []


def test_node_names_duplicate_and_empty() -> None:
    proto = models.tiny_cnn()
    proto.graph.node[1].name = "same"
    proto.graph.node[3].name = "same"
    proto.graph.node[4].name = ""
    result = findings(proto, "graph.node-names")
    by = {f.severity: f for f in result}
    assert by["warning"].evidence["names"] == ["same"]
    assert by["info"].evidence["count"] == 1
    assert findings(models.tiny_cnn(), "graph.node-names") == []


def test_tensor_names_defined_twice() -> None:
    proto = models.tiny_cnn()
    proto.graph.node.insert(2, helper.make_node("Relu", ["conv1"], ["relu1"], name="second_relu1"))
    f = [f for f in findings(proto, "graph.tensor-names") if f.tensor == "relu1"]
    assert f and f[0].severity == "error" and f[0].evidence["count"] == 2
    assert findings(models.tiny_cnn(), "graph.tensor-names") == []


def test_training_ops_dropout_and_batchnorm() -> None:
    mode = numpy_helper.from_array(np.array(True), "train")
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    proto = one_conv(
        [helper.make_node("Dropout", ["conv", "ratio", "train"], ["out"], name="drop")], out="out", extra_inits=[mode, ratio]
    )
    (f,) = findings(proto, "graph.training-ops")
    assert f.severity == "error" and f.node == "drop" and f.evidence["ratio"] == 0.5
    bn = [numpy_helper.from_array(v, n) for n, v in (("s", np.ones(4, np.float32)), ("bb", np.zeros(4, np.float32)),
                                                     ("m", np.zeros(4, np.float32)), ("v", np.ones(4, np.float32)))]
    proto = one_conv(
        [helper.make_node("BatchNormalization", ["conv", "s", "bb", "m", "v"], ["out", "rm", "rv"], name="bn", training_mode=1)],
        out="out",
        opset=15,
        extra_inits=bn,
    )
    (g,) = findings(proto, "graph.training-ops")
    assert g.severity == "error" and g.node == "bn"
    assert findings(models.tiny_cnn(), "graph.training-ops") == []
    assert findings(models.paddle_style_constants(), "graph.training-ops") == []


def test_invalid_dims_on_paddle_minus_one_batch() -> None:
    result = findings(models.paddle_style_constants(), "graph.invalid-dims")
    assert {f.tensor for f in result} == {"x", "save_infer_model/scale_0.tmp_0"}
    assert all(f.severity == "warning" and f.evidence["values"] == [-1] and f.hint for f in result)
    assert findings(models.tiny_cnn(), "graph.invalid-dims") == []


def test_dynamic_dims_are_info() -> None:
    (f,) = findings(models.dynamic_spatial(), "graph.dynamic-dims")
    assert f.severity == "info" and f.evidence["axes"] == [0, 2, 3]
    assert findings(models.old_opset_model(9), "graph.dynamic-dims") == []


def test_external_data_is_reported_from_the_file(tmp_path: Path) -> None:
    path = models.with_external_data(tmp_path / "ext")
    result = audit(load(path), checks=["graph.external-data"])
    (f,) = result.findings
    assert f.severity == "info" and f.evidence["files"] == ["tiny_cnn.onnx.data"] and f.evidence["tensors"] == 6
    plain = tmp_path / "plain.onnx"
    onnx.save(models.tiny_cnn(), plain)
    assert audit(load(plain), checks=["graph.external-data"]).findings == ()
