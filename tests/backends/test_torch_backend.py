"""The PyTorch backend as a second opinion: forward against onnxruntime, gradients against the
original PyTorch modules' autograd and against the numpy engine.

Evidence, from the op up to whole networks:
- every op case of the numpy engine's table that the torch backend has a rule for, plus pooling
  cases, runs as a one-node model against onnxruntime; its gradient matches the numpy VJP (or,
  for pools, finite differences) in float64;
- the hand-built exporter-pattern models and the onnx light models agree with onnxruntime;
- exported ``tests.torch_models`` architectures give the gradient the original module gives,
  w.r.t. the input and w.r.t. an intermediate feature map;
- the numpy engine and this backend agree in float64 on whole models.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

torch = pytest.importorskip("torch")

import onnxviz  # noqa: E402
from onnxviz import BackendUnavailableError, Model, TargetError  # noqa: E402
from onnxviz.backends import torch as torch_backend  # noqa: E402
from onnxviz.backends.numpy import NON_DIFFERENTIABLE, REGISTRY, Call  # noqa: E402
from onnxviz.backends.torch import SUPPORTED_OPS, TorchBackend, supports  # noqa: E402
from onnxviz.graph import Graph  # noqa: E402
from tests import models, torch_models  # noqa: E402
from tests.backends.numpy.cases import ALL_CASES  # noqa: E402
from tests.backends.numpy.opcase import (  # noqa: E402
    OpCase,
    cast_floats,
    grad_inputs,
    materialize,
    one_node_model,
    run_numpy,
    run_onnxruntime,
)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num, den = np.linalg.norm(a - b), np.linalg.norm(b)
    return float(num / den) if den > 0 else float(num)


# --------------------------------------------------------------------------------------------
# Op table: one-node models
# --------------------------------------------------------------------------------------------


def _uniform(shape: tuple[int, ...]) -> Any:
    return lambda rng: rng.standard_normal(shape)


def _distinct(shape: tuple[int, ...]) -> Any:
    """Values without ties (a permutation of a spaced grid), so max pooling has one maximum."""
    n = int(np.prod(shape))
    return lambda rng: (rng.permutation(n).reshape(shape) * 0.1 - n * 0.05)


POOL_CASES: list[OpCase] = [
    OpCase("MaxPool", [_distinct((2, 3, 7, 7))], {"kernel_shape": [2, 2], "strides": [2, 2]}, opset=13, name="2x2"),
    OpCase("MaxPool", [_distinct((1, 2, 7, 8))], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, opset=13, name="ceil"),
    OpCase("MaxPool", [_distinct((1, 2, 9, 9))], {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1]}, opset=13, name="dilated"),
    OpCase("MaxPool", [_distinct((1, 2, 6, 7))], {"kernel_shape": [3, 2], "pads": [0, 1, 2, 0], "strides": [2, 1]}, opset=13, name="asym-pads"),
    OpCase("MaxPool", [_distinct((1, 2, 7, 7))], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, opset=11, name="same-upper"),
    OpCase("MaxPool", [_distinct((1, 2, 7, 7))], {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}, opset=11, name="same-lower"),
    OpCase("MaxPool", [_distinct((2, 3, 11))], {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, opset=12, name="1d"),
    OpCase("MaxPool", [_distinct((1, 2, 8, 8))], {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1}, opset=10, name="ceil-pads-10"),
    OpCase("AveragePool", [_uniform((2, 3, 7, 7))], {"kernel_shape": [2, 2], "strides": [2, 2]}, opset=11, name="2x2"),
    OpCase("AveragePool", [_uniform((1, 2, 7, 8))], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, opset=11, name="pads-exclude"),
    OpCase("AveragePool", [_uniform((1, 2, 7, 8))], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, opset=11, name="pads-include"),
    OpCase("AveragePool", [_uniform((1, 2, 8, 7))], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, opset=11, name="ceil"),
    OpCase("AveragePool", [_uniform((1, 2, 8, 7))], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 0, 1, 1], "count_include_pad": 1}, opset=11, name="ceil-include-asym"),
    OpCase("AveragePool", [_uniform((1, 2, 7, 7))], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, opset=11, name="same-upper"),
    OpCase("AveragePool", [_uniform((1, 2, 9, 9))], {"kernel_shape": [2, 2], "dilations": [2, 2]}, opset=19, name="dilated"),
    OpCase("AveragePool", [_uniform((2, 3, 10))], {"kernel_shape": [4], "strides": [3], "pads": [2, 1]}, opset=11, name="1d"),
    OpCase("GlobalAveragePool", [_uniform((2, 3, 5, 6))], opset=13),
    OpCase("GlobalMaxPool", [_distinct((2, 3, 5, 6))], opset=13),
]


def _supported(case: OpCase) -> bool:
    # A case without a graph input (Constant) has only constant outputs, which are folded and
    # never run by a backend.
    has_input = any(
        spec is not None and i not in case.constant_inputs for i, spec in enumerate(case.inputs)
    )
    return not case.domain and has_input and supports(case.op_type, case.opset)


def _declined(case: OpCase) -> bool:
    """Resize variants the torch backend refuses by design (cubic, crop-and-resize, antialias)."""
    a = case.attrs
    return case.op_type == "Resize" and (
        a.get("mode") == "cubic" or a.get("coordinate_transformation_mode") == "tf_crop_and_resize"
        or bool(a.get("antialias"))
    )


TABLE = [c for c in ALL_CASES if _supported(c)] + POOL_CASES
DECLINED = [c for c in TABLE if _declined(c)]
TABLE = [c for c in TABLE if not _declined(c)]
ORT_CASES = [c for c in TABLE if c.check_ort]
GRAD_CASES = [
    c
    for c in TABLE
    if c.check_grad and c.op_type not in NON_DIFFERENTIABLE and grad_inputs(c, materialize(c))
]


@pytest.mark.parametrize("case", ORT_CASES, ids=lambda c: c.id)
def test_op_forward_matches_onnxruntime(case: OpCase) -> None:
    inputs = cast_floats(materialize(case), np.float32)
    proto = one_node_model(case, inputs, [np.zeros(0, np.float32)] * case.n_outputs)
    names = [f"y{i}" for i in range(case.n_outputs)]
    feeds = {f"x{i}": v for i, v in enumerate(inputs) if v is not None and i not in case.constant_inputs}
    ours = TorchBackend(Graph(proto)).run(feeds, names)
    # The declared output types come from our outputs: a wrong dtype makes onnxruntime refuse.
    theirs = run_onnxruntime(case, inputs, [ours[n] for n in names])
    for name, expected in zip(names, theirs):
        got = ours[name]
        assert got.shape == expected.shape, (name, got.shape, expected.shape)
        assert got.dtype == expected.dtype, (name, got.dtype, expected.dtype)
        np.testing.assert_allclose(got, expected, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("case", DECLINED, ids=lambda c: c.id)
def test_declined_resize_variants_raise(case: OpCase) -> None:
    inputs = cast_floats(materialize(case), np.float32)
    proto = one_node_model(case, inputs, [np.zeros(0, np.float32)] * case.n_outputs)
    feeds = {f"x{i}": v for i, v in enumerate(inputs) if v is not None and i not in case.constant_inputs}
    with pytest.raises(BackendUnavailableError, match="Resize|antialias") as info:
        TorchBackend(Graph(proto)).run(feeds, ["y0"])
    assert "numpy" in (info.value.hint or "")


def _torch_vjp(case: OpCase, inputs: list[np.ndarray | None], cot: dict[int, np.ndarray], wrt: tuple[int, ...]) -> dict[int, np.ndarray]:
    proto = one_node_model(case, inputs, [np.zeros(0, np.float64)] * case.n_outputs)
    feeds = {f"x{i}": v for i, v in enumerate(inputs) if v is not None and i not in case.constant_inputs}
    result = TorchBackend(Graph(proto)).value_and_grad(
        feeds, {f"y{i}": c for i, c in cot.items()}, [f"x{i}" for i in wrt], dtype=np.float64
    )
    return {i: result.grads[f"x{i}"] for i in wrt}


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_op_gradient_matches_numpy_vjp_or_finite_differences(case: OpCase) -> None:
    """In float64: against the numpy engine's VJP when it has one, else by central differences."""
    inputs = cast_floats(materialize(case), np.float64)
    wrt = grad_inputs(case, inputs)
    rng = np.random.default_rng(1)
    ours_out = TorchBackend(
        Graph(one_node_model(case, inputs, [np.zeros(0, np.float64)] * case.n_outputs))
    ).run({f"x{i}": v for i, v in enumerate(inputs) if v is not None and i not in case.constant_inputs},
          [f"y{i}" for i in range(case.n_outputs)], dtype=np.float64)
    outs = [ours_out[f"y{i}"] for i in range(case.n_outputs)]
    gouts = case.grad_outputs
    if gouts is None:
        gouts = tuple(i for i, o in enumerate(outs) if np.issubdtype(o.dtype, np.floating))
    cot = {i: rng.standard_normal(outs[i].shape) for i in gouts}
    ours = _torch_vjp(case, inputs, cot, wrt)
    rule = REGISTRY.get_vjp(case.op_type, case.opset)
    if rule is not None and REGISTRY.get_forward(case.op_type, case.opset) is not None:
        ref_outs = run_numpy(case, inputs)
        needs = tuple(i in wrt for i in range(len(inputs)))
        # The attributes as the model stores them (float attributes are float32 in ONNX).
        attrs = Graph(one_node_model(case, inputs, list(ref_outs))).nodes[0].attrs
        call = Call(case.op_type, tuple(inputs), ref_outs, dict(attrs), needs, "case", case.opset)
        ref = rule(call, *[cot.get(i) for i in range(len(ref_outs))])
        for i in wrt:
            assert rel(ours[i], ref[i]) <= 1e-8, (i, rel(ours[i], ref[i]))
        return
    eps = 1e-6
    directions = {i: rng.standard_normal(inputs[i].shape) for i in wrt}  # type: ignore[union-attr]
    lhs = sum(float(np.sum(directions[i] * ours[i])) for i in wrt)

    def shifted(sign: float) -> list[np.ndarray]:
        moved = list(inputs)
        for i in wrt:
            moved[i] = inputs[i] + sign * eps * directions[i]  # type: ignore[operator]
        feeds = {f"x{k}": v for k, v in enumerate(moved) if v is not None and k not in case.constant_inputs}
        got = TorchBackend(Graph(one_node_model(case, moved, [np.zeros(0, np.float64)] * case.n_outputs))).run(
            feeds, [f"y{k}" for k in range(case.n_outputs)], dtype=np.float64
        )
        return [got[f"y{k}"] for k in range(case.n_outputs)]

    plus, minus = shifted(1.0), shifted(-1.0)
    rhs = sum(float(np.sum(cot[i] * (plus[i] - minus[i]) / (2 * eps))) for i in gouts)
    assert abs(lhs - rhs) <= 1e-6 * max(1.0, abs(rhs)), (lhs, rhs)


def test_required_ops_have_rules_at_every_opset_they_exist() -> None:
    required = """Conv ConvTranspose Gemm MatMul Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Reciprocal
    Relu LeakyRelu PRelu Elu Selu Sigmoid HardSigmoid HardSwish Tanh Softplus Erf Gelu Clip Min Max
    Sum Mean Softmax LogSoftmax MaxPool AveragePool GlobalAveragePool GlobalMaxPool
    BatchNormalization InstanceNormalization LayerNormalization LRN Concat Split Slice Gather
    Reshape Flatten Transpose Squeeze Unsqueeze Expand Tile Pad Resize Upsample Dropout Identity
    Constant ConstantOfShape Shape Cast ReduceMean ReduceSum ReduceMax Where Equal Greater Less Not
    Range""".split()
    missing = sorted(set(required) - SUPPORTED_OPS)
    assert not missing, missing
    # Every op the table exercises at an opset where the op exists in 7..21 and we have a rule.
    first_opset = {
        "HardSwish": 14, "Gelu": 20, "LayerNormalization": 17, "Range": 11, "Resize": 10, "Erf": 9,
        "Where": 9, "Expand": 8, "ConstantOfShape": 9,
    }
    for op in required:
        for opset in range(max(7, first_opset.get(op, 7)), 22):
            if op == "Upsample" and opset >= 10:
                continue  # deprecated from opset 10
            assert supports(op, opset), (op, opset)


# --------------------------------------------------------------------------------------------
# Whole models against onnxruntime
# --------------------------------------------------------------------------------------------

HAND_BUILT = [
    "tiny_cnn",
    "tf2onnx_nhwc",
    "paddle_style_constants",
    "constant_subgraph_weights",
    "grayscale_cnn",
    "two_input_model",
    "non_image_mlp",
    "dynamic_spatial",
    "old_opset_model",
]


def _feeds(model: Model, rng: np.random.Generator, batch: int = 2, spatial: int = 20) -> dict[str, np.ndarray]:
    feeds = {}
    for info in model.inputs:
        shape = [
            d if isinstance(d, int) and d > 0 else (batch if axis == 0 else spatial)
            for axis, d in enumerate(info.shape or ())
        ]
        feeds[info.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", HAND_BUILT)
def test_hand_built_models_match_onnxruntime(name: str) -> None:
    model = Model.from_proto(getattr(models, name)())
    feeds = _feeds(model, np.random.default_rng(0))
    taps = model.graph.tensor_names()
    expected = model.run(feeds, taps)
    got = TorchBackend(model.graph).run(feeds, taps)
    for tensor in taps:
        assert got[tensor].shape == expected[tensor].shape, tensor
        assert rel(got[tensor], expected[tensor]) <= 1e-4, (tensor, rel(got[tensor], expected[tensor]))


#: The big networks, plus the ones whose 224x224 torch CPU forward takes over 5 s here.
_SLOW_LIGHT = ("vgg19", "zfnet512", "alexnet", "densenet121", "inception_v2", "resnet50")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if any(s in p.stem for s in _SLOW_LIGHT) else [])
        for p in models.light_model_paths()
    ],
)
def test_light_models_match_onnxruntime(path: Path) -> None:
    """The outputs and the last tensors before them (the softmax of constant-weight networks is
    nearly uniform, so the logits carry the evidence)."""
    model = onnxviz.load(path)
    feeds = _feeds(model, np.random.default_rng(0), batch=1)
    taps = model.graph.tensor_names()[-4:]
    expected = model.run(feeds, taps)
    got = TorchBackend(model.graph).run(feeds, taps)
    for tensor in taps:
        assert got[tensor].shape == expected[tensor].shape, tensor
        assert rel(got[tensor], expected[tensor]) <= 1e-4, (tensor, rel(got[tensor], expected[tensor]))


# --------------------------------------------------------------------------------------------
# Gradients against the original PyTorch modules
# --------------------------------------------------------------------------------------------

CLASS = 3


def _column_seed(value: np.ndarray) -> np.ndarray:
    seed = np.zeros_like(value)
    seed[:, CLASS] = 1.0
    return seed


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Model]]:
    """Every architecture, built and exported once (opset 17), with its loaded model."""
    root = tmp_path_factory.mktemp("torch_models")
    out = {}
    for name in torch_models.ARCHITECTURES:
        module = torch_models.build(name)
        path = torch_models.export(module, root / f"{name}.onnx", opset=17)
        out[name] = (module, onnxviz.load(path))
    return out


def _module_input_grad(module: Any, x: np.ndarray) -> np.ndarray:
    module = module.double()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    module(xt)[:, CLASS].sum().backward()
    return xt.grad.numpy()


@pytest.mark.parametrize("name", sorted(torch_models.ARCHITECTURES))
def test_input_gradient_matches_the_torch_module(name: str, exported: dict[str, tuple[Any, Model]]) -> None:
    module, model = exported[name]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    expected = _module_input_grad(module, x)
    got = TorchBackend(model.graph).gradient(
        {"input": x}, {"output": _column_seed}, "input", dtype=np.float64
    )
    assert got.dtype == np.float64 and got.shape == x.shape
    assert rel(got, expected) <= 1e-6, rel(got, expected)


def test_intermediate_gradient_matches_the_torch_feature_map(exported: dict[str, tuple[Any, Model]]) -> None:
    """d output[:, 3] / d (layer2 output) of the ResNet, the ONNX tensor found by its value."""
    module, model = exported["resnet"]
    module = module.double()
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    captured: dict[str, Any] = {}

    def hook(_m: Any, _inputs: Any, output: Any) -> None:
        output.retain_grad()
        captured["map"] = output

    handle = module.layer2.register_forward_hook(hook)
    try:
        xt = torch.tensor(x, requires_grad=True)
        module(xt)[:, CLASS].sum().backward()
    finally:
        handle.remove()
    feature = captured["map"].detach().numpy()
    feature_grad = captured["map"].grad.numpy()
    input_grad = xt.grad.numpy()

    names = model.graph.tensor_names()
    taps = model.run(x.astype(np.float32), names)
    matches = [
        n for n in names if taps[n].shape == feature.shape and np.allclose(taps[n], feature, rtol=1e-4, atol=1e-4)
    ]
    assert matches, "no ONNX tensor holds layer2's output"
    backend = TorchBackend(model.graph)
    result = backend.value_and_grad({"input": x}, {"output": _column_seed}, [matches[-1], "input"], dtype=np.float64)
    assert rel(result.grads[matches[-1]], feature_grad) <= 1e-6
    # Asking for the feature map too does not cut the input's gradient short.
    assert rel(result.grads["input"], input_grad) <= 1e-6


# --------------------------------------------------------------------------------------------
# Against the numpy engine
# --------------------------------------------------------------------------------------------


def _numpy_runs(model: Model) -> bool:
    return all(REGISTRY.get_forward(n.op_type, model.opset) is not None for n in model.graph.nodes)


@pytest.mark.parametrize("name", ["tiny_cnn", "tf2onnx_nhwc", "old_opset_model"])
def test_gradient_matches_the_numpy_engine(name: str) -> None:
    model = Model.from_proto(getattr(models, name)())
    if not _numpy_runs(model):
        missing = sorted({n.op_type for n in model.graph.nodes if REGISTRY.get_forward(n.op_type, model.opset) is None})
        pytest.skip(f"the numpy engine has no forward for {missing} yet")
    feeds = _feeds(model, np.random.default_rng(2))
    x_name, out = model.inputs[0].name, model.outputs[0].name
    rng = np.random.default_rng(3)
    value = model.run(feeds)[out]
    seed = rng.standard_normal(value.shape)
    ref = model.value_and_grad(feeds, {out: seed}, [x_name], dtype=np.float64)
    got = TorchBackend(model.graph).value_and_grad(feeds, {out: seed}, [x_name], dtype=np.float64)
    assert rel(got.values[out], ref.values[out]) <= 1e-10
    assert rel(got.grads[x_name], ref.grads[x_name]) <= 1e-8, rel(got.grads[x_name], ref.grads[x_name])


# --------------------------------------------------------------------------------------------
# Errors and hygiene
# --------------------------------------------------------------------------------------------


def _hardmax_model() -> onnx.ModelProto:
    node = helper.make_node("Hardmax", ["x"], ["y"], name="pick_max", axis=-1)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 5])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_unsupported_op_names_the_node_and_opset() -> None:
    backend = TorchBackend(Model.from_proto(_hardmax_model()).graph)
    with pytest.raises(BackendUnavailableError) as info:
        backend.run({"x": np.zeros((2, 5), np.float32)})
    message = str(info.value)
    assert "'Hardmax'" in message and "'pick_max'" in message and "opset 13" in message
    assert info.value.hint and "numpy" in info.value.hint


def test_missing_torch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_backend, "torch", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendUnavailableError, match="PyTorch is not installed") as info:
        TorchBackend(Model.from_proto(models.tiny_cnn()).graph)
    assert info.value.hint == "pip install 'onnxviz[torch]'"


def test_module_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import onnxviz.backends.torch as t; print(len(t.SUPPORTED_OPS))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 70


def test_inputs_and_constants_are_not_mutated() -> None:
    model = Model.from_proto(models.paddle_style_constants())
    feeds = _feeds(model, np.random.default_rng(4))
    before = {k: v.copy() for k, v in feeds.items()}
    constants_before = {k: np.array(v, copy=True) for k, v in model.graph.constants.items()}
    backend = TorchBackend(model.graph)
    out = model.outputs[0].name
    result = backend.value_and_grad(feeds, {out: _column_seed}, [model.inputs[0].name])
    backend.run(feeds, dtype=np.float64)
    for k in feeds:
        np.testing.assert_array_equal(feeds[k], before[k])
        assert feeds[k].dtype == np.float32
    for k, v in model.graph.constants.items():
        np.testing.assert_array_equal(v, constants_before[k])
    assert not np.shares_memory(result.values[out], result.grads[model.inputs[0].name])


def test_float64_runs_every_float_tensor_in_float64() -> None:
    model = Model.from_proto(models.constant_subgraph_weights())  # float16 and int32 weights, cast
    feeds = _feeds(model, np.random.default_rng(5))
    names = model.graph.tensor_names()
    got = TorchBackend(model.graph).run(feeds, names, dtype=np.float64)
    assert all(v.dtype == np.float64 for v in got.values())
    expected = model.run(feeds, names)
    for n in names:
        assert rel(got[n], expected[n]) <= 1e-5


def test_unknown_or_constant_wrt_is_a_target_error() -> None:
    model = Model.from_proto(models.tiny_cnn())
    backend = TorchBackend(model.graph)
    feeds = _feeds(model, np.random.default_rng(6))
    with pytest.raises(TargetError, match="not in the graph"):
        backend.gradient(feeds, {"logits": _column_seed}, "no_such_tensor")
    with pytest.raises(TargetError, match="does not depend on any input"):
        backend.gradient(feeds, {"logits": _column_seed}, "conv1.weight")


def test_wrt_the_seeds_do_not_reach_gets_zeros() -> None:
    model = Model.from_proto(models.two_input_model())
    feeds = _feeds(model, np.random.default_rng(7))
    result = TorchBackend(model.graph).value_and_grad(feeds, {"image_features": np.ones((2, 8))}, ["image", "meta"])
    assert np.all(result.grads["meta"] == 0) and result.grads["meta"].shape == (2, 4)
    assert np.any(result.grads["image"] != 0)
