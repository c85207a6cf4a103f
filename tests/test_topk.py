"""Top-k activations: a known detector finds the images with its pattern, crops contain it,
projections stay in the field and equal hand-computed guided backprop / deconvnet, batching
does not change the result, paths equal arrays, and the CLI writes a gallery end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxviz.cli import main as cli_main
from onnxviz.cli import topk as cli_topk
from onnxviz.errors import InputError, TargetError
from onnxviz.inputs import Preprocess
from onnxviz.model import Model
from onnxviz.receptive import field_box
from onnxviz.topk import (
    project_units,
    scale_symmetric,
    top_activations,
    top_activations_arrays,
    topk_gallery,
)

SIZE = 16
PRE = Preprocess(layout="NCHW", channels=1, size=(SIZE, SIZE), preset="0-1")


def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], out: str, channels: int = 1) -> Model:
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, SIZE, SIZE])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "C", "H", "W"])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return Model.from_proto(proto)


def detector() -> Model:
    """Channel 0 of ``relu1`` fires only on a bright 3x3 square (sum of the 3x3 window above
    7.5, i.e. almost all nine pixels near 1); ``relu2`` channel 0 passes it through a 2x2 max
    pool and a 3x3 conv whose centre tap reads channel 0, so its field is 8x8 at stride 2."""
    rng = np.random.default_rng(0)
    w1 = np.zeros((3, 1, 3, 3), np.float32)
    w1[0] = 1.0
    w1[1:] = rng.standard_normal((2, 1, 3, 3))
    b1 = np.array([-7.5, 0.1, 0.1], np.float32)
    w2 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    w2[0] = 0.0
    w2[0, 0, 1, 1] = 1.0
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "w2"], ["conv2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("GlobalAveragePool", ["relu2"], ["gap"]),
    ]
    return _model(nodes, {"w1": w1, "b1": b1, "w2": w2}, "gap")


def images(n: int = 10, with_square: tuple[int, ...] = (1, 4, 6, 9), seed: int = 0):
    """Dim noise (8-bit levels <= 60/255); a bright 3x3 square in the listed images."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 61, size=(n, 1, SIZE, SIZE)).astype(np.float32) / 255
    squares = {}
    for i in with_square:
        y, xx = (int(v) for v in rng.integers(1, SIZE - 4, size=2))
        x[i, 0, y : y + 3, xx : xx + 3] = 1.0
        squares[i] = (y, y + 3, xx, xx + 3)
    return x, squares


def test_detector_top_k_are_the_images_with_the_square_and_crops_contain_it() -> None:
    x, squares = images()
    topk = top_activations_arrays(detector(), x, "relu2", [0], k=4, preprocess=PRE, batch_size=3)
    assert topk.receptive_field.size == (8, 8) and topk.receptive_field.stride == (2, 2)
    row = topk.rows[0]
    assert {e.image for e in row} == set(squares)
    assert [e.activation for e in row] == sorted((e.activation for e in row), reverse=True)
    for e in row:
        y0, y1, x0, x1 = e.box
        sy0, sy1, sx0, sx1 = squares[e.image]
        assert y0 <= sy0 and sy1 <= y1 and x0 <= sx0 and sx1 <= x1
        assert e.crop.shape == (y1 - y0, x1 - x0, 1)
        np.testing.assert_array_equal(e.crop[..., 0], x[e.image, 0, y0:y1, x0:x1])
        assert e.deconv.shape == e.crop.shape and e.guided.shape == e.crop.shape
    # the deconvnet projection of the detector unit is the square's 3x3 filter pattern: positive
    # and inside the crop, at the square
    e = row[0]
    sy0, sy1, sx0, sx1 = squares[e.image]
    proj = e.deconv[..., 0]
    assert proj.min() >= 0 and proj.max() > 0
    ys, xs = np.nonzero(proj)
    assert e.box[0] + ys.min() <= sy1 and e.box[0] + ys.max() >= sy0
    assert e.box[2] + xs.min() <= sx1 and e.box[2] + xs.max() >= sx0


def test_deconv_projection_of_one_unit_stays_inside_its_field() -> None:
    model = detector()
    x = np.random.default_rng(3).uniform(0, 1, (4, 1, SIZE, SIZE)).astype(np.float32)
    units = [(1, 2, 3), (2, 4, 4), (3, 7, 0), (1, 0, 7)]
    rf = top_activations_arrays(model, x[:1], "relu2", [1], k=1, preprocess=PRE).receptive_field
    for rule in ("deconv", "guided"):
        g = project_units(model, x, "relu2", units, rule)[:, 0]
        for row, (c, y, xx) in enumerate(units):
            y0, y1, x0, x1 = field_box(rf, y, xx, (SIZE, SIZE))
            outside = g[row].copy()
            outside[y0:y1, x0:x1] = 0
            assert not outside.any(), (rule, units[row])
    # the deconvnet ignores the forward's ReLU pattern: a unit whose ReLU is off still projects
    g = project_units(model, x, "relu2", units, "deconv")
    assert all(np.abs(g[r]).sum() > 0 for r in range(len(units)))


def one_relu_model() -> tuple[Model, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    w = {
        "w1": rng.standard_normal((3, 1, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(3).astype(np.float32) * 0.5,
        "w2": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["out"], kernel_shape=[1, 1]),
    ]
    return _model(nodes, w, "out"), w


def _hand_projection(w: dict[str, np.ndarray], x: np.ndarray, c: int, y: int, xx: int, rule: str) -> np.ndarray:
    """d out[c, y, xx] / d x through the ReLU rule, by hand: the 1x1 conv sends w2[c, k] to
    r[k, y, xx]; the rule rectifies it (and masks by h > 0 for guided backprop); the 3x3 conv
    spreads it over the input window around (y, xx) with the filter w1[k]."""
    xp = np.pad(x[0], 1)
    h = np.array([(xp[y : y + 3, xx : xx + 3] * w["w1"][k, 0]).sum() + w["b1"][k] for k in range(3)])
    g = np.maximum(w["w2"][c, :, 0, 0], 0)
    if rule == "guided":
        g = g * (h > 0)
    out = np.zeros((SIZE + 2, SIZE + 2))
    for k in range(3):
        out[y : y + 3, xx : xx + 3] += g[k] * w["w1"][k, 0]
    return out[1:-1, 1:-1]


@pytest.mark.parametrize("rule", ["guided", "deconv"])
def test_projections_equal_hand_computed_rules_on_a_one_relu_model(rule: str) -> None:
    model, w = one_relu_model()
    x, _ = images(n=6, with_square=())
    topk = top_activations_arrays(model, x, "out", [0, 2], k=2, preprocess=PRE, batch_size=4)
    for row in topk.rows:
        for e in row:
            y0, y1, x0, x1 = e.box
            want = _hand_projection(w, x[e.image], e.channel, *e.position, rule)
            assert np.abs(want).sum() > 0
            got = e.guided if rule == "guided" else e.deconv
            np.testing.assert_allclose(got[..., 0], want[y0:y1, x0:x1], rtol=1e-5, atol=1e-6)
            outside = want.copy()
            outside[y0:y1, x0:x1] = 0
            assert not outside.any()


def _same(a, b) -> None:
    assert a.channels == b.channels and a.receptive_field == b.receptive_field
    for ra, rb in zip(a.rows, b.rows):
        assert [(e.image, e.position, e.box) for e in ra] == [(e.image, e.position, e.box) for e in rb]
        for ea, eb in zip(ra, rb):
            assert ea.activation == pytest.approx(eb.activation, rel=1e-6)
            for f in ("crop", "deconv", "guided"):
                np.testing.assert_allclose(getattr(ea, f), getattr(eb, f), rtol=1e-5, atol=1e-7)


def test_batch_scan_equals_single_image_scan() -> None:
    x, _ = images(n=7, with_square=(2, 5))
    model = detector()
    one = top_activations_arrays(model, x, "relu2", None, k=3, preprocess=PRE, batch_size=1)
    many = top_activations_arrays(model, x, "relu2", None, k=3, preprocess=PRE, batch_size=5)
    assert one.channels == (0, 1, 2, 3)
    _same(one, many)


def _write_pngs(x: np.ndarray, folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, img in enumerate(x):
        p = folder / f"img{i:02d}.png"
        Image.fromarray(np.round(img[0] * 255).astype(np.uint8), mode="L").save(p)
        paths.append(p)
    return paths


def test_image_files_give_the_same_result_as_arrays(tmp_path: Path) -> None:
    x, _ = images(n=5, with_square=(0, 3))
    paths = _write_pngs(x, tmp_path / "imgs")
    model = detector()
    from_files = top_activations(model, paths, "relu2", [0, 3], k=2, preset="0-1", batch_size=2)
    from_arrays = top_activations_arrays(model, x, "relu2", [0, 3], k=2, preprocess=PRE)
    _same(from_files, from_arrays)
    assert from_files.rows[0][0].source == str(paths[from_files.rows[0][0].image])


def test_errors_name_the_layer_and_channels() -> None:
    x, _ = images(n=2, with_square=())
    model = detector()
    with pytest.raises(TargetError, match="no intermediate tensor 'nope'"):
        top_activations_arrays(model, x, "nope", [0], preprocess=PRE)
    with pytest.raises(TargetError, match="4 channels"):
        top_activations_arrays(model, x, "relu2", [0, 9], preprocess=PRE)
    with pytest.raises(InputError, match="k must be"):
        top_activations_arrays(model, x, "relu2", [0], k=0, preprocess=PRE)


def test_gallery_layout_and_symmetric_scaling() -> None:
    x, _ = images(n=4, with_square=(1,))
    topk = top_activations_arrays(detector(), x, "relu2", [0, 1], k=3, preprocess=PRE)
    g = topk_gallery(topk, gap=1, group_gap=4)
    # cells are the 8x8 field; rows: 2 x 8 + 1; columns: 3 groups of 3 cells + gaps
    assert g.shape == (2 * 8 + 1, 3 * (3 * 8 + 2) + 2 * 4, 3)
    assert 0.0 <= g.min() and g.max() <= 1.0
    np.testing.assert_allclose(scale_symmetric(np.array([-2.0, 0.0, 1.0])), [0.0, 0.5, 0.75])
    assert np.all(scale_symmetric(np.zeros(3)) == 0.5)


@pytest.mark.parametrize(
    ("text", "count", "want"),
    [("0-3", 8, [0, 1, 2, 3]), ("3,5,1", 8, [3, 5, 1]), ("all", 3, [0, 1, 2]), ("0-2,6", 8, [0, 1, 2, 6])],
)
def test_channel_ranges(text: str, count: int, want: list[int]) -> None:
    assert cli_topk.parse_channels(text, count) == want


@pytest.mark.parametrize("text", ["5-2", "a", "", "1,,x", "-3"])
def test_bad_channel_ranges(text: str) -> None:
    with pytest.raises(InputError):
        cli_topk.parse_channels(text, 8)


def test_cli_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli_main.COMMANDS, "topk", cli_topk)
    x, squares = images(n=6, with_square=(2, 4))
    _write_pngs(x, tmp_path / "imgs")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    model_path = tmp_path / "det.onnx"
    model_path.write_bytes(detector().proto.SerializeToString())
    out = tmp_path / "topk.png"
    argv = ["topk", str(model_path), "--layer", "relu2", "--images", str(tmp_path / "imgs"), "--channels", "0-1",
            "-k", "2", "--preset", "0-1", "-o", str(out), "--json"]
    assert cli_main.main(argv) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert [c["channel"] for c in data["channels"]] == [0, 1]
    assert {e["image"] for e in data["channels"][0]["top"]} == set(squares)
    assert "scanned 6/6" in captured.err
    with Image.open(out) as im:
        assert im.size == (3 * (2 * 8 + 1) + 2 * 4, 2 * 8 + 1)

    bad = argv[:6] + ["--channels", "7"] + argv[8:]
    assert cli_main.main(bad) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "hint:" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main.main(argv[:4] + ["--images", str(empty)] + argv[6:]) == 1
    assert "no image files" in capsys.readouterr().err
