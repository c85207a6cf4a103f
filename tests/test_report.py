"""The HTML report: escaping, determinism, a gold file, atomic writes, JSON, and ResNet-50 size.

Gold file
---------
``test_gold_tiny_report`` compares the rendered report of a tiny hand-built model (with two
inputs) to ``tests/gold/report_tiny.html``. Volatile parts are scrubbed before the comparison:
the footer (library versions, command) is replaced by fixed values, and every PNG data URI by
``[PNG WxH MODE]`` (image content is checked by the other tests; PNG bytes depend on the zlib
build). After an intended change to the report, regenerate the gold file with::

    ONNXVIZ_UPDATE_GOLD=1 python -m pytest tests/test_report.py -k gold

and review the diff of ``tests/gold/report_tiny.html`` before committing it.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxviz import imaging
from onnxviz.errors import InputError, ReportError
from onnxviz.featuremaps import default_feature_tensors
from onnxviz.inputs import PreparedInputs, Preprocess
from onnxviz.layers import summarize
from onnxviz.model import Model, load
from onnxviz.report.data import (
    FeatureMapsSection,
    Footer,
    KernelsSection,
    OverviewSection,
    ReportData,
    build_report,
)
from onnxviz.report.html import render_html, write_html

GOLD = Path(__file__).parent / "gold" / "report_tiny.html"
SCRIPT = "<script>alert(1)</script>"
TEMPLATE = "{{ 7*7 }}"
QUOTES = "\"double\" 'single'"
RESNET50 = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"


# ------------------------------------------------------------------------------------------
# models and inputs


def _conv(nodes, inits, rng, x, y, c_in, c_out, k, *, group=1, name=None, pad=True):
    w = rng.standard_normal((c_out, c_in // group, k, k)) * np.sqrt(2.0 / (c_in // group * k * k))
    inits.append(numpy_helper.from_array(w.astype(np.float32), f"{y}.weight"))
    inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(c_out)).astype(np.float32), f"{y}.bias"))
    p = (k - 1) // 2 if pad else 0
    nodes.append(
        helper.make_node(
            "Conv", [x, f"{y}.weight", f"{y}.bias"], [y], name=name or y,
            kernel_shape=[k, k], pads=[p, p, p, p], group=group,
        )
    )
    return y


def tiny_model(batch: int | str = "N", *, names: dict[str, str] | None = None) -> onnx.ModelProto:
    """Conv3x3(3->4) Relu Conv1x1(4->6) Relu depthwise Conv3x3(6) Conv3x3(6->5) Relu GAP Gemm Softmax.

    One convolution per kernel layout of the report (colour first layer, 1x1 matrix, depthwise,
    grid). ``names`` renames tensors/nodes (used to build the hostile model).
    """
    n = names or {}
    rng = np.random.default_rng(0)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x = n.get("input", "input")
    h = _conv(nodes, inits, rng, x, n.get("conv1", "conv1"), 3, 4, 3, name=n.get("conv1_node"))
    nodes.append(helper.make_node("Relu", [h], [n.get("relu1", "relu1")], name=n.get("relu1_node", "relu1")))
    h = _conv(nodes, inits, rng, n.get("relu1", "relu1"), "conv2", 4, 6, 1)
    nodes.append(helper.make_node("Relu", [h], ["relu2"], name="relu2"))
    h = _conv(nodes, inits, rng, "relu2", "dw", 6, 6, 3, group=6)
    h = _conv(nodes, inits, rng, h, "conv3", 6, 5, 3)
    nodes.append(helper.make_node("Relu", [h], ["relu3"], name="relu3"))
    nodes.append(helper.make_node("GlobalAveragePool", ["relu3"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    inits.append(numpy_helper.from_array(rng.standard_normal((3, 5)).astype(np.float32), "fc.weight"))
    inits.append(numpy_helper.from_array(np.zeros(3, np.float32), "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    out = n.get("output", "probs")
    nodes.append(helper.make_node("Softmax", ["logits"], [out], name=n.get("softmax_node", "softmax"), axis=1))
    graph = helper.make_graph(
        nodes,
        n.get("graph", "tiny"),
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, 3])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name=n.get("producer", "handmade"),
    )
    model.ir_version = 7
    model.doc_string = n.get("doc", "A tiny CNN with one convolution per kernel layout.")
    helper.set_model_props(model, {"classes": json.dumps(["cat", "dog", n.get("class", "bird")]), "author": n.get("author", "tests")})
    return model


def hostile_model() -> onnx.ModelProto:
    """``tiny_model`` whose node, tensor, graph and metadata strings are injection attempts."""
    return tiny_model(
        names={
            "input": f"in {SCRIPT} {QUOTES}",
            "conv1": f"conv {TEMPLATE} {QUOTES}",
            "conv1_node": f"conv node {SCRIPT}",
            "relu1": f"relu {SCRIPT} & {TEMPLATE}",
            "relu1_node": f"relu node {TEMPLATE}",
            "output": f"out {TEMPLATE}",
            "softmax_node": f"softmax {SCRIPT}",
            "graph": f"graph {SCRIPT} {TEMPLATE}",
            "producer": f"producer {SCRIPT}",
            "doc": f"doc {SCRIPT} {TEMPLATE} {QUOTES}",
            "class": f"class {SCRIPT}",
            "author": f"{SCRIPT} {TEMPLATE} {QUOTES}",
        }
    )


def prepared(model: Model, x: np.ndarray, sources: list[str]) -> PreparedInputs:
    """Inputs as the input pipeline hands them over (imagenet preprocessing record)."""
    info = model.inputs[0]
    values = {
        "feeds": {info.name: x},
        "preprocess": Preprocess(layout="NCHW", channels=x.shape[1], size=tuple(x.shape[2:]), preset="imagenet"),
        "sources": sources,
        "batch_size": int(x.shape[0]),
        "image_input": info.name,
    }
    fields = {f.name for f in dataclasses.fields(PreparedInputs)}
    return PreparedInputs(**{k: v for k, v in values.items() if k in fields})


def tiny_inputs(model: Model, batch: int = 2) -> PreparedInputs:
    x = np.random.default_rng(1).standard_normal((batch, 3, 8, 8)).astype(np.float32)
    return prepared(model, x, [f"img{i}.png" for i in range(batch)])


def _strip_images(html: str) -> str:
    def describe(m: re.Match[str]) -> str:
        im = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
        return f"[PNG {im.width}x{im.height} {im.mode}]"

    return re.sub(r"data:image/png;base64,([A-Za-z0-9+/=]+)", describe, html)


# ------------------------------------------------------------------------------------------
# escaping and determinism


def test_hostile_strings_are_escaped_everywhere() -> None:
    model = Model.from_proto(hostile_model())
    data = build_report(model, inputs=tiny_inputs(model), command=f"onnxviz report {SCRIPT}")
    html = render_html(data)
    assert "<script>alert(1)" not in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # graph name (title), metadata, doc string, producer, node/tensor names, class names, command
    assert html.count(escaped) >= 10
    assert f"<title>graph {escaped} {TEMPLATE} · onnxviz report</title>" in html
    assert f"<td>class {escaped}</td>" in html  # a class name from metadata, in the predictions
    assert "&#34;class &lt;script&gt;" in html  # the raw metadata JSON, quotes escaped too
    # The template expression is shown as text, never evaluated.
    assert TEMPLATE in html
    assert f"graph {escaped} 49" not in html and "out 49" not in html
    # Quotes cannot break out of attributes: they are always entity-escaped.
    assert QUOTES not in html
    assert "&#34;double&#34; &#39;single&#39;" in html
    # The only scripts are onnxviz's own inline one.
    assert html.count("<script>") == 1


def test_render_is_deterministic() -> None:
    proto = tiny_model()
    first = render_html(build_report(Model.from_proto(proto), inputs=tiny_inputs(Model.from_proto(proto))))
    second = render_html(build_report(Model.from_proto(proto), inputs=tiny_inputs(Model.from_proto(proto))))
    assert first == second
    assert "Generated by onnxviz." in first  # no generation time unless asked for


def test_timestamp_only_on_request() -> None:
    model = Model.from_proto(tiny_model())
    assert build_report(model).footer.generated is None
    stamped = build_report(model, timestamp=True).footer.generated
    assert stamped is not None and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", stamped)


def test_gold_tiny_report() -> None:
    model = Model.from_proto(tiny_model())
    data = build_report(model, inputs=tiny_inputs(model), command="VOLATILE")
    data = dataclasses.replace(data, footer=Footer(versions=(("onnxviz", "X"),), command="onnxviz report tiny.onnx", generated=None))
    html = _strip_images(render_html(data))
    if os.environ.get("ONNXVIZ_UPDATE_GOLD") == "1":
        GOLD.parent.mkdir(exist_ok=True)
        GOLD.write_text(html, encoding="utf-8")
    assert GOLD.exists(), "no gold file: run with ONNXVIZ_UPDATE_GOLD=1 once"
    assert html == GOLD.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------
# content


def test_kernel_layouts_and_selection_by_norm() -> None:
    model = Model.from_proto(tiny_model())
    kernels = build_report(model, max_channels=2).section("kernels")
    assert isinstance(kernels, KernelsSection)
    assert [k.layout for k in kernels.layers] == ["color", "matrix", "depthwise", "grid"]
    first, matrix, dw, grid = kernels.layers
    # First layer: 4 RGB 3x3 filters upscaled 16x to crisp 48-px blocks, 2-px white gaps, 2x2.
    assert first.image.shape == (2 * 48 + 2, 2 * 48 + 2, 3)
    tile = first.image[:48, :48]
    assert np.array_equal(tile, np.repeat(np.repeat(tile[::16, ::16], 16, 0), 16, 1))
    w = numpy_helper.to_array(next(t for t in model.proto.graph.initializer if t.name == "conv1.weight"))
    expected = imaging.kernel_images(w)[0]
    np.testing.assert_allclose(tile[::16, ::16], expected)
    # The 1x1 layer is a 6x4 weight matrix (64-channel limit), 16 px per cell, not 1x1 tiles.
    assert matrix.image.shape == (6 * 16, 4 * 16, 3)
    # Depthwise: one row of the 2 strongest of 6 filters; deeper grid: 2 of 5 filters x 2 of 6 channels.
    assert dw.image.shape[0] == 48 and len(dw.filters_shown) == 2
    w3 = numpy_helper.to_array(next(t for t in model.proto.graph.initializer if t.name == "conv3.weight"))
    norms = np.sqrt((w3.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))
    assert grid.filters_shown == tuple(sorted(np.argsort(-norms)[:2]))
    assert "showing 2 of 5 filters (rows) and 2 of 6 input channels (columns), chosen by L2 norm" in grid.caption
    assert grid.image.shape == (2 * 24 + 2, 2 * 24 + 2)
    assert grid.stats.count == w3.size and grid.stats.bias_min is not None
    assert grid.source == "initializer 'conv3.weight'"


def test_fixed_batch_of_one_runs_per_sample_with_the_same_result() -> None:
    dynamic = Model.from_proto(tiny_model("N"))
    fixed = Model.from_proto(tiny_model(1))
    x = np.random.default_rng(3).standard_normal((3, 3, 8, 8)).astype(np.float32)
    a = build_report(dynamic, inputs=prepared(dynamic, x, ["x.npy"]), top_k=3)
    b = build_report(fixed, inputs=prepared(fixed, x, ["x.npy"]), top_k=3)
    fa, fb = a.section("feature_maps"), b.section("feature_maps")
    assert isinstance(fa, FeatureMapsSection) and isinstance(fb, FeatureMapsSection)
    assert len(fa.maps) == len(fb.maps) == 4
    for ma, mb in zip(fa.maps, fb.maps):
        assert [r.channel for r in ma.ranking] == [r.channel for r in mb.ranking]
        np.testing.assert_allclose([r.mean for r in ma.ranking], [r.mean for r in mb.ranking], rtol=1e-5, atol=1e-7)
        assert ma.zero_share == pytest.approx(mb.zero_share) and ma.maximum == pytest.approx(mb.maximum, rel=1e-5)
        assert [g.label for g in mb.grids] == ["x.npy[0]", "x.npy[1]", "x.npy[2]"]
        for ga, gb in zip(ma.grids, mb.grids):
            np.testing.assert_allclose(ga.image, gb.image, atol=1e-5)
    pa, pb = a.to_json()["sections"][3], b.to_json()["sections"][3]
    assert pa["kind"] == "predictions" and pa["outputs"][0]["per_input"][2]["top"][0]["label"] in ("cat", "dog", "bird")
    assert [p["top"][0]["index"] for p in pa["outputs"][0]["per_input"]] == [p["top"][0]["index"] for p in pb["outputs"][0]["per_input"]]


def test_json_has_totals_and_no_images() -> None:
    model = Model.from_proto(tiny_model())
    data = build_report(model, inputs=tiny_inputs(model))
    doc = json.loads(json.dumps(data.to_json(), allow_nan=False))
    overview = doc["sections"][0]
    assert overview["kind"] == "overview"
    summary = summarize(model)
    assert overview["totals"]["params"] == summary.total_params == 3 * 4 * 9 + 4 + 4 * 6 + 6 + 6 * 9 + 6 + 6 * 5 * 9 + 5 + 15 + 3
    assert overview["totals"]["macs"] == summary.total_macs > 0
    assert overview["totals"]["flops"] == 2 * summary.total_macs
    assert [s["kind"] for s in doc["sections"]] == [
        "overview", "layers", "inputs", "predictions", "kernels", "feature_maps", "attributions"
    ]
    attributions = doc["sections"][6]
    assert [p["method"] for p in attributions["panels"]] == ["saliency", "gradcam", "guided_gradcam"]
    assert all(p["variant"] and not p["error"] for p in attributions["panels"])
    assert "image" not in _keys(doc)
    assert doc["sections"][4]["layers"][0]["stats"]["count"] == 108


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


# ------------------------------------------------------------------------------------------
# writing


def test_write_is_atomic_when_rendering_fails_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Model.from_proto(tiny_model())
    data = build_report(model, inputs=tiny_inputs(model))
    target = tmp_path / "report.html"
    write_html(data, target)
    good = target.read_bytes()
    assert good.startswith(b"<!DOCTYPE html>") and good.rstrip().endswith(b"</html>")

    calls = {"n": 0}
    real = imaging.data_uri

    def failing(img: np.ndarray) -> str:
        calls["n"] += 1
        if calls["n"] > 3:
            raise InputError("simulated failure while encoding an image")
        return real(img)

    monkeypatch.setattr(imaging, "data_uri", failing)
    with pytest.raises(ReportError, match="simulated failure"):
        write_html(dataclasses.replace(data, title="changed"), target)
    assert calls["n"] == 4  # it failed mid-way, after part of the page was written
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    with pytest.raises(ReportError, match="does not exist"):
        write_html(data, tmp_path / "missing" / "report.html")


# ------------------------------------------------------------------------------------------
# a real model


@pytest.mark.slow
def test_light_resnet50_report_with_two_inputs(tmp_path: Path) -> None:
    if not RESNET50.exists():
        pytest.skip("light_resnet50.onnx is not in this onnx wheel")
    model = load(RESNET50)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    data = build_report(model, inputs=prepared(model, x, ["a.png", "b.png"]), methods=["gradcam"])
    path = write_html(data, tmp_path / "resnet50.html")
    size = path.stat().st_size
    assert size < 30 * 2**20
    html = path.read_text(encoding="utf-8")
    expected_maps = len(default_feature_tensors(model.graph))
    assert html.count('class="panel kernel-layer"') == 53
    assert html.count('class="panel feature-map"') == expected_maps == 71
    kernels, fmaps, overview = data.section("kernels"), data.section("feature_maps"), data.section("overview")
    assert isinstance(kernels, KernelsSection) and isinstance(fmaps, FeatureMapsSection)
    assert isinstance(overview, OverviewSection)
    assert len(kernels.layers) == 53 and kernels.layers[0].layout == "color"
    assert all(len(m.grids) == 2 and len(m.ranking) == 16 for m in fmaps.maps)
    assert overview.totals.params == 25_610_152
    assert "http://" not in html and "https://" not in html  # nothing external
    assert isinstance(data, ReportData)


def test_attribution_section_degrades_to_forward_only_methods() -> None:
    from tests import models

    m = Model.from_proto(models.tiny_cnn_with_unsupported_op())
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    data = build_report(m, inputs=prepared(m, x, ["a.npy", "b.npy"]), methods=["saliency", "occlusion"])
    section = data.section("attributions")
    assert section is not None
    saliency, occlusion = section.panels  # type: ignore[attr-defined]
    assert "Shrink" in saliency.error and "the_shrink" in saliency.error
    assert "onnxruntime" in saliency.error  # the hint says what still works
    assert not occlusion.error and len(occlusion.tiles) == 2
    assert "Could not run on this model" in render_html(data)


def test_sample_labels_are_file_names_unless_two_share_one() -> None:
    from onnxviz.report.data import _sample_labels

    assert _sample_labels(["/data/cats/a.png", "b.npy"], 2) == ["a.png", "b.npy"]
    assert _sample_labels(["x/a.png", "y/a.png"], 2) == ["x/a.png", "y/a.png"]
    assert _sample_labels(["/data/batch.npy"], 3) == ["batch.npy[0]", "batch.npy[1]", "batch.npy[2]"]
    assert _sample_labels(["a.png", "b.png"], 3) == ["sample 0", "sample 1", "sample 2"]
