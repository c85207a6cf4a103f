"""Loading, validation, the layer table, kernels and feature maps (issue: foundation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxviz
from onnxviz.errors import InputError, ModelLoadError, TargetError
from onnxviz.featuremaps import default_feature_tensors, feature_maps
from onnxviz.kernels import conv_kernels
from onnxviz.layers import summarize
from onnxviz.model import Model, load
from tests import models


def save(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, path)
    return path


# ---------------------------------------------------------------- bad files
def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path: Path) -> None:
    p = tmp_path / "x.onnx"
    p.write_text("this is not a model at all\n" * 10)
    with pytest.raises(ModelLoadError, match="not an ONNX model") as e:
        load(p)
    assert e.value.hint


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "x.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load(p)


def test_truncated_model(tmp_path: Path) -> None:
    full = save(models.tiny_cnn(), tmp_path).read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(ModelLoadError):
        load(p)


def test_external_data_loads(tmp_path: Path) -> None:
    path = models.with_external_data(tmp_path)
    m = load(path)
    assert any(v.size > 1 for v in m.constants.values())
    x = np.zeros([d if isinstance(d, int) else 1 for d in m.inputs[0].shape], np.float32)
    assert all(np.isfinite(v).all() for v in m.run(x).values())


def test_missing_external_data(tmp_path: Path) -> None:
    path = models.with_external_data(tmp_path)
    for f in tmp_path.iterdir():
        if f != path and f.is_file():
            f.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load(path)


def test_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    path = models.with_escaping_external_data(tmp_path)
    with pytest.raises(ModelLoadError, match="outside"):
        load(path)


# ---------------------------------------------------------------- layers
def test_light_resnet50_totals() -> None:
    path = next(p for p in models.light_model_paths() if "resnet50" in p.name)
    s = summarize(load(path))
    assert s.total_params == pytest.approx(25.6e6, rel=0.01)
    assert s.total_macs == pytest.approx(4.09e9, rel=0.01)
    assert s.op_histogram["Conv"] == 53
    assert not s.unknown_macs
    data = s.to_json()
    json.dumps(data)
    assert data["total_flops"] == 2 * s.total_macs


def test_conv_macs_by_hand() -> None:
    s = summarize(Model.from_proto(models.tiny_cnn()))
    for layer in s.layers:
        if layer.op_type == "Conv":
            w = layer.input_shapes[1]
            y = layer.output_shapes[0]
            assert layer.macs == int(np.prod(y[1:])) * int(np.prod(w[1:]))  # type: ignore[index]


def test_dynamic_dims_resolved_from_given_shape() -> None:
    m = Model.from_proto(models.dynamic_spatial())
    unresolved = summarize(m)
    assert unresolved.unknown_macs
    resolved = summarize(m, {m.inputs[0].name: (2, 3, 40, 48)})
    assert not resolved.unknown_macs and resolved.total_macs > 0
    assert resolved.layers[0].input_shapes[0] == (2, 3, 40, 48)


# ---------------------------------------------------------------- kernels
@pytest.mark.parametrize(
    "builder", [models.tiny_cnn, models.paddle_style_constants, models.constant_subgraph_weights, models.tf2onnx_nhwc]
)
def test_kernels_found_wherever_the_weights_are(builder) -> None:
    m = Model.from_proto(builder())
    ks = conv_kernels(m)
    n_conv = sum(n.op_type == "Conv" for n in m.graph.nodes)
    assert len(ks) == n_conv >= 1
    assert sum(k.first_layer for k in ks) == 1
    for k in ks:
        assert k.weight.ndim == 4 and np.isfinite(k.weight).all()


def test_paddle_constants_are_labelled() -> None:
    ks = conv_kernels(Model.from_proto(models.paddle_style_constants()))
    assert any("Constant node" in k.source for k in ks)


def test_qdq_weights_are_dequantized_and_said_so() -> None:
    ks = conv_kernels(Model.from_proto(models.quantized_qdq()))
    assert ks and all(k.quantization and "DequantizeLinear" in k.quantization for k in ks)
    assert all(k.weight.dtype == np.float32 for k in ks)


def test_qlinearconv_weights_are_dequantized() -> None:
    m = Model.from_proto(models.quantized_qlinear())
    ks = [k for k in conv_kernels(m) if k.op_type == "QLinearConv"]
    assert ks
    node = m.graph.node(ks[0].node)
    w, scale, zp = (m.constants[node.inputs[i]] for i in (3, 4, 5))
    expect = (w.astype(np.float64) - zp.astype(np.float64).reshape(-1, *([1] * (w.ndim - 1)) if zp.size > 1 else zp)) * (
        scale.reshape(-1, *([1] * (w.ndim - 1))) if scale.size > 1 else scale
    )
    np.testing.assert_allclose(ks[0].weight, expect, rtol=1e-6)


def test_dead_filters_and_stats() -> None:
    ks = conv_kernels(Model.from_proto(models.with_dead_and_duplicate_filters()))
    assert any(k.stats.dead_filters for k in ks)
    k = ks[0]
    assert k.stats.min <= k.stats.mean <= k.stats.max
    assert 0.0 <= k.stats.near_zero_share <= 1.0


# ---------------------------------------------------------------- running
def test_run_with_taps_matches_plain_outputs() -> None:
    m = Model.from_proto(models.tiny_cnn())
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    plain = m.run(x)
    taps = m.graph.tensor_names()
    tapped = m.run(x, taps)
    for name, v in plain.items():
        np.testing.assert_allclose(tapped[name], v, rtol=1e-6)
    assert set(taps) <= set(tapped)


def test_tap_errors() -> None:
    m = Model.from_proto(models.tiny_cnn())
    x = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(TargetError, match="no tensor"):
        m.run(x, ["nope"])
    weight = next(iter(m.graph.initializers))
    with pytest.raises(TargetError, match="constant"):
        m.run(x, [weight])


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((1, 3, 31, 32), np.float32), "expects"),
        (np.zeros((1, 5, 32, 32), np.float32), "expects"),
        (np.zeros((3, 32, 32), np.float32), "rank"),
        (np.full((1, 3, 32, 32), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_inputs(x: np.ndarray, match: str) -> None:
    m = Model.from_proto(models.tiny_cnn())
    with pytest.raises(InputError, match=match):
        m.run(x)


def test_several_inputs_need_a_dict() -> None:
    m = Model.from_proto(models.two_input_model())
    with pytest.raises(InputError, match="inputs"):
        m.feeds(np.zeros((1, 3, 32, 32), np.float32))


def test_feature_maps_at_batch_3_match_a_direct_tap() -> None:
    m = Model.from_proto(models.tiny_cnn())
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    names = default_feature_tensors(m.graph)
    assert names
    fms = feature_maps(m, x, top_k=4, budget_bytes=1)  # one tensor per chunk
    assert [f.tensor for f in fms] == names
    direct = m.run(x, names)
    for f in fms:
        v = direct[f.tensor]
        np.testing.assert_allclose(f.channel_means, v.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
        assert list(f.top_channels) == list(np.argsort(-v.mean(axis=(0, 2, 3)), kind="stable")[:4])
        np.testing.assert_array_equal(f.top_maps, v[:, list(f.top_channels)])
        assert f.zero_share == pytest.approx(float(np.mean(v == 0)))


@pytest.mark.parametrize("path", models.light_model_paths(), ids=lambda p: p.stem)
def test_every_light_model_loads_inspects_and_runs_with_taps(path: Path) -> None:
    m = onnxviz.load(path)
    s = summarize(m)
    assert s.layers and s.total_macs > 0
    assert conv_kernels(m)
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    info = m.inputs[0]
    if isinstance(info.shape[0], int) and info.shape[0] == 1:  # type: ignore[index]
        x = x[:1]
    fms = feature_maps(m, x, top_k=2)
    assert fms and all(f.shape[0] == x.shape[0] for f in fms)


def test_rows_independent_is_checked_once_and_keeps_mixing_models_whole() -> None:
    """A model that subtracts the batch mean mixes its rows: it is found out, its gradients are
    computed over the whole batch (not in parallel halves) and match the numpy engine's."""
    assert Model.from_proto(models.tiny_cnn()).rows_independent
    assert not Model.from_proto(models.dynamic_spatial()).rows_independent  # no size to check at
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
        helper.make_node("Sub", ["x", "m"], ["c"]),
        helper.make_node("Mul", ["c", "c"], ["y"]),
    ]
    proto = helper.make_model(helper.make_graph(nodes, "mix", [x_info], [y_info]),
                              opset_imports=[helper.make_opsetid("", 13)])
    m = Model.from_proto(proto)
    assert not m.rows_independent
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    got = m.value_and_grad(x, {"y": np.ones((4, 4), np.float32)}, ["x"])
    want = m.value_and_grad(x.astype(np.float64), {"y": np.ones((4, 4))}, ["x"], dtype=np.float64)
    np.testing.assert_allclose(got.grads["x"], want.grads["x"], rtol=1e-5, atol=1e-6)
