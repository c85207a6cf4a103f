"""Small model surgery and a one-check audit runner shared by the audit tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxviz.audit import INTERNAL, AuditResult, Finding, audit
from onnxviz.model import Model


def model_of(proto: onnx.ModelProto) -> Model:
    return Model.from_proto(proto, check=False)


def audit_proto(proto: onnx.ModelProto, checks: Sequence[str] | None = None, **kwargs: object) -> AuditResult:
    result = audit(model_of(proto), checks=checks, probe_samples=kwargs.pop("probe_samples", 4), **kwargs)  # type: ignore[arg-type]
    crashes = result.by_check(INTERNAL)
    assert not crashes, crashes
    return result


def findings(proto: onnx.ModelProto, check: str, **kwargs: object) -> list[Finding]:
    return audit_proto(proto, [check], **kwargs).by_check(check)


def set_initializer(proto: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    for i, t in enumerate(proto.graph.initializer):
        if t.name == name:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(value), name))
            return proto
    raise KeyError(name)


def initializer(proto: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t).copy() for t in proto.graph.initializer if t.name == name)


def one_conv(
    after: Sequence[onnx.NodeProto] = (),
    *,
    out: str = "conv",
    opset: int = 13,
    weight_scale: float = 0.2,
    extra_inits: Sequence[onnx.TensorProto] = (),
    output_shape: Sequence[object] | None = None,
    seed: int = 0,
) -> onnx.ModelProto:
    """input [N, 3, 8, 8] -> Conv 'conv' (4 filters, 3x3, pad 1) -> ``after`` nodes -> ``out``."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 3, 3, 3)) * weight_scale).astype(np.float32)
    b = np.zeros(4, np.float32)
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]), *after]
    graph = helper.make_graph(
        nodes,
        "one_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info(out, TensorProto.FLOAT, output_shape)
            if output_shape is not None
            else helper.make_empty_tensor_value_info(out)
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), *extra_inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if output_shape is None:
        # Type the output as shape inference sees it, so the model is valid when its nodes are.
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # custom or broken nodes: leave the output rank-free
            inferred = model
        for v in list(inferred.graph.value_info) + list(inferred.graph.output):
            if v.name == out and v.type.HasField("tensor_type"):
                model.graph.output[0].CopyFrom(v)
                break
        else:
            model.graph.output[0].CopyFrom(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    return model
