"""``onnxviz visualize`` and ``onnxviz dream`` end to end on the hand-built models.

The saved inputs are checked against onnxruntime (``Model.run``), independently of the numpy
engine that optimized them: they must reproduce the activations the JSON reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxviz.cli import dream, visualize
from onnxviz.cli import main as cli_main
from onnxviz.cli.visualize import GALLERY_TILE_PX, parse_units
from onnxviz.errors import InputError, TargetError
from onnxviz.model import load
from tests import models


@pytest.fixture(autouse=True)
def _commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subcommands, whether or not main.py registers them yet."""
    monkeypatch.setitem(cli_main.COMMANDS, "visualize", visualize)
    monkeypatch.setitem(cli_main.COMMANDS, "dream", dream)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def save(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.onnx"
    onnx.save(getattr(models, name)(), path)
    return path


CASES = [
    # model, layer, input shape after the batch axis
    ("tiny_cnn", "relu2", (3, 32, 32)),
    ("tf2onnx_nhwc", "model/conv2d_1/Relu:0", (32, 32, 3)),
    ("grayscale_cnn", "ReLU114_Output_0", (1, 28, 28)),
]


@pytest.mark.parametrize(("name", "layer", "shape"), CASES)
def test_gallery_npy_and_json_reproduce_the_activations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, layer: str, shape: tuple[int, ...]
) -> None:
    model_path = save(tmp_path, name)
    out, npy, js = tmp_path / "g.png", tmp_path / "x.npy", tmp_path / "v.json"
    code, _, err = run(
        capsys, "visualize", str(model_path), "--layer", layer, "--channels", "0,2,5", "--steps", "10",
        "--batch", "2", "-o", str(out), "--save-npy", str(npy), "--json", str(js),
    )
    assert code == 0, err
    x = np.load(npy)
    assert x.shape == (3, *shape) and x.dtype == np.float32
    data = json.loads(js.read_text())
    assert [r["unit"] for r in data["results"]] == [0, 2, 5]
    assert data["settings"]["steps"] == 10 and data["settings"]["seed"] == 0 and data["settings"]["batches"] == 2
    assert len(data["history"]["steps"]) == 10 and data["history"]["steps"][-1] == 9
    # onnxruntime on the saved inputs gives the reported activations (mean over space)
    act = load(model_path).run(x, taps=[layer])[layer]
    want = act[np.arange(3), [0, 2, 5]].mean(axis=(1, 2))
    np.testing.assert_allclose([r["activation"] for r in data["results"]], want, rtol=1e-4, atol=1e-6)
    # a labelled gallery: three tiles in a row, each upscaled, with a label strip underneath
    img = Image.open(out)
    side = shape[1] * int(np.ceil(GALLERY_TILE_PX / shape[1]))
    assert img.size == (3 * side + 2 * 4, side + 14)
    # progress about every 10% of the steps, on stderr
    assert err.count("batch 1/2 (channels 0..2): step ") == 10 and "batch 2/2 (channels 5): step 10/10" in err


def test_chunks_equal_one_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_path = save(tmp_path, "tiny_cnn")
    arrays = []
    for batch in ("1", "3"):
        npy = tmp_path / f"x{batch}.npy"
        code, _, err = run(
            capsys, "visualize", str(model_path), "--layer", "relu1", "--channels", "1-3", "--steps", "4",
            "--batch", batch, "-q", "-o", str(tmp_path / "g.png"), "--save-npy", str(npy),
        )
        assert code == 0, err
        arrays.append(np.load(npy))
    np.testing.assert_allclose(arrays[0], arrays[1], atol=1e-4)


def test_class_objective_and_neuron(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_path = save(tmp_path, "grayscale_cnn")
    npy, js = tmp_path / "c.npy", tmp_path / "c.json"
    code, _, err = run(
        capsys, "visualize", str(model_path), "--objective", "class", "--classes", "1,4", "--l2", "0.5",
        "--steps", "8", "-q", "-o", str(tmp_path / "c.png"), "--save-npy", str(npy), "--json", str(js),
    )
    assert code == 0, err
    data = json.loads(js.read_text())
    assert data["layer"] == "Plus214_Output_0" and data["settings"]["param"] == "pixel"
    assert data["settings"]["l2"] == 0.5 and "class_logit" in data["objective_expression"]
    logits = load(model_path).run(np.load(npy))["Plus214_Output_0"]
    np.testing.assert_allclose([r["activation"] for r in data["results"]], logits[[0, 1], [1, 4]], rtol=1e-4)
    assert data["results"][0]["objective_best"] > data["results"][0]["objective_first"]
    # neuron objective: the centre unit
    tiny = save(tmp_path, "tiny_cnn")
    code, _, err = run(
        capsys, "visualize", str(tiny), "--layer", "relu1", "--objective", "neuron", "--channels", "2",
        "--steps", "3", "-q", "-o", str(tmp_path / "n.png"), "--save-npy", str(npy), "--json", str(js),
    )
    assert code == 0, err
    relu1 = load(tiny).run(np.load(npy), taps=["relu1"])["relu1"]
    assert json.loads(js.read_text())["results"][0]["activation"] == pytest.approx(float(relu1[0, 2, 16, 16]), rel=1e-4)


def test_parse_units() -> None:
    assert parse_units("0-3,7,2", 10) == [0, 1, 2, 3, 7]
    assert parse_units("all", 4) == [0, 1, 2, 3]
    with pytest.raises(InputError, match="bad channel list"):
        parse_units("3-1", 10)
    with pytest.raises(TargetError, match="out of range"):
        parse_units("9,10", 10)


@pytest.mark.parametrize(
    ("model", "argv", "message", "hint"),
    [
        ("tiny_cnn", ["--layer", "relu9"], "layer 'relu9' is not a tensor computed from the input", "'relu2'"),
        ("tiny_cnn", ["--layer", "input"], "is a model input", "candidates"),
        ("tiny_cnn", ["--layer", "relu2", "--channels", "14-16"], "channel 16 is out of range", "0..15"),
        ("tiny_cnn", ["--layer", "relu2", "--channels", "a"], "bad channel list", "0-15"),
        ("tiny_cnn", ["--objective", "class", "--classes", "10"], "class 10 is out of range", "0..9"),
        ("non_image_mlp", ["--layer", "relu1"], "needs an image input", "NCHW or NHWC"),
        ("two_input_model", ["--layer", "relu1"], "needs a single image input", "image branch"),
    ],
)
def test_errors_exit_1_with_error_and_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, argv: list[str], message: str, hint: str
) -> None:
    path = save(tmp_path, model)
    out = tmp_path / "g.png"
    code, _, err = run(capsys, "visualize", str(path), *argv, "--steps", "2", "-o", str(out))
    assert code == 1
    error, _, rest = err.partition("hint:")
    assert error.startswith("error: ") and message in error and hint in rest
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("name", ["tiny_cnn", "grayscale_cnn"])
def test_dream_writes_an_image_of_the_input_size(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    model_path = save(tmp_path, name)
    src = tmp_path / "in.png"
    pixels = (np.random.default_rng(0).uniform(0.3, 0.7, (40, 52, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(src)
    out = tmp_path / "dream.png"
    extra = ["--channels", "0,2"] if name == "grayscale_cnn" else ["--layers", "relu1,relu2"]
    code, _, err = run(
        capsys, "dream", str(model_path), str(src), *extra, "--octaves", "2", "--steps", "3", "--jitter", "4",
        "-o", str(out),
    )
    assert code == 0, err
    img = Image.open(out)
    assert img.size == (52, 40)
    assert img.mode == ("L" if name == "grayscale_cnn" else "RGB")
    if name == "tiny_cnn":
        assert np.abs(np.asarray(img, dtype=float) - pixels).mean() > 1.0  # the dream changed it
    code, _, err = run(capsys, "dream", str(model_path), str(src), "--layers", "nope", "-o", str(out))
    assert code == 1 and "error: layer 'nope'" in err and "hint:" in err


def test_fixed_size_model_at_another_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tiny_cnn exported at a fixed 1x3x32x32, rendered at 20x24: the saved inputs have that size
    and the freed convolutional part reproduces the reported activations."""
    path = tmp_path / "fixed.onnx"
    onnx.save(models.tiny_cnn(batch=1), path)
    npy, js = tmp_path / "x.npy", tmp_path / "v.json"
    code, _, err = run(
        capsys, "visualize", str(path), "--layer", "relu2", "--channels", "1,3", "--steps", "4", "--size", "20x24",
        "-q", "-o", str(tmp_path / "g.png"), "--save-npy", str(npy), "--json", str(js),
    )
    assert code == 0, err
    x = np.load(npy)
    assert x.shape == (2, 3, 20, 24)
    free = load(path).size_free(("relu2",), (2, 3), (20, 24))
    assert free is not None
    act = free.run(x, taps=["relu2"])["relu2"][np.arange(2), [1, 3]].mean(axis=(1, 2))
    got = [r["activation"] for r in json.loads(js.read_text())["results"]]
    np.testing.assert_allclose(got, act, rtol=1e-4, atol=1e-6)
