"""`onnxviz report` end to end on every kind of model issue 2 names: the onnx wheel's light models,
PyTorch exports (opsets 11-18, dynamic batch), a tf2onnx-style NHWC model, a Paddle-style model with
Constant weights, quantized models, a 1-channel model, several inputs and a non-image model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxviz.cli.main import main
from tests import models

BUILDERS = {
    "tiny_cnn": models.tiny_cnn,
    "tf2onnx_nhwc": models.tf2onnx_nhwc,
    "paddle_style_constants": models.paddle_style_constants,
    "constant_subgraph_weights": models.constant_subgraph_weights,
    "quantized_qdq": models.quantized_qdq,
    "quantized_qlinear": models.quantized_qlinear,
    "grayscale_cnn": models.grayscale_cnn,
    "dynamic_spatial": models.dynamic_spatial,
    "old_opset_model": models.old_opset_model,
    "hostile_names": models.hostile_names,
}


def _image(tmp_path: Path, name: str, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    path = tmp_path / name
    rgb = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _report(tmp_path: Path, model_path: Path, *inputs: str, extra: tuple[str, ...] = ()) -> str:
    out = tmp_path / "r.html"
    code = main(["report", str(model_path), *[a for i in inputs for a in ("--input", i)], "-o", str(out), "-q", *extra])
    assert code == 0
    html = out.read_text(encoding="utf-8")
    assert "https://" not in html and "http://" not in html
    return html


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_report_on_exporter_patterns(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.onnx"
    onnx.save(BUILDERS[name](), path)
    img1, img2 = _image(tmp_path, "a.png"), _image(tmp_path, "b.png", seed=1)
    html = _report(tmp_path, path, str(img1), str(img2), extra=("--featurevis", "none"))
    assert 'id="kernels"' in html and 'id="feature-maps"' in html and 'id="attributions"' in html
    assert "<script>alert(1)" not in html
    if name.startswith("quantized"):
        assert "dequantized" in html  # quantized weights are shown dequantized, and labelled so
        assert "Could not run on this model" in html  # gradients refused, forward-only still offered
    elif name == "old_opset_model":  # a segmentation-style head: CAMs need an explicit layer, and say so
        assert "Could not run on this model" in html and "pass --layer" in html
    else:
        assert "Could not run on this model" not in html


def test_report_on_several_inputs_and_non_image_models(tmp_path: Path) -> None:
    two = tmp_path / "two.onnx"
    onnx.save(models.two_input_model(), two)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "meta.npy", rng.standard_normal((2, 4)).astype(np.float32))
    img = _image(tmp_path, "a.png")
    html = _report(tmp_path, two, str(img), str(img), f"meta={tmp_path / 'meta.npy'}", extra=("--featurevis", "none"))
    assert "meta" in html
    mlp = tmp_path / "mlp.onnx"
    onnx.save(models.non_image_mlp(), mlp)
    np.save(tmp_path / "f.npy", rng.standard_normal((3, 16)).astype(np.float32))
    html = _report(tmp_path, mlp, str(tmp_path / "f.npy"), extra=("--featurevis", "none"))
    assert 'id="layers"' in html


@pytest.mark.parametrize("path", models.light_model_paths(), ids=lambda p: p.stem)
def test_report_on_every_light_model(path: Path, tmp_path: Path) -> None:
    img = _image(tmp_path, "a.png", size=(224, 224))
    html = _report(tmp_path, path, str(img), extra=("--methods", "gradcam", "--featurevis", "none"))
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(path).graph.node)
    assert html.count('class="panel kernel-layer"') == n_conv
    assert len(html) < 30 * 2**20


@pytest.mark.parametrize("opset", [11, 13, 17, 18])
def test_report_on_pytorch_exports(opset: int, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests import torch_models

    path = torch_models.export(torch_models.build("resnet"), tmp_path / f"resnet{opset}.onnx", opset=opset)
    imgs = [str(_image(tmp_path, f"{i}.png", size=(32, 32), seed=i)) for i in range(3)]
    html = _report(tmp_path, path, *imgs, extra=("--featurevis", "none"))
    assert re.search(r"Fed arrays.*?\[3, 3, 32, 32\]", html, re.S)  # dynamic batch: 3 images, one batch
    assert "Could not run on this model" not in html
