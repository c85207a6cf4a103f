"""The forward plan: fused steps compute what the unfused nodes compute (float64 to 1e-12,
float32 to rounding), and nothing is fused that a caller or a VJP rule can see."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxviz.backends.numpy.plan import FoldCache, build_plan

from onnxviz.model import Model

C = 8


def _fusion_model(opset: int = 13) -> onnx.ModelProto:
    """Every chain the planner fuses, each next to a variant it must not fuse."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(
            numpy_helper.from_array(np.asarray(value, np.float32), "k." + name)
        )
        return "k." + name

    def node(op: str, inputs: list[str], output: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def bn(x: str, name: str, c: int = C) -> str:
        params = [
            const(f"{name}.{p}", v)
            for p, v in (
                ("s", rng.uniform(0.5, 1.5, c)),
                ("b", rng.standard_normal(c)),
                ("m", rng.standard_normal(c) * 0.1),
                ("v", rng.uniform(0.5, 2.0, c)),
            )
        ]
        return node("BatchNormalization", [x, *params], name, epsilon=1e-3)

    w = lambda *shape: rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    per_c = lambda *shape: rng.uniform(0.5, 1.5, shape)
    lo, hi = const("lo", np.array(0.0)), const("hi", np.array(6.0))
    # Conv + BN + Mul + Add + Relu: folded into the weights, Relu in place.
    x = node(
        "Conv",
        ["x", const("w1", w(C, 3, 3, 3)), const("b1", rng.standard_normal(C))],
        "conv1",
        pads=[1] * 4,
    )
    x = bn(x, "bn1")
    x = node("Mul", [x, const("mul1", per_c(C, 1, 1))], "mul1")
    x = node("Add", [const("add1", per_c(1, C, 1, 1)), x], "add1")
    t1 = node("Relu", [x], "relu1")
    # Conv without bias + (c - x) + x / c + Clip.
    x = node("Conv", [t1, const("w2", w(C, C, 3, 3))], "conv2", pads=[1] * 4)
    x = node("Sub", [const("sub2", per_c(C, 1, 1)), x], "sub2")
    x = node("Div", [x, const("div2", per_c(C, 1, 1))], "div2")
    t2 = node("Clip", [x, lo, hi], "clip2")
    # Concat read twice (by the BN chain and by the Sum): the chain starts after it.
    cat = node("Concat", [t1, t2], "cat", axis=1)
    x = bn(cat, "bn3", 2 * C)
    x = node("Mul", [x, const("mul3", np.array(1.7))], "mul3")
    t3 = node("Relu", [x], "relu3")
    # Depthwise conv + Clip; MaxPool with an Indices output nobody reads.
    x = node(
        "Conv",
        [t3, const("w4", w(2 * C, 1, 3, 3)), const("b4", rng.standard_normal(2 * C))],
        "dw4",
        pads=[1] * 4,
        group=2 * C,
    )
    x = node("Clip", [x, lo, hi], "clip4")
    nodes.append(
        helper.make_node(
            "MaxPool",
            [x],
            ["pool", "pool_idx"],
            name="pool",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1] * 4,
        )
    )
    # A Mul by a constant that varies along the width: not per channel, so it runs unfused.
    y = node("Conv", [cat, const("w5", w(2 * C, 2 * C, 1, 1))], "conv5", strides=[2, 2])
    y = node("Mul", [y, const("mul5", per_c(6))], "mul5")
    y = node("Add", [y, const("add5", per_c(2 * C, 1, 1))], "add5")
    # Residual Sum / Add: after the unfusable chain above, and after a conv + BN, with Relu.
    t = node("Sum", ["pool", y], "sum6")
    z = node("Conv", [t, const("w7", w(2 * C, 2 * C, 1, 1))], "conv7")
    z = bn(z, "bn7", 2 * C)
    z = node("Add", [t, z], "add7")
    node("Relu", [z], "out")
    # A Relu on an Identity (not a fresh buffer) must not write into the caller's input.
    ident = node("Identity", ["x"], "ident")
    node("Relu", [ident], "out2")
    graph = helper.make_graph(
        nodes,
        "fusion",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2 * C, 6, 6]),
            helper.make_tensor_value_info("out2", TensorProto.FLOAT, ["N", 3, 12, 12]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.from_proto(_fusion_model())


def _feeds(dtype: type = np.float32) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(dtype)}


def _all_tensors(m: Model) -> list[str]:
    return [n for n in m.graph.tensor_names() if n not in m.graph.input_names]


def _unfused(
    model: Model, feeds: dict[str, np.ndarray], dtype: type
) -> dict[str, np.ndarray]:
    """The outputs with every node run alone: a gradient run w.r.t. the input tapes all of them."""
    zeros = {name: (lambda v: np.zeros_like(v)) for name in ("out", "out2")}
    return dict(model.engine.value_and_grad(feeds, zeros, ["x"], dtype=dtype).values)


def test_plan_fuses_the_chains_nobody_can_see(model: Model) -> None:
    plan = build_plan(model.graph, frozenset({"out", "out2"}), frozenset())
    chains = {tuple(n.label for n in s.nodes) for s in plan.steps}
    assert ("conv1", "bn1", "mul1", "add1", "relu1") in chains
    assert ("conv2", "sub2", "div2", "clip2") in chains
    assert ("bn3", "mul3", "relu3") in chains
    assert ("dw4", "clip4") in chains
    # fused, but the Mul is not per channel: it runs unfused
    assert ("conv5", "mul5", "add5", "sum6") in chains
    assert ("conv7", "bn7", "add7", "out") in chains and ("ident", "out2") in chains
    assert ("cat",) in chains
    pool = next(s for s in plan.steps if s.head is not None and s.head.label == "pool")
    assert pool.values_only and pool.outputs == ("pool",)
    assert next(
        s for s in plan.steps if s.head is not None and s.head.label == "conv1"
    ).conv_fold
    # a requested intermediate cuts the chain; the taped nodes run alone
    cut = build_plan(model.graph, frozenset({"out", "bn1", "pool_idx"}), frozenset())
    chains = {tuple(n.label for n in s.nodes) for s in cut.steps}
    assert ("conv1", "bn1") in chains and (
        "mul1",
        "add1",
        "relu1",
    ) in chains  # a new chain after it
    assert not next(
        s for s in cut.steps if s.head is not None and s.head.label == "pool"
    ).values_only
    taped = frozenset(n.index for n in model.graph.nodes if n.label in ("bn3", "mul3"))
    chains = {
        tuple(n.label for n in s.nodes)
        for s in build_plan(model.graph, frozenset({"out"}), taped).steps
    }
    assert ("bn3",) in chains and ("mul3",) in chains and ("relu3",) in chains


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_fused_forward_equals_unfused(model: Model, dtype: type, rtol: float) -> None:
    feeds = _feeds(dtype)
    x_before = feeds["x"].copy()
    fused = model.engine.run(feeds, ["out", "out2"], dtype=dtype)
    unfused = _unfused(model, feeds, dtype)
    np.testing.assert_array_equal(
        feeds["x"], x_before
    )  # nothing wrote into the caller's input
    for name in ("out", "out2"):
        assert fused[name].dtype == dtype
        scale = float(np.abs(unfused[name]).max())
        np.testing.assert_allclose(
            fused[name], unfused[name], rtol=rtol, atol=rtol * scale
        )
    again = model.engine.run(feeds, ["out"], dtype=dtype)  # the cached plan and folds
    np.testing.assert_array_equal(again["out"], fused["out"])


def test_fused_forward_matches_onnxruntime(model: Model) -> None:
    feeds = _feeds()
    ours = model.engine.run(feeds, ["out", "out2", "pool_idx"])
    theirs = model.run(feeds, ["pool_idx"])
    for name, value in theirs.items():
        np.testing.assert_allclose(
            ours[name], value, rtol=1e-4, atol=1e-5 * float(np.abs(value).max())
        )


def test_gradient_through_a_fused_prefix(model: Model) -> None:
    """With ``wrt`` in the middle, the nodes before it run fused and the gradient is unchanged."""
    feeds = _feeds(np.float64)
    seed = np.random.default_rng(2).standard_normal(
        model.engine.run(feeds, ["out"], dtype=np.float64)["out"].shape
    )
    fused = model.engine.value_and_grad(
        feeds, {"out": seed}, ["relu3"], dtype=np.float64
    )
    unfused = model.engine.value_and_grad(
        feeds, {"out": seed}, ["relu3"], dtype=np.float64, values=_all_tensors(model)
    )
    np.testing.assert_allclose(
        fused.grads["relu3"], unfused.grads["relu3"], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        fused.values["out"], unfused.values["out"], rtol=1e-12, atol=1e-12
    )


def test_rule_overrides_still_apply_to_taped_activations(model: Model) -> None:
    feeds = _feeds(np.float64)
    seen: list[str] = []

    def relu_rule(call, g):  # type: ignore[no-untyped-def]
        seen.append(call.node)
        return (None if g is None else np.maximum(g, 0),)

    out_shape = model.engine.run(feeds, ["out"], dtype=np.float64)["out"].shape
    model.engine.value_and_grad(
        feeds,
        {"out": np.ones(out_shape)},
        ["x"],
        dtype=np.float64,
        rules={"Relu": relu_rule},
    )
    assert {"relu1", "relu3", "out"} <= set(seen)


def test_fold_cache_is_bounded() -> None:
    cache = FoldCache(max_bytes=100)
    a = (np.zeros(10, np.float32), None)  # 40 bytes
    for i in range(5):
        cache.put(((i,), "<f4", 4, 10), a)
    assert (
        cache.get(((0,), "<f4", 4, 10)) is None
        and cache.get(((4,), "<f4", 4, 10)) is not None
    )
    cache.put(
        ((9,), "<f4", 4, 10), (np.zeros(100, np.float32), None)
    )  # larger than the bound
    assert cache.get(((9,), "<f4", 4, 10)) is None
