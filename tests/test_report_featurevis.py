"""The report's feature-visualization section: tiles, kernels, patches, class models, settings,
determinism, escaping, degradation, and the ``report`` flags."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxviz.cli.main import main
from onnxviz.errors import TargetError
from onnxviz.inputs import PreparedInputs, Preprocess
from onnxviz.kernels import conv_kernels
from onnxviz.model import Model
from onnxviz.report.data import build_report
from onnxviz.report.featurevis import (
    FeatureVisOptions,
    FeatureVisSection,
    default_layers,
)
from onnxviz.report.html import render_html
from tests import models

QUICK = FeatureVisOptions(channels=3, steps=4)


def inputs_for(model: Model, batch: int = 2) -> PreparedInputs:
    info = model.inputs[0]
    pre = Preprocess.from_model(info)
    shape = [batch] + [d if isinstance(d, int) else 32 for d in info.shape[1:]]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return PreparedInputs({info.name: x}, pre, [f"img{i}.png" for i in range(batch)], batch, info.name)


def section_of(model: Model, prepared: PreparedInputs | None, opts: FeatureVisOptions = QUICK) -> FeatureVisSection:
    data = build_report(model, inputs=prepared, methods=[], featurevis=opts)
    s = data.section("featurevis")
    assert isinstance(s, FeatureVisSection)
    return s


def test_tiles_kernels_patches_and_class_models() -> None:
    model = Model.from_proto(models.tiny_cnn())
    prepared = inputs_for(model)
    s = section_of(model, prepared)
    assert [p.tensor for p in s.layers] == ["relu1", "relu2"] == default_layers(model.graph)
    acts = model.run(prepared.feeds, taps=["relu1", "relu2"])
    kernels = {k.output_tensor: k for k in conv_kernels(model)}
    for p, conv in zip(s.layers, ("conv1", "conv2")):
        assert not p.error and len(p.tiles) == 3 and p.channels_total == (8 if conv == "conv1" else 16)
        means = acts[p.tensor].mean(axis=(2, 3)).max(axis=0)
        # with inputs: the 3 channels most active on them, in index order
        assert [t.unit for t in p.tiles] == sorted(np.argsort(-means, kind="stable")[:3].tolist())
        for t in p.tiles:
            assert t.best_input == pytest.approx(float(means[t.unit]), rel=1e-5)
            assert t.ratio == pytest.approx(t.activation / t.best_input)
            assert t.patch is not None and "receptive field" in t.patch_caption
            w = kernels[conv].weight[t.unit]  # (C_in, 3, 3): a grid of 3x3 tiles, or RGB for conv1
            assert t.kernel is not None and (t.kernel.ndim == 3) == (w.shape[0] == 3)
            assert t.image.shape[:2] == (96, 96)
        assert "receptive field" in p.patch_note and p.op_type == "Relu"
    c = s.class_models
    assert c is not None and not c.error and len(c.tiles) == 3 and c.tensor == "logits"
    logits = model.run(prepared.feeds)["logits"]
    assert c.tiles[0].unit == int(np.argmax(logits[0]))  # the first input's top class comes first
    assert all(t.best_input == pytest.approx(float(logits[:, t.unit].max()), rel=1e-5) for t in c.tiles)
    assert "Simonyan" in c.patch_note
    settings = dict(s.settings)
    assert "4 steps" in settings["optimizer"] and "lr 0.05" in settings["optimizer"]
    assert settings["seed"] == "0" and settings["parametrization"].startswith("fft")
    assert settings["image size"].startswith("32x32") and settings["channels per layer"] == "3"
    assert "channel" in settings["objective"]


def test_render_is_deterministic_and_settings_are_shown() -> None:
    proto = models.tiny_cnn()
    pages = []
    for _ in range(2):
        model = Model.from_proto(proto)
        pages.append(render_html(build_report(model, inputs=inputs_for(model), methods=[], featurevis=QUICK)))
    assert pages[0] == pages[1]
    html = pages[0]
    section = html[html.index('id="featurevis"'):]
    assert "Feature visualization" in html and "Class models" in section
    assert section.count('class="thumb fv-tile"') == 2 * 3 + 3
    assert "Adam, lr 0.05, 4 steps" in section and "seed: 0" in section


def test_hostile_layer_names_are_escaped() -> None:
    model = Model.from_proto(models.hostile_names())
    html = render_html(build_report(model, inputs=inputs_for(model), methods=[], featurevis=QUICK))
    section = html[html.index('id="featurevis"'):]
    assert "<script>alert(1)" not in html
    assert "relu2 ünïcødé — 猫 🙂 &lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "relu {{ 7*7 }}" in section and "relu 49" not in section


def test_without_inputs_and_on_non_image_models() -> None:
    model = Model.from_proto(models.grayscale_cnn())
    s = section_of(model, None)
    assert s.class_models is None and "Without inputs" in s.note
    assert all(len(p.tiles) == 3 and p.tiles[0].patch is None and p.tiles[0].ratio is None for p in s.layers)
    assert [t.unit for t in s.layers[0].tiles] == [0, 1, 2]  # no inputs: the first channels
    assert s.layers[0].tiles[0].kernel is not None and s.layers[0].tiles[0].kernel.ndim == 2  # grey filter
    mlp = section_of(Model.from_proto(models.non_image_mlp()), None)
    assert mlp.layers == () and "needs an image input" in mlp.note
    render_html(build_report(Model.from_proto(models.non_image_mlp()), featurevis=QUICK))


def test_fallback_crop_without_receptive_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxviz.receptive", None)  # import fails as if the module were absent
    model = Model.from_proto(models.tiny_cnn())
    s = section_of(model, inputs_for(model), FeatureVisOptions(layers=("relu2",), channels=2, steps=2))
    (p,) = s.layers
    assert "fixed crop" in p.patch_note and "not its receptive field" in p.patch_note
    assert all("fixed 8px crop" in t.patch_caption and t.patch is not None for t in p.tiles)


def test_chosen_layers_nhwc_model_and_errors() -> None:
    model = Model.from_proto(models.tf2onnx_nhwc())
    s = section_of(model, inputs_for(model), FeatureVisOptions(layers=("model/conv2d/Relu:0",), channels=2, steps=2))
    assert [p.tensor for p in s.layers] == ["model/conv2d/Relu:0"] and len(s.layers[0].tiles) == 2
    # the model ends in Softmax: the class models use the pre-softmax scores
    assert s.class_models is not None and s.class_models.tensor == "model/dense/BiasAdd:0"
    with pytest.raises(TargetError, match="not a tensor computed from the input"):
        build_report(model, featurevis=FeatureVisOptions(layers=("nope",)))


def test_report_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(models.tiny_cnn(), path)
    arr = tmp_path / "x.npy"
    np.save(arr, np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "r.html"
    base = ["report", str(path), "--input", str(arr), "--methods", "none", "-o", str(out), "-q"]
    assert main([*base, "--featurevis-layers", "relu2", "--featurevis-channels", "2", "--featurevis-steps", "2"]) == 0
    html = out.read_text()
    assert len(re.findall(r'class="panel featurevis"', html)) == 2  # relu2 + class models
    assert main([*base, "--featurevis", "none"]) == 0
    assert 'id="featurevis"' not in out.read_text()
    assert main([*base, "--featurevis-layers", "relu7"]) == 1
    err = capsys.readouterr().err
    assert "error: layer 'relu7'" in err and "hint: candidates" in err


def test_auto_limit_skips_costly_runs_and_says_how_to_force_them() -> None:
    model = Model.from_proto(models.tiny_cnn())
    s = section_of(model, inputs_for(model), FeatureVisOptions(channels=3, steps=4, max_gmacs=1e-6))
    assert s.layers == () and s.class_models is None
    assert s.note.startswith("Skipped: the optimizations would take about") and "--featurevis on" in s.note
    html = render_html(build_report(model, methods=[], featurevis=FeatureVisOptions(max_gmacs=1e-6)))
    assert "--featurevis on" in html
