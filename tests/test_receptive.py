"""Receptive fields: known answers on hand-built stacks (checked by hand in the comments), the
refusals, and an empirical check that a unit's input gradient lives exactly in its box."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.errors import InputError, TargetError
from onnxviz.model import Model
from onnxviz.receptive import (
    ReceptiveField,
    field_box,
    receptive_field,
    receptive_fields,
)
from tests import models


class Stack:
    """A tiny NCHW graph builder: every method appends one node and returns its output name."""

    def __init__(self, channels: int = 2, size: int = 32, opset: int = 13) -> None:
        self.rng = np.random.default_rng(0)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.channels = channels
        self.size = size
        self.opset = opset
        self.n = 0

    def _name(self, op: str) -> str:
        self.n += 1
        return f"{op.lower()}{self.n}"

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self._name(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, value: np.ndarray) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def conv(self, x: str, k: int, *, s: int = 1, d: int = 1, pads: list[int] | None = None, **attrs: Any) -> str:
        w = self.const(self.rng.standard_normal((self.channels, self.channels, k, k)).astype(np.float32))
        if pads is not None:
            attrs["pads"] = pads
        return self.node("Conv", [x, w], kernel_shape=[k, k], strides=[s, s], dilations=[d, d], **attrs)

    def model(self, out: str, layout: str = "NCHW") -> Model:
        shape = [1, self.channels, self.size, self.size] if layout == "NCHW" else [1, self.size, self.size, self.channels]
        graph = helper.make_graph(
            self.nodes,
            "stack",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", "c", "h", "w"])],
            self.inits,
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        proto.ir_version = 8
        return Model.from_proto(proto)


def rf_of(s: Stack, out: str, **kw: Any) -> ReceptiveField:
    return receptive_field(s.model(out, **kw), out)


# --------------------------------------------------------------------------------------------
# Known answers


def test_two_3x3_convs_see_5x5() -> None:
    s = Stack()
    a = s.conv("x", 3, pads=[1, 1, 1, 1])
    b = s.conv(s.node("Relu", [a]), 3, pads=[1, 1, 1, 1])
    assert rf_of(s, a) == ReceptiveField((3, 3), (1, 1), (-1, -1), True, "")
    # 3 + (3 - 1) * 1 = 5; offset -1 - 1 = -2: unit (0, 0) sees rows -2..2
    assert rf_of(s, b) == ReceptiveField((5, 5), (1, 1), (-2, -2), True, "")


def test_resnet_stem_conv7s2_maxpool3s2() -> None:
    s = Stack(size=64)
    c = s.conv("x", 7, s=2, pads=[3, 3, 3, 3])  # size 7, stride 2, offset -3
    p = s.node("MaxPool", [s.node("Relu", [c])], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    # size 7 + (3 - 1) * 2 = 11, stride 2 * 2 = 4, offset -3 - 1 * 2 = -5
    assert rf_of(s, p) == ReceptiveField((11, 11), (4, 4), (-5, -5), True, "")


def test_dilation_widens_the_kernel() -> None:
    s = Stack()
    a = s.conv("x", 3, d=2, pads=[2, 2, 2, 2])  # effective kernel 5: size 5, offset -2
    b = s.conv(a, 3, d=3, pads=[3, 3, 3, 3])  # + (3 - 1) * 3 = 6 -> 11, offset -2 - 3 = -5
    assert rf_of(s, a) == ReceptiveField((5, 5), (1, 1), (-2, -2), True, "")
    assert rf_of(s, b) == ReceptiveField((11, 11), (1, 1), (-5, -5), True, "")


def test_asymmetric_pads_and_strides_per_axis() -> None:
    s = Stack()
    # pads = [h_begin, w_begin, h_end, w_end]: only the begin pads move the field
    a = s.conv("x", 3, s=2, pads=[0, 2, 1, 0])
    b = s.node("AveragePool", [a], kernel_shape=[2, 3], strides=[1, 2], pads=[1, 0, 0, 0])
    assert rf_of(s, a) == ReceptiveField((3, 3), (2, 2), (0, -2), True, "")
    # h: 3 + 1 * 2 = 5, stride 2, offset 0 - 1 * 2 = -2; w: 3 + 2 * 2 = 7, stride 4, offset -2
    assert rf_of(s, b) == ReceptiveField((5, 7), (2, 4), (-2, -2), True, "")


def test_auto_pad_same_uses_the_tensor_size() -> None:
    s = Stack(size=8)
    a = s.node("Conv", ["x", s.const(np.ones((2, 2, 3, 3), np.float32))], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    b = s.node("Conv", ["x", s.const(np.ones((2, 2, 4, 4), np.float32))], kernel_shape=[4, 4], auto_pad="SAME_LOWER")
    # 8 -> 4 with k3 s2: total pad (4-1)*2 + 3 - 8 = 1, SAME_UPPER puts it at the end -> offset 0
    assert rf_of(s, a).offset == (0, 0)
    # k4 s1 on 8: total pad 3; SAME_LOWER puts the larger half (2) at the start
    m = s.model(b)
    assert receptive_field(m, b) == ReceptiveField((4, 4), (1, 1), (-2, -2), True, "")


def test_fan_in_add_and_concat_take_the_union() -> None:
    s = Stack()
    a = s.conv("x", 1)  # 1x1: size 1, offset 0
    b = s.conv(s.conv("x", 3, pads=[1, 1, 1, 1]), 3, pads=[1, 1, 1, 1])  # size 5, offset -2
    add = s.node("Add", [a, b])
    cat = s.node("Concat", [a, s.conv("x", 3, pads=[0, 0, 2, 2])], axis=1)  # offset 0, size 3
    out = s.node("Relu", [add])
    fields = receptive_fields(s.model(out))
    assert fields[add] == ReceptiveField((5, 5), (1, 1), (-2, -2), True, "")
    assert fields[out] == fields[add]
    assert fields[cat] == ReceptiveField((3, 3), (1, 1), (0, 0), True, "")


def test_fan_in_with_different_strides_is_a_bounding_box_with_a_note() -> None:
    s = Stack(size=16)
    strided = s.conv("x", 2, s=2)  # 16 -> 8, size 2, stride 2
    sl = s.node("Slice", [s.conv("x", 1), s.const(np.array([0, 0])), s.const(np.array([8, 8])), s.const(np.array([2, 3]))])
    add = s.node("Add", [strided, sl])
    rf = rf_of(s, add)
    assert rf.size == (2, 2) and rf.stride == (2, 2) and rf.offset == (0, 0)
    assert not rf.exact and "strides [1, 2]" in rf.note


def test_disjoint_branches_are_not_exact() -> None:
    s = Stack(size=16)
    left = s.conv("x", 1)
    shifted = s.node("Slice", [s.conv("x", 1), s.const(np.array([4])), s.const(np.array([16])), s.const(np.array([2]))])
    left = s.node("Slice", [left, s.const(np.array([0])), s.const(np.array([12])), s.const(np.array([2]))])
    rf = rf_of(s, s.node("Add", [left, shifted]))
    # rows: {0} and {4} -> box 0..4 with a gap; columns 0 for both
    assert rf.size == (5, 1) and rf.offset == (0, 0) and not rf.exact


def test_pad_shifts_the_offset_and_identity_ops_keep_the_field() -> None:
    s = Stack()
    p = s.node("Pad", ["x", s.const(np.array([0, 0, 2, 1, 0, 0, 0, 3], np.int64))])
    r = s.conv(p, 3)
    chain = s.node("Dropout", [s.node("Sigmoid", [s.node("Clip", [r])])])
    mul = s.node("Mul", [chain, s.const(np.float32(2.0))])
    assert rf_of(s, p) == ReceptiveField((1, 1), (1, 1), (-2, -1), True, "")
    assert rf_of(s, mul) == ReceptiveField((3, 3), (1, 1), (-2, -1), True, "")
    s2 = Stack()
    q = s2.node("Pad", ["x", s2.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], mode="reflect")
    rf = rf_of(s2, q)
    assert rf.offset == (-1, -1) and not rf.exact and "reflect" in rf.note


def test_global_pool_and_gemm_see_the_whole_image() -> None:
    m = Model.from_proto(models.tiny_cnn())
    fields = receptive_fields(m)
    assert fields["conv2"] == ReceptiveField((8, 8), (2, 2), (-3, -3), True, "")  # 3 -> pool 4 (s2) -> 4 + 2*2 = 8
    for name in ("gap", "flatten", "logits"):
        assert fields[name].is_full and fields[name].size == (32, 32)
        assert field_box(fields[name], 0, 0, (32, 32)) == (0, 32, 0, 32)


def test_nhwc_input_transposed_to_nchw_keeps_its_field() -> None:
    m = Model.from_proto(models.tf2onnx_nhwc())
    fields = receptive_fields(m)
    assert fields["model/conv2d/Conv2D__6:0"] == ReceptiveField((1, 1), (1, 1), (0, 0), True, "")
    # 3x3 s1 p1, then 3x3 s2 p1: size 3 + 2 = 5, stride 2, offset -1 - 1 = -2
    assert fields["model/conv2d_1/Relu:0"] == ReceptiveField((5, 5), (2, 2), (-2, -2), True, "")
    # after the transpose back to NHWC the field is the same; the mean over H, W is global
    assert fields["model/conv2d_1/Relu__10:0"] == fields["model/conv2d_1/Relu:0"]
    assert fields["model/global_average_pooling2d/Mean:0"].is_full


def test_resize_is_refused_and_the_refusal_propagates() -> None:
    s = Stack(size=8)
    c = s.conv("x", 3, pads=[1, 1, 1, 1])
    up = s.node("Resize", [c, "", s.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    after = s.conv(up, 3, pads=[1, 1, 1, 1])
    gap = s.node("GlobalAveragePool", [after])
    fields = receptive_fields(s.model(gap))
    assert c in fields and up not in fields and after not in fields
    with pytest.raises(TargetError, match="Resize"):
        fields[after]
    assert fields[gap].is_full  # a global pool sees everything whatever came before


def test_conv_transpose_is_approximated_and_says_so() -> None:
    s = Stack(size=16)
    down = s.conv("x", 2, s=2)  # size 2, stride 2, offset 0
    w = s.const(np.ones((2, 2, 2, 2), np.float32))
    up = s.node("ConvTranspose", [down, w], kernel_shape=[2, 2], strides=[2, 2])
    rf = rf_of(s, up)
    # stride 2 / 2 = 1; output i reads input t = i // 2 -> rows 2t..2t+1: the box i-1..i+1 covers it
    assert rf.stride == (1, 1) and rf.offset == (-1, -1) and rf.size == (3, 3)
    assert not rf.exact and "ConvTranspose" in rf.note
    s2 = Stack()
    w2 = s2.const(np.ones((2, 2, 2, 2), np.float32))
    up2 = s2.node("ConvTranspose", ["x", w2], kernel_shape=[2, 2], strides=[2, 2])
    with pytest.raises(TargetError, match="no common stride"):
        rf_of(s2, up2)


def test_field_box_clips_to_the_image() -> None:
    rf = ReceptiveField((11, 11), (4, 4), (-5, -5))
    assert field_box(rf, 0, 0, (64, 64)) == (0, 6, 0, 6)  # -5..5 clipped at 0
    assert field_box(rf, 3, 2, (64, 64)) == (7, 18, 3, 14)
    assert field_box(rf, 15, 15, (64, 64)) == (55, 64, 55, 64)  # 55..65 clipped at 64


def test_non_image_input_and_unknown_tensor() -> None:
    with pytest.raises(InputError, match="not an image input"):
        receptive_fields(Model.from_proto(models.non_image_mlp()))
    with pytest.raises(TargetError, match="does not depend"):
        receptive_field(Model.from_proto(models.tiny_cnn()), "conv1.weight")


# --------------------------------------------------------------------------------------------
# Empirical: the input gradient of one unit is non-zero exactly inside its box


def _gradient_box(model: Model, tensor: str, x: np.ndarray, unit: tuple[int, int, int]) -> tuple[int, int, int, int]:
    c, y, xx = unit

    def seed(v: np.ndarray) -> np.ndarray:
        s = np.zeros_like(v)
        s[0, c, y, xx] = 1
        return s

    g = model.value_and_grad(x, {tensor: seed}).grads[model.inputs[0].name][0]
    ys, xs = np.nonzero(np.abs(g).sum(axis=0))
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _strongest_unit(model: Model, tensor: str, x: np.ndarray, lo: int, hi: int) -> tuple[int, int, int]:
    v = model.run(x, [tensor])[tensor][0, :, lo:hi, lo:hi]
    c, y, xx = np.unravel_index(int(np.argmax(v)), v.shape)
    return int(c), int(y) + lo, int(xx) + lo


@pytest.mark.parametrize("tensor", ["conv1", "conv2", "relu2"])
def test_gradient_support_equals_the_box_on_tiny_cnn(tensor: str) -> None:
    model = Model.from_proto(models.tiny_cnn())
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    rf = receptive_field(model, tensor)
    unit = _strongest_unit(model, tensor, x, 3, 6)  # interior units: boxes not clipped
    assert _gradient_box(model, tensor, x, unit) == field_box(rf, unit[1], unit[2], (32, 32))


def _randomized_light(name: str, seed: int = 0) -> Model:
    """A light model with its ``ConstantOfShape`` weights replaced by random initializers
    (He-normal convs, BN scale near 1), so that every path carries a signal."""
    path = next((p for p in models.light_model_paths() if name in p.name), None)
    if path is None:
        pytest.skip(f"{name} is not in this onnx wheel")
    rng = np.random.default_rng(seed)
    proto = onnx.load(path)
    proto.ir_version = max(proto.ir_version, 4)
    consts = Model.from_proto(proto, check=False).graph.constants
    role: dict[str, tuple[str, int]] = {}
    for n in proto.graph.node:
        for i, inp in enumerate(n.input):
            role.setdefault(inp, (n.op_type, i))
    kept = []
    for n in proto.graph.node:
        out = n.output[0]
        if n.op_type != "ConstantOfShape" or out not in role:
            kept.append(n)
            continue
        shape = consts[out].shape
        op, i = role[out]
        if op in ("Conv", "Gemm") and i == 1:
            v = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif op == "BatchNormalization":
            v = {1: rng.uniform(0.5, 1.5, shape), 2: rng.normal(0, 0.1, shape), 3: np.zeros(shape)}.get(i, np.ones(shape))
        else:
            v = rng.normal(0, 0.1, shape)
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(v, np.float32), out))
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    return Model.from_proto(proto)


def test_gradient_support_equals_the_box_on_resnet50_at_stride_8() -> None:
    model = _randomized_light("resnet50")
    rf = receptive_field(model, "r77")  # last block of stage 2 (conv3_x), stride 8
    assert rf == ReceptiveField((91, 91), (8, 8), (-45, -45), True, "")
    assert receptive_field(model, "r3") == ReceptiveField((11, 11), (4, 4), (-5, -5), True, "")
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    unit = _strongest_unit(model, "r77", x, 10, 18)
    assert _gradient_box(model, "r77", x, unit) == field_box(rf, unit[1], unit[2], (224, 224))
