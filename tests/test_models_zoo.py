"""The test model zoo itself: each hand-built model is valid, runs and means what its docstring
says; each PyTorch export matches PyTorch.

Evidence beyond "it runs": onnxruntime agrees with onnx's reference evaluator where that evaluator
is right (see ``ZooCase.reference``), every exporter quirk a builder claims is checked on the
graph, and the deliberately odd models (dead filters, Softmax-1, constant subgraphs, external
data) are checked against answers computed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo
from onnx.reference import ReferenceEvaluator

from tests import models, torch_models

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread: deterministic, and fast on a shared machine where spinning pools fight.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # old-IR models warn about initializers listed as inputs
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the intermediate tensors ``names``."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    tapped.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return tapped


def _user_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_param if d.HasField("dim_param") else d.dim_value
        for d in value.type.tensor_type.shape.dim
    ]


# --------------------------------------------------------------------------------------------
# The table of hand-built models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooCase:
    """One hand-built model with the feed shapes to run it at and the output shapes that gives.

    ``reference``: whether onnx's reference evaluator can be the second opinion. It cannot for
    BatchNormalization below opset 14 (onnx 1.23.2: BatchNormalization-6/7 returns a tuple and
    fails, BatchNormalization-9 computes the wrong values, off by ~0.15 on a random case) nor for
    DequantizeLinear-13 (not implemented); those models get known-answer checks below instead.
    """

    name: str
    build: Callable[[], onnx.ModelProto]
    inputs: Mapping[str, tuple[int, ...]]
    outputs: Mapping[str, tuple[int, ...]]
    reference: bool = True

    def feeds(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {n: rng.standard_normal(s).astype(np.float32) for n, s in self.inputs.items()}


IMAGE = (2, 3, 32, 32)
HOSTILE_INPUT = '<script>alert(1)</script> "input"'
HOSTILE_OUTPUT = "logits {{ 7*7 }} &amp; ünïcødé"

CASES = [
    ZooCase("tiny_cnn", models.tiny_cnn, {"input": IMAGE}, {"logits": (2, 10)}),
    ZooCase("tiny_cnn-opset9", lambda: models.tiny_cnn(9), {"input": IMAGE}, {"logits": (2, 10)}),
    ZooCase("tiny_cnn-opset21", lambda: models.tiny_cnn(21), {"input": IMAGE}, {"logits": (2, 10)}),
    ZooCase(
        "tiny_cnn-static-batch",
        lambda: models.tiny_cnn(batch=1),
        {"input": (1, 3, 32, 32)},
        {"logits": (1, 10)},
    ),
    ZooCase("tf2onnx_nhwc", models.tf2onnx_nhwc, {"input_1": (2, 32, 32, 3)}, {"dense": (2, 10)}),
    ZooCase(
        "paddle_style_constants",
        models.paddle_style_constants,
        {"x": IMAGE},
        {"save_infer_model/scale_0.tmp_0": (2, 10)},
        reference=False,
    ),
    ZooCase(
        "constant_subgraph_weights",
        models.constant_subgraph_weights,
        {"input": IMAGE},
        {"logits": (2, 10)},
    ),
    ZooCase(
        "quantized_qdq",
        models.quantized_qdq,
        {"input": IMAGE},
        {"logits": (2, 10)},
        reference=False,
    ),
    ZooCase("quantized_qlinear", models.quantized_qlinear, {"input": IMAGE}, {"logits": (2, 10)}),
    ZooCase(
        "grayscale_cnn",
        models.grayscale_cnn,
        {"Input3": (2, 1, 28, 28)},
        {"Plus214_Output_0": (2, 10)},
    ),
    ZooCase(
        "two_input_model",
        models.two_input_model,
        {"image": IMAGE, "meta": (2, 4)},
        {"score": (2, 2)},
    ),
    ZooCase("non_image_mlp", models.non_image_mlp, {"features": (2, 16)}, {"scores": (2, 3)}),
    ZooCase("dynamic_spatial-32x32", models.dynamic_spatial, {"input": IMAGE}, {"logits": (2, 5)}),
    ZooCase(
        "dynamic_spatial-17x40",
        models.dynamic_spatial,
        {"input": (1, 3, 17, 40)},
        {"logits": (1, 5)},
    ),
    ZooCase(
        "hostile_names", models.hostile_names, {HOSTILE_INPUT: IMAGE}, {HOSTILE_OUTPUT: (2, 10)}
    ),
    *[
        ZooCase(
            f"old_opset_model-opset{opset}",
            lambda opset=opset: models.old_opset_model(opset),
            {"data_0": (1, 3, 32, 32)},
            {"prob": (1, 4, 32, 32)},
            reference=False,
        )
        for opset in (7, 8, 9)
    ],
    ZooCase(
        "with_dead_and_duplicate_filters",
        models.with_dead_and_duplicate_filters,
        {"input": IMAGE},
        {"logits": (2, 10)},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_builder_is_valid_deterministic_and_declares_its_interface(case: ZooCase) -> None:
    model = case.build()
    onnx.checker.check_model(model, full_check=True)
    assert model.SerializeToString() == case.build().SerializeToString()
    graph = model.graph
    assert [i.name for i in _user_inputs(graph)] == list(case.inputs)
    assert [o.name for o in graph.output] == list(case.outputs)
    for value, shape in zip(_user_inputs(graph), case.inputs.values(), strict=True):
        assert len(_dims(value)) == len(shape)
    assert all(n.name for n in graph.node), "every node is named, as exporters do"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_builder_runs_in_onnxruntime(case: ZooCase) -> None:
    outputs = _run(case.build(), case.feeds(np.random.default_rng(0)))
    assert list(outputs) == list(case.outputs)
    for name, shape in case.outputs.items():
        assert outputs[name].shape == shape
        assert outputs[name].dtype == np.float32
        assert np.all(np.isfinite(outputs[name]))
        assert np.ptp(outputs[name]) > 0, f"{name} is constant: the model ignores its input"


@pytest.mark.parametrize("case", [c for c in CASES if c.reference], ids=lambda c: c.name)
def test_onnxruntime_agrees_with_the_reference_evaluator(case: ZooCase) -> None:
    model = case.build()
    feeds = case.feeds(np.random.default_rng(1))
    ours = _run(model, feeds)
    reference = ReferenceEvaluator(model).run(None, feeds)
    for got, expected in zip(ours.values(), reference, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Each builder's exporter pattern
# --------------------------------------------------------------------------------------------


def test_tf2onnx_transposes_nhwc_input_and_outputs_probabilities() -> None:
    model = models.tf2onnx_nhwc()
    first = model.graph.node[0]
    assert (first.op_type, list(first.input)) == ("Transpose", ["input_1"])
    assert helper.get_attribute_value(first.attribute[0]) == [0, 3, 1, 2]
    assert _dims(model.graph.input[0]) == ["unk__6", 32, 32, 3]
    x = np.random.default_rng(2).random((3, 32, 32, 3), dtype=np.float32)
    probs = _run(model, {"input_1": x})["dense"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    # Feeding the same image as NCHW-transposed data must change the answer: the layout matters.
    swapped = np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    assert not np.allclose(_run(model, {"input_1": swapped})["dense"], probs)


def test_paddle_style_weights_are_constant_nodes_and_batch_is_minus_one() -> None:
    model = models.paddle_style_constants()
    graph = model.graph
    assert len(graph.initializer) == 0
    assert _dims(graph.input[0]) == [-1, 3, 32, 32]
    constants = {n.output[0] for n in graph.node if n.op_type == "Constant"}
    for node in graph.node:
        if node.op_type in ("Conv", "MatMul", "BatchNormalization"):
            assert set(node.input[1:]) <= constants, node.name


def test_constant_subgraph_weights_fold_to_the_intended_tensors() -> None:
    model = models.constant_subgraph_weights()
    graph = model.graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    folded = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"]
    assert [producers[n] for n in folded] == [
        "Transpose",
        "ConstantOfShape",
        "Cast",
        "Cast",
        "Reshape",
        "Cast",
    ]
    weight_inputs = [i for n in graph.node if n.op_type in ("Conv", "Gemm") for i in n.input[1:]]
    assert weight_inputs == folded  # no weight is read from an initializer directly

    x = np.zeros((1, 3, 32, 32), np.float32)
    values = _run(_with_outputs(model, folded), {"input": x})
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    np.testing.assert_array_equal(
        values["conv1.weight"], stored["conv1.weight.hwio"].transpose(3, 2, 0, 1)
    )
    np.testing.assert_array_equal(values["conv1.bias"], np.full(8, 0.05, np.float32))
    np.testing.assert_array_equal(
        values["conv2.weight"], stored["conv2.weight.fp16"].astype(np.float32)
    )
    assert values["conv2.bias"].dtype == np.float32
    assert values["fc.weight"].shape == (10, 16)
    assert values["fc.bias"].dtype == np.float32 and np.all(
        values["fc.bias"] == np.round(values["fc.bias"])
    )


def test_quantized_qdq_has_int8_per_channel_weights_and_qdq_activations() -> None:
    model = models.quantized_qdq()
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == 5 and ops.count("DequantizeLinear") == 5 + 5
    for conv, cout in (("conv1", 8), ("conv2", 16)):
        assert inits[f"{conv}.weight_quantized"].data_type == TensorProto.INT8
        assert list(inits[f"{conv}.weight_scale"].dims) == [cout]
        assert inits[f"{conv}.bias_quantized"].data_type == TensorProto.INT32
    per_channel = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.attribute]
    assert {helper.get_attribute_value(n.attribute[0]) for n in per_channel} == {0}
    # Without the activation Q/DQ pairs it is a float CNN; quantization moves the logits by a few
    # steps of the 0.02 activation scale, not more (inputs in [0, 1) stay inside every range).
    x = np.random.default_rng(3).random((4, 3, 32, 32), dtype=np.float32)
    quantized = _run(model, {"input": x})["logits"]
    float_logits = _run(_without_activation_qdq(model), {"input": x})["logits"]
    error = np.abs(quantized - float_logits).max()
    assert 0 < error < 0.05 < np.ptp(float_logits)


def _without_activation_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each QuantizeLinear -> DequantizeLinear pair bypassed (weight DQs stay)."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    producers = {o: n for n in stripped.graph.node for o in n.output}
    bypass = {
        n.output[0]: producers[n.input[0]].input[0]
        for n in stripped.graph.node
        if n.op_type == "DequantizeLinear"
        and getattr(producers.get(n.input[0]), "op_type", "") == "QuantizeLinear"
    }
    kept = [
        n
        for n in stripped.graph.node
        if n.op_type != "QuantizeLinear" and n.output[0] not in bypass
    ]
    for node in kept:
        node.input[:] = [bypass.get(i, i) for i in node.input]
    del stripped.graph.node[:]
    stripped.graph.node.extend(kept)
    onnx.checker.check_model(stripped)
    return stripped


def test_quantized_qlinear_uses_qoperator_ops_on_a_uint8_input() -> None:
    model = models.quantized_qlinear()
    nodes = {n.op_type: n for n in model.graph.node}
    assert {"QuantizeLinear", "QLinearConv", "ConvInteger"} <= set(nodes)
    assert nodes["QuantizeLinear"].input[0] == "input"
    zero_point = next(t for t in model.graph.initializer if t.name == "input_zero_point")
    assert zero_point.data_type == TensorProto.UINT8
    # QLinearConv's uint8 output with zero point 0 clips at zero: the folded ReLU.
    tapped = _with_outputs(model, ["relu1_output_quantized"])
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32)
    q = _run(tapped, {"input": x})["relu1_output_quantized"]
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() > 0


def test_dynamic_spatial_has_symbolic_batch_height_and_width() -> None:
    assert _dims(models.dynamic_spatial().graph.input[0]) == ["N", 3, "H", "W"]


def test_hostile_names_carry_every_fragment_everywhere() -> None:
    model = models.hostile_names()
    graph = model.graph
    node_names = " ".join(n.name for n in graph.node)
    tensor_names = " ".join(
        [
            *(i.name for i in graph.input),
            *(o.name for o in graph.output),
            *(t.name for t in graph.initializer),
        ]
        + [o for n in graph.node for o in n.output]
    )
    docs = " ".join([model.doc_string, graph.doc_string, *(n.doc_string for n in graph.node)])
    metadata = " ".join(f"{p.key} {p.value}" for p in model.metadata_props)
    for fragment in models.HOSTILE_FRAGMENTS:
        assert fragment in tensor_names, fragment
        assert fragment in docs, fragment
    for fragment in ("<script>alert(1)</script>", "{{ 7*7 }}", "\n"):
        assert fragment in node_names and fragment in metadata
    assert "<script>" in graph.name and "<script>" in model.producer_name


def test_dead_and_duplicate_filters_show_in_weights_and_activations() -> None:
    model = models.with_dead_and_duplicate_filters()
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = inits[models.AUDIT_CONV_WEIGHT]
    b = inits[f"{models.AUDIT_CONV_NODE}.bias"]
    first, second = models.DUPLICATE_FILTERS
    assert not w[models.DEAD_FILTER].any() and b[models.DEAD_FILTER] == 0
    np.testing.assert_array_equal(w[first], w[second])
    assert b[first] == b[second]
    assert b[models.NEVER_ACTIVE_FILTER] == -100
    node = next(n for n in model.graph.node if n.name == models.AUDIT_CONV_NODE)
    assert node.input[1] == models.AUDIT_CONV_WEIGHT

    x = np.random.default_rng(5).standard_normal((4, 3, 32, 32)).astype(np.float32)
    relu = _run(_with_outputs(model, ["relu1"]), {"input": x})["relu1"]
    active = relu.reshape(4, 8, -1).any(axis=(0, 2))
    expected_dead = {models.DEAD_FILTER, models.NEVER_ACTIVE_FILTER}
    assert set(np.flatnonzero(~active)) == expected_dead
    np.testing.assert_array_equal(relu[:, first], relu[:, second])


@pytest.mark.parametrize("opset", [7, 8, 9])
def test_old_opset_model_softmax1_normalises_over_the_flattened_tail(opset: int) -> None:
    model = models.old_opset_model(opset)
    assert model.ir_version == (3 if opset < 9 else 4)
    assert {t.name for t in model.graph.initializer} <= {i.name for i in model.graph.input}
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    assert ("spatial" in {a.name for a in bn.attribute}) == (opset < 9)

    x = np.random.default_rng(6).standard_normal((1, 3, 32, 32)).astype(np.float32)
    out = _run(_with_outputs(model, ["score"]), {"data_0": x})
    score = out["score"].astype(np.float64).reshape(1, -1)
    expected = np.exp(score - score.max()) / np.exp(score - score.max()).sum()
    np.testing.assert_allclose(out["prob"].reshape(1, -1), expected, rtol=1e-4, atol=1e-9)
    # Not the per-pixel softmax that a Softmax-13 reading would give.
    assert not np.allclose(out["prob"].sum(axis=1), 1.0)


def test_with_external_data_keeps_weights_beside_the_model(tmp_path: Path) -> None:
    path = models.with_external_data(tmp_path)
    data = path.with_name("tiny_cnn.onnx.data")
    assert path.is_file() and data.is_file()
    assert path.stat().st_size < data.stat().st_size
    bare = onnx.load(path, load_external_data=False)
    assert {ExternalDataInfo(t).location for t in bare.graph.initializer} == {data.name}
    onnx.checker.check_model(str(path), full_check=True)
    x = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(
        _run(path, {"input": x})["logits"], _run(models.tiny_cnn(), {"input": x})["logits"]
    )


def test_with_escaping_external_data_points_at_a_real_file_outside(tmp_path: Path) -> None:
    path = models.with_escaping_external_data(tmp_path)
    model = onnx.load(path, load_external_data=False)
    secret = (path.parent / models.ESCAPING_LOCATION).resolve()
    assert secret == (tmp_path / "secret.bin").resolve()
    assert path.parent.resolve() not in secret.parents
    # A loader that followed the location would get tiny_cnn's real weights back.
    blob = secret.read_bytes()
    for tensor, original in zip(
        model.graph.initializer, models.tiny_cnn().graph.initializer, strict=True
    ):
        info = ExternalDataInfo(tensor)
        assert info.location == models.ESCAPING_LOCATION
        stored = np.frombuffer(blob[info.offset : info.offset + info.length], dtype=np.float32)
        np.testing.assert_array_equal(stored, numpy_helper.to_array(original).ravel())


def test_light_model_paths_lists_the_shipped_light_models() -> None:
    paths = models.light_model_paths()
    assert paths == sorted(paths)
    assert len(paths) >= 9
    assert {"light_resnet50.onnx", "light_vgg19.onnx", "light_squeezenet.onnx"} <= {
        p.name for p in paths
    }
    for path in paths:
        model = onnx.load(path)
        onnx.checker.check_model(model)
        assert any(n.op_type == "Conv" for n in model.graph.node)


# --------------------------------------------------------------------------------------------
# PyTorch exports
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_env() -> Iterator[Any]:
    """PyTorch on one thread (restored afterwards); skips the torch tests where it is absent."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(torch_env: Any) -> dict[str, Any]:
    return {name: torch_models.build(name) for name in torch_models.ARCHITECTURES}


def _expected_ops(arch: str, opset: int) -> set[str]:
    """Ops that show the architecture survived export (fused BN disappears into Conv)."""
    common = {"Conv", "Gemm"}
    if arch == "resnet":
        return common | {"Add", "MaxPool", "Relu", "GlobalAveragePool"}
    if arch == "mobilenetv3":
        return (
            common
            | {"HardSigmoid", "Mul", "GlobalAveragePool"}
            | ({"HardSwish"} if opset >= 14 else set())
        )
    if arch == "efficientnet":
        return common | {"Sigmoid", "Mul", "Add"}
    if arch == "densenet":
        return common | {"Concat", "BatchNormalization", "AveragePool"}
    if arch == "convnext":
        norm = {"LayerNormalization"} if opset >= 17 else {"ReduceMean", "Sqrt", "Div"}
        return common | norm | {"Transpose", "Erf", "MatMul"}
    if arch == "vgg":
        return common | {"MaxPool", "AveragePool", "Flatten"}
    raise AssertionError(arch)


@pytest.mark.torch
@pytest.mark.parametrize("opset", torch_models.OPSETS)
@pytest.mark.parametrize("arch", list(torch_models.ARCHITECTURES))
def test_torch_export_matches_torch_at_batch_1_and_3(
    arch: str, opset: int, built: dict[str, Any], torch_env: Any, tmp_path: Path
) -> None:
    torch = torch_env
    module = built[arch]
    path = torch_models.export(module, tmp_path / f"{arch}-{opset}.onnx", opset=opset)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert _dims(model.graph.input[0]) == ["batch", 3, 32, 32]
    assert _expected_ops(arch, opset) <= {n.op_type for n in model.graph.node}
    assert not module.training

    session = _session(path)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = module(x).numpy()
        (got,) = session.run(["output"], {"input": x.numpy()})
        assert got.shape == (batch, torch_models.NUM_CLASSES)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.torch
def test_torch_export_with_static_batch(built: dict[str, Any], tmp_path: Path) -> None:
    path = torch_models.export(built["vgg"], tmp_path / "vgg.onnx", opset=13, dynamic_batch=False)
    assert _dims(onnx.load(path).graph.input[0]) == [1, 3, 32, 32]


@pytest.mark.torch
def test_torch_build_is_seeded_with_trained_looking_statistics(torch_env: Any) -> None:
    torch = torch_env
    state = torch.get_rng_state()
    a, b, c = (torch_models.build("resnet", seed=s) for s in (0, 0, 1))
    assert torch.equal(state, torch.get_rng_state()), "build() must not consume the global RNG"
    for (name, x), y, z in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
        if x.is_floating_point():
            assert not torch.equal(x, z), name
    for module in (torch_models.build(name) for name in torch_models.ARCHITECTURES):
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
            assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
