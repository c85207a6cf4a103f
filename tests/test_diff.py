"""``onnxviz diff``: tensor matching, drift, weights, attention drift and the CLI.

The base model is ``tiny_cnn``; its variants are made here: a perturbed copy, a renamed copy,
an FP16-weights copy, and onnxruntime's own quantizations (dynamic, static QDQ, static QOperator,
calibrated on random data).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.cli import diff as cli_diff
from onnxviz.cli import main as cli_main
from onnxviz.diff import diff, match_tensors, spearman
from onnxviz.model import Model, load

from .models import tiny_cnn

TINY_TENSORS = [
    "input",
    "conv1",
    "relu1",
    "pool1",
    "conv2",
    "relu2",
    "gap",
    "flatten",
    "logits",
]


# ------------------------------------------------------------------------------------ variants
def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def perturbed(proto: onnx.ModelProto, weight: str, scale: float = 0.3, seed: int = 1) -> onnx.ModelProto:
    """A copy with noise of ``scale`` times the weight's std added to one initializer."""
    out = _copy(proto)
    for k, t in enumerate(out.graph.initializer):
        if t.name == weight:
            w = numpy_helper.to_array(t)
            noise = np.random.default_rng(seed).standard_normal(w.shape) * scale * w.std()
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array((w + noise).astype(w.dtype), t.name))
            return out
    raise KeyError(weight)


def renamed(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy in which every tensor and node has a new name; returns the name map too."""
    out = _copy(proto)
    g = out.graph
    names: dict[str, str] = {}

    def new(name: str) -> str:
        if name and name not in names:
            names[name] = f"t{len(names)}"
        return names.get(name, name)

    for v in list(g.input) + list(g.output) + list(g.value_info):
        v.name = new(v.name)
    for t in g.initializer:
        t.name = new(t.name)
    for k, n in enumerate(g.node):
        n.name = f"node{k}"
        for i in range(len(n.input)):
            n.input[i] = new(n.input[i])
        for i in range(len(n.output)):
            n.output[i] = new(n.output[i])
    return out, names


def fp16_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 conversion without onnxconverter-common: float initializers stored as float16 and
    cast back to float32 by ``Cast`` nodes in front of the graph."""
    out = _copy(proto)
    g = out.graph
    casts, inits = [], []
    for t in g.initializer:
        w = numpy_helper.to_array(t)
        if w.dtype == np.float32:
            inits.append(numpy_helper.from_array(w.astype(np.float16), f"{t.name}_fp16"))
            casts.append(
                helper.make_node(
                    "Cast",
                    [f"{t.name}_fp16"],
                    [t.name],
                    name=f"{t.name}_cast",
                    to=TensorProto.FLOAT,
                )
            )
        else:
            inits.append(t)
    nodes = casts + list(g.node)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.node[:]
    g.node.extend(nodes)
    return out


class _RandomCalibration:
    """A small calibration reader over seeded random inputs (quantize_static's protocol)."""

    def __init__(self, n: int = 8) -> None:
        rng = np.random.default_rng(0)
        self._batches = iter([{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(n)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # some onnxruntime versions call it
        pass


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    reader = type("Reader", (_RandomCalibration, CalibrationDataReader), {})
    d = tmp_path_factory.mktemp("diff_zoo")
    paths = {"fp32": d / "fp32.onnx"}
    onnx.save(tiny_cnn(), paths["fp32"])
    paths["dynamic"] = d / "dynamic.onnx"
    quantize_dynamic(str(paths["fp32"]), str(paths["dynamic"]), weight_type=QuantType.QUInt8)
    paths["qdq"] = d / "qdq.onnx"
    quantize_static(str(paths["fp32"]), str(paths["qdq"]), reader(), quant_format=QuantFormat.QDQ)
    paths["qoperator"] = d / "qoperator.onnx"
    quantize_static(
        str(paths["fp32"]),
        str(paths["qoperator"]),
        reader(),
        quant_format=QuantFormat.QOperator,
    )
    paths["fp16"] = d / "fp16.onnx"
    onnx.save(fp16_weights(tiny_cnn()), paths["fp16"])
    return paths


@pytest.fixture(scope="module")
def base() -> Model:
    return Model.from_proto(tiny_cnn())


# ------------------------------------------------------------------------------------ identity
def test_model_against_itself_is_identical_and_raises_no_flag(base: Model) -> None:
    r = diff(base, Model.from_proto(tiny_cnn()))
    assert [t.a for t in r.tensors] == TINY_TENSORS
    assert all(t.a == t.b and t.matched_by == "name" for t in r.tensors)
    assert all(t.max_abs == 0 and t.rel_l2 == 0 and t.cosine == pytest.approx(1.0) for t in r.tensors)
    (out,) = r.outputs
    assert (out.top1, out.top5, out.k, out.samples) == (1.0, 1.0, 5, 8)
    assert r.first_divergence is None
    assert r.findings == ()
    assert r.unmatched == ()
    assert [(w.node_a, w.node_b, w.max_abs, w.snr_db) for w in r.weights] == [
        ("conv1", "conv1", 0.0, math.inf),
        ("conv2", "conv2", 0.0, math.inf),
    ]
    assert not r.attention_fallback and "gradient methods" in r.attention_note
    assert [m.method for m in r.attention] == ["saliency", "gradcam"]
    assert all(s == pytest.approx(1.0) for m in r.attention for s in m.spearman)
    assert "generated probe set: 8 random images" in r.inputs
    json.dumps(r.to_json(), allow_nan=False)  # strict JSON: inf written as a string


def test_the_probe_set_is_seeded(base: Model) -> None:
    b = Model.from_proto(perturbed(tiny_cnn(), "conv2.weight"))
    r1, r2 = (diff(base, b, attention=False, seed=3) for _ in range(2))
    r3 = diff(base, b, attention=False, seed=4)
    assert r1.inputs == r2.inputs and "seed 3" in r1.inputs
    assert [t.rel_l2 for t in r1.tensors] == [t.rel_l2 for t in r2.tensors]
    assert [t.rel_l2 for t in r1.tensors] != [t.rel_l2 for t in r3.tensors]


# ------------------------------------------------------------------------------------ perturbed
@pytest.mark.parametrize(("weight", "first"), [("conv1.weight", "conv1"), ("conv2.weight", "conv2")])
def test_the_first_diverging_layer_is_the_perturbed_conv(base: Model, weight: str, first: str) -> None:
    b = Model.from_proto(perturbed(tiny_cnn(), weight))
    x = np.random.default_rng(5).standard_normal((4, 3, 32, 32)).astype(np.float32)
    r = diff(base, b, x, attention=False)
    assert r.first_divergence is not None
    assert (
        r.first_divergence.a,
        r.first_divergence.node,
        r.first_divergence.op_type,
    ) == (first, first, "Conv")
    before = TINY_TENSORS[: TINY_TENSORS.index(first)]
    assert all(t.rel_l2 == 0 for t in r.tensors if t.a in before)
    assert r.samples == 4 and r.inputs == "4 given input(s)"
    errors = {w.node_a: w.rel_l2 for w in r.weights}
    assert errors[first] == pytest.approx(0.3, rel=0.2)  # noise of 0.3 std on zero-mean weights
    assert all(v == 0 for k, v in errors.items() if k != first)
    checks = [f.check for f in r.findings]
    assert "diff.first-divergence" in checks
    (flag,) = [f for f in r.findings if f.check == "diff.first-divergence"]
    assert flag.tensor == first and flag.severity == "warning"


def test_threshold_is_a_parameter(base: Model) -> None:
    b = Model.from_proto(perturbed(tiny_cnn(), "conv2.weight", scale=0.01))
    loose = diff(base, b, attention=False, threshold=0.5)
    tight = diff(base, b, attention=False, threshold=1e-4)
    assert loose.first_divergence is None
    assert tight.first_divergence is not None and tight.first_divergence.a == "conv2"


# ------------------------------------------------------------------------------------ renamed
def test_a_renamed_copy_is_matched_by_position(base: Model) -> None:
    proto, names = renamed(tiny_cnn())
    b = Model.from_proto(proto)
    assert not set(TINY_TENSORS) & set(b.graph.tensor_names())
    r = diff(base, b)
    assert [(t.a, t.b) for t in r.tensors] == [(n, names[n]) for n in TINY_TENSORS]
    assert all(t.matched_by == "position" for t in r.tensors)
    assert all(t.max_abs == 0 for t in r.tensors)
    assert r.unmatched == () and r.findings == ()
    assert [(w.node_a, w.node_b, w.rel_l2) for w in r.weights] == [
        ("conv1", "node0", 0.0),
        ("conv2", "node3", 0.0),
    ]
    gradcam = next(m for m in r.attention if m.method == "gradcam")
    assert (gradcam.layer_a, gradcam.layer_b) == ("relu2", names["relu2"])
    assert all(s == pytest.approx(1.0) for m in r.attention for s in m.spearman)


def test_matching_without_a_run_uses_shape_inference(base: Model) -> None:
    proto, names = renamed(tiny_cnn())
    m = match_tensors(base, Model.from_proto(proto))
    assert [(p.a, p.b) for p in m.pairs] == [(n, names[n]) for n in TINY_TENSORS]
    assert m.inputs == (("input", names["input"]),) and m.outputs == (("logits", names["logits"]),)


# ------------------------------------------------------------------------------------ quantized
def test_dynamic_quantization_conv_integer(zoo: dict[str, Path]) -> None:
    a, b = load(zoo["fp32"]), load(zoo["dynamic"])
    assert {"ConvInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in b.graph.nodes}
    r = diff(a, b)
    # Names survive dynamic quantization; ConvInteger + Cast + Mul + Add is one Conv.
    assert [t.a for t in r.tensors] == TINY_TENSORS and all(t.a == t.b for t in r.tensors)
    assert all(t.rel_l2 < 0.03 and t.cosine > 0.999 for t in r.tensors)
    assert r.outputs[0].top1 == 1.0
    assert [(w.node_a, w.op_b) for w in r.weights] == [
        ("conv1", "ConvInteger"),
        ("conv2", "ConvInteger"),
    ]
    for w in r.weights:
        assert 0 < w.rel_l2 < 0.02 and w.snr_db > 35
        assert "integer units" in (w.note or "")
    assert r.attention_fallback
    assert [m.method for m in r.attention] == ["occlusion", "rise"] and all(m.forward_only for m in r.attention)
    assert "forward-only" in r.attention_note and "DynamicQuantizeLinear" in r.attention_note
    assert all(m.mean > 0.9 for m in r.attention)
    assert "diff.attention-fallback" in [f.check for f in r.findings]


def test_static_qdq_quantization(zoo: dict[str, Path]) -> None:
    a, b = load(zoo["fp32"]), load(zoo["qdq"])
    r = diff(a, b)
    pairs = {t.a: (t.b, t.matched_by) for t in r.tensors}
    # The quantizer folds each Relu into its Conv, whose output takes the Relu's name: the
    # conv output pairs by position, the Relu with the clipping QuantizeLinear/DequantizeLinear.
    assert pairs["conv1"] == ("relu1", "position")
    assert pairs["relu1"] == ("relu1_DequantizeLinear_Output", "position")
    assert pairs["pool1"] == ("pool1", "name")
    assert set(pairs) == set(TINY_TENSORS)
    assert all(t.rel_l2 < 0.1 and t.cosine > 0.99 for t in r.tensors)
    assert r.outputs[0].top1 == 1.0
    assert [w.node_a for w in r.weights] == ["conv1", "conv2"]
    assert all(0 < w.rel_l2 < 0.02 and "DequantizeLinear" in (w.note or "") for w in r.weights)
    assert r.attention_fallback and "QuantizeLinear" in r.attention_note


def test_static_qoperator_quantization_qlinearconv(zoo: dict[str, Path]) -> None:
    a, b = load(zoo["fp32"]), load(zoo["qoperator"])
    assert "QLinearConv" in {n.op_type for n in b.graph.nodes}
    r = diff(a, b)
    # Only the input and the dequantized logits are float in B; the rest is listed with why.
    assert [(t.a, t.b) for t in r.tensors] == [("input", "input"), ("logits", "logits")]
    assert r.outputs[0].drift.rel_l2 < 0.1 and r.outputs[0].top1 == 1.0
    reasons = {u.tensor: u.reason for u in r.unmatched if u.model == "A"}
    assert set(reasons) == set(TINY_TENSORS) - {"input", "logits"}
    assert "not both float" in reasons["pool1"]
    assert [(w.node_a, w.op_b) for w in r.weights] == [
        ("conv1", "QLinearConv"),
        ("conv2", "QLinearConv"),
    ]
    assert all(0 < w.rel_l2 < 0.02 and w.snr_db > 35 for w in r.weights)
    assert r.attention_fallback and all(m.forward_only for m in r.attention)
    assert "diff.unmatched" in [f.check for f in r.findings]


def test_fp16_weights(zoo: dict[str, Path]) -> None:
    a, b = load(zoo["fp32"]), load(zoo["fp16"])
    r = diff(a, b)
    assert [t.a for t in r.tensors] == TINY_TENSORS
    assert all(t.rel_l2 < 1e-3 for t in r.tensors)
    assert r.first_divergence is None and r.outputs[0].top1 == 1.0
    assert all(1e-5 < w.rel_l2 < 1e-3 and w.snr_db > 60 for w in r.weights)
    assert not r.attention_fallback  # Cast is differentiable: the gradient methods run
    assert all(m.mean > 0.95 for m in r.attention)


# ------------------------------------------------------------------------------------ attention
def _masked_linear(left: bool) -> Model:
    """logits = W . GAP(x * mask) + b with a bias that makes class 0 win on every input; the
    mask keeps the left (or right) half of the image, so the evidence differs, not the answer."""
    mask = np.zeros((1, 1, 8, 8), np.float32)
    mask[..., :4] = 1.0 if left else 0.0
    mask[..., 4:] = 0.0 if left else 1.0
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Mul", ["input", "mask"], ["masked"], name="mask"),
        helper.make_node("Relu", ["masked"], ["act"], name="act"),
        helper.make_node("GlobalAveragePool", ["act"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        numpy_helper.from_array(mask, "mask"),
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([100, 0, 0, 0], np.float32), "b"),
    ]
    g = helper.make_graph(
        nodes,
        "masked",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    return Model.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


def test_different_evidence_is_flagged_even_when_top1_agrees() -> None:
    x = np.abs(np.random.default_rng(1).standard_normal((3, 3, 8, 8))).astype(np.float32) + 0.5
    r = diff(_masked_linear(True), _masked_linear(False), x)
    assert r.outputs[0].top1 == 1.0
    assert not r.attention_fallback
    assert all(m.mean < 0 for m in r.attention)  # the maps are anti-correlated
    drift = [f for f in r.findings if f.check == "diff.attention-drift"]
    assert {f.evidence["method"] for f in drift} == {"saliency", "gradcam"}
    assert all("although the top-1 class agrees" in f.message for f in drift)
    lenient = diff(_masked_linear(True), _masked_linear(False), x, min_spearman=-1.0)
    assert "diff.attention-drift" not in [f.check for f in lenient.findings]


@pytest.mark.parametrize(
    ("x", "y", "want"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [1, 4, 9, 16], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 1, 2, 3], [1, 1, 2, 3], 1.0),
        ([2, 2, 2, 2], [5, 5, 5, 5], 1.0),
    ],
)
def test_spearman_known_answers(x: list[float], y: list[float], want: float) -> None:
    assert spearman(np.array(x), np.array(y)) == pytest.approx(want)


def test_spearman_of_one_constant_map_is_nan() -> None:
    assert math.isnan(spearman(np.zeros(4), np.arange(4.0)))


# ------------------------------------------------------------------------------------ CLI
def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    # The lead registers the subcommand in cli/main.py; until then the test adds it.
    if "diff" not in cli_main.COMMANDS:
        monkeypatch.setitem(cli_main.COMMANDS, "diff", cli_diff)
    return cli_main.main(argv)


def test_cli_end_to_end_with_inputs(
    zoo: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "diff.json"
    code = _main(
        [
            "diff",
            str(zoo["fp32"]),
            str(zoo["qdq"]),
            "-q",
            "--input",
            str(tmp_path / "x.npy"),
            "--json",
            str(out),
            "--threshold",
            "0.05",
        ],
        monkeypatch,
    )
    text = capsys.readouterr().out
    assert code == 0
    assert text.index("outputs") < text.index("first diverging layer") < text.index("weights") < text.index("attention")
    assert "forward-only methods" in text and "no --input given" not in text
    data = json.loads(out.read_text())
    assert data["samples"] == 3 and data["threshold"] == 0.05
    assert data["outputs"][0]["k"] == 5 and 0.0 <= data["outputs"][0]["top1"] <= 1.0
    assert [w["node_a"] for w in data["weights"]] == ["conv1", "conv2"]
    assert data["attention"]["fallback"] is True
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_cli_without_inputs_says_it_generated_a_probe_set(
    zoo: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "d.json"
    code = _main(
        [
            "diff",
            str(zoo["fp32"]),
            str(zoo["fp16"]),
            "--json",
            str(out),
            "--methods",
            "saliency",
        ],
        monkeypatch,
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "generated probe set: 8 random images" in captured.out and "no --input given" in captured.out
    assert "probe set" in captured.err  # the progress line says so too
    data = json.loads(out.read_text())
    assert data["samples"] == 8 and [m["method"] for m in data["attention"]["methods"]] == ["saliency"]
    assert data["first_divergence"] is None


def test_cli_refuses_models_with_different_inputs(
    zoo: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from .models import two_input_model

    other = tmp_path / "two.onnx"
    onnx.save(two_input_model(), other)
    code = _main(["diff", str(zoo["fp32"]), str(other), "-q"], monkeypatch)
    err = capsys.readouterr().err
    assert code == 1
    assert "error:" in err and "hint:" in err and "Traceback" not in err
