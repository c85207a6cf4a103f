"""The command line: output, exit codes, error messages without tracebacks, atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxviz.cli.main import main
from tests import models


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(models.tiny_cnn(), path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("inspect", "report", "demo"):
        assert command in out


def test_inspect_table_and_json(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", str(tiny))
    assert code == 0
    assert "Conv" in out and "MACs" in out and "input" in out
    code, out, _ = run(capsys, "inspect", str(tiny), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["total_macs"] > 0
    assert [t["name"] for t in data["inputs"]] == ["input"]
    assert any(layer["op_type"] == "Conv" for layer in data["layers"])


def test_inspect_resolves_dynamic_dims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dyn.onnx"
    onnx.save(models.dynamic_spatial(), path)
    code, out, _ = run(capsys, "inspect", str(path), "--json")
    assert json.loads(out)["unknown_macs"]
    code, out, _ = run(capsys, "inspect", str(path), "--json", "--input-shape", "1x3x64x48")
    data = json.loads(out)
    assert code == 0 and not data["unknown_macs"] and data["total_macs"] > 0


@pytest.mark.parametrize(
    "content, words",
    [
        (b"garbage bytes that are not a protobuf \xff\xfe" * 8, "not an ONNX model"),
        (b"", "empty"),
    ],
)
def test_bad_model_file_gives_error_and_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    code, out, err = run(capsys, "inspect", str(path))
    assert code == 1
    assert "error: " in err and words in err
    assert "hint: " in err
    assert "Traceback" not in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "inspect", "/nonexistent/model.onnx")
    assert code == 1 and "does not exist" in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a model" * 10)
    from onnxviz.errors import ModelLoadError

    with pytest.raises(ModelLoadError):
        main(["inspect", str(path), "--debug"])


def test_hostile_names_are_printed_inert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hostile.onnx"
    onnx.save(models.hostile_names(), path)
    code, out, _ = run(capsys, "inspect", str(path))
    assert code == 0
    assert "\x1b" not in out
    for line in out.splitlines():
        assert "\r" not in line


def test_report_with_inputs_and_json(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(img)
    out_html = tmp_path / "r.html"
    out_json = tmp_path / "r.json"
    code, _, err = run(capsys, "report", str(tiny), "--input", str(img), "-o", str(out_html), "--json", str(out_json), "-q")
    assert code == 0, err
    html = out_html.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html
    data = json.loads(out_json.read_text())
    assert data
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_report_failure_leaves_no_partial_file(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_html = tmp_path / "r.html"
    out_html.write_text("previous report")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code, _, err = run(capsys, "report", str(tiny), "--input", str(bad), "-o", str(out_html), "-q")
    assert code == 1 and "error:" in err and "bad.png" in err
    assert out_html.read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "r.html", "tiny.onnx"]


def test_wrong_channel_count_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path) -> None:
    arr = tmp_path / "x.npy"
    np.save(arr, np.zeros((1, 5, 32, 32), np.float32))
    code, _, err = run(capsys, "report", str(tiny), "--input", str(arr), "-o", str(tmp_path / "r.html"), "-q")
    assert code == 1 and "channel" in err.lower()


def test_nan_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path) -> None:
    arr = tmp_path / "x.npy"
    np.save(arr, np.full((1, 3, 32, 32), np.nan, np.float32))
    code, _, err = run(capsys, "report", str(tiny), "--input", str(arr), "-o", str(tmp_path / "r.html"), "-q")
    assert code == 1 and "NaN" in err


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "gradcam", "occlusion"])
def test_explain_writes_panel_npy_and_json(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(img)
    panel, npy, js = tmp_path / "p.png", tmp_path / "a.npy", tmp_path / "a.json"
    code, _, err = run(
        capsys, "explain", str(tiny), "--input", str(img), "--input", str(img), "--method", method,
        "-o", str(panel), "--save-npy", str(npy), "--json", str(js), "--param", "batch_size=8", "-q",
    )
    assert code == 0, err
    assert Image.open(panel).size[0] > 224
    arr = np.load(npy)
    data = json.loads(js.read_text())["explanations"][0]
    assert data["method"] == method and data["variant"]
    if method == "gradcam":
        assert arr.shape == (2, 16, 16)  # the layer's spatial map before upsampling
        assert data["layer"]
    else:
        assert arr.shape == (2, 3, 32, 32)  # exactly the model input's shape
    code, _, _ = run(capsys, "explain", str(tiny), "--input", str(img), "--method", method,
                     "--save-npy", str(npy), "--upsampled", "-o", str(panel), "-q")
    assert code == 0 and np.load(npy).shape == (1, 32, 32)


def test_explain_top_k_and_errors(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    code, _, err = run(capsys, "explain", str(tiny), "--input", str(img), "--top-k", "3",
                       "--save-npy", str(tmp_path / "k.npy"), "-o", str(tmp_path / "k.png"), "-q")
    assert code == 0, err
    assert np.load(tmp_path / "k.npy").shape == (3, 1, 3, 32, 32)
    code, _, err = run(capsys, "explain", str(tiny), "--input", str(img), "--target", "99", "-o", str(tmp_path / "x.png"))
    assert code == 1 and "out of range" in err
    code, _, err = run(capsys, "explain", str(tiny), "--input", str(img), "--param", "nonsense", "-o", str(tmp_path / "x.png"))
    assert code == 1 and "--param" in err
    code, _, err = run(capsys, "explain", str(tiny), "--input", str(img), "--method", "gradcam",
                       "--layer", "nope", "-o", str(tmp_path / "x.png"))
    assert code == 1 and "error:" in err and "Traceback" not in err


def test_explain_trust_figures(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)).save(img)
    js = tmp_path / "t.json"
    code, _, err = run(capsys, "explain", str(tiny), "--input", str(img), "--method", "integrated_gradients",
                       "--trust", "--json", str(js), "-o", str(tmp_path / "t.png"), "-q")
    assert code == 0, err
    trust = json.loads(js.read_text())["explanations"][0]["trust"]
    assert trust["completeness_error"][0] < 0.01
    assert 0 <= trust["deletion_auc"][0] <= 1 and 0 <= trust["insertion_auc"][0] <= 1
    assert trust["randomization_verdict"] in ("trustworthy", "insensitive")


def test_report_all_tensors(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arr = tmp_path / "x.npy"
    np.save(arr, np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "r.html"
    code, _, err = run(capsys, "report", str(tiny), "--input", str(arr), "--tensors", "all", "--methods", "none",
                       "--featurevis", "none", "-o", str(out), "-q")
    assert code == 0, err
    # every rank-4 intermediate: conv1, relu1, pool1, conv2, relu2, gap
    assert out.read_text().count('class="panel feature-map"') == 6


def test_an_op_onnxruntime_cannot_run_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from onnx import helper

    proto = models.tiny_cnn()
    proto.graph.node.append(helper.make_node("Frobnicate", ["logits"], ["odd"], name="vendor_node", domain="vendor.x"))
    proto.graph.output.append(helper.make_tensor_value_info("odd", onnx.TensorProto.FLOAT, ["N", 10]))
    proto.opset_import.append(helper.make_opsetid("vendor.x", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(proto, path)
    arr = tmp_path / "x.npy"
    np.save(arr, np.zeros((1, 3, 32, 32), np.float32))
    code, _, err = run(capsys, "report", str(path), "--input", str(arr), "-o", str(tmp_path / "r.html"), "-q")
    assert code == 1 and "Traceback" not in err
    assert "Frobnicate" in err and "hint:" in err
    code, out, _ = run(capsys, "inspect", str(path))  # what still works
    assert code == 0 and "Frobnicate" in out


def test_explain_a_region_of_a_segmentation_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "seg.onnx"
    onnx.save(models.old_opset_model(opset=9), path)  # output 'prob' is (1, 4, 32, 32): a per-pixel class map
    arr = tmp_path / "x.npy"
    np.save(arr, np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    js, npy = tmp_path / "r.json", tmp_path / "r.npy"
    code, _, err = run(capsys, "explain", str(path), "--input", str(arr), "--method", "gradient",
                       "--target-region", "1,0:8,0:8", "--save-npy", str(npy), "--json", str(js),
                       "-o", str(tmp_path / "r.png"), "-q")
    assert code == 0, err
    from onnxviz import load
    from onnxviz.targets import region_target

    m = load(path)
    x = np.load(arr)
    seed = region_target(m.run(x)["prob"].shape, "1,0:8,0:8")
    assert seed.sum() == 64
    np.testing.assert_allclose(np.load(npy), m.gradient(x, target=seed), rtol=1e-5, atol=1e-7)
    code, _, err = run(capsys, "explain", str(path), "--input", str(arr), "--target-region", "9",
                       "-o", str(tmp_path / "r.png"), "-q")
    assert code == 1 and "out of range" in err
