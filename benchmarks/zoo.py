"""Benchmark models: the onnx wheel's light models and a MobileNet-V2-style model built here.

The light models compute their weights with constant subgraphs (values are constant, the compute
is the real architecture's), which is all a speed benchmark needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light(name: str) -> onnx.ModelProto:
    return onnx.load(LIGHT / f"light_{name}.onnx")


def mobilenet_v2(*, width: float = 1.0, seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """MobileNet-V2 at 224x224 (BN folded into the convs, ReLU6 as Clip), random weights, dynamic batch."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def const(value: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(value.astype(np.float32), n))
        return n

    lo, hi = const(np.array(0.0), "lo"), const(np.array(6.0), "hi")

    def conv(x: str, cin: int, cout: int, k: int, stride: int, group: int = 1, act: bool = True) -> str:
        fan_in = cin // group * k * k
        w = const(rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in), "w")
        b = const(rng.standard_normal(cout) * 0.01, "b")
        y = name("conv")
        nodes.append(
            helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                             pads=[k // 2] * 4, group=group, name=y)
        )
        if not act:
            return y
        z = name("relu6")
        nodes.append(helper.make_node("Clip", [y, lo, hi], [z], name=z))
        return z

    def ch(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    x = "input"
    c = ch(32)
    x = conv(x, 3, c, 3, 2)
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    for t, cout, n, s in settings:
        cout = ch(cout)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            y = x
            if t != 1:
                y = conv(y, c, hidden, 1, 1)
            y = conv(y, hidden, hidden, 3, stride, group=hidden)
            y = conv(y, hidden, cout, 1, 1, act=False)
            if stride == 1 and c == cout:
                z = name("add")
                nodes.append(helper.make_node("Add", [x, y], [z], name=z))
                y = z
            x, c = y, cout
    x = conv(x, c, 1280, 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    fw = const(rng.standard_normal((1000, 1280)) * 0.01, "fcw")
    fb = const(np.zeros(1000), "fcb")
    nodes.append(helper.make_node("Gemm", ["flat", fw, fb], ["logits"], transB=1, name="fc"))
    graph = helper.make_graph(
        nodes,
        "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


MODELS = {
    "resnet50": lambda: light("resnet50"),
    "vgg19": lambda: light("vgg19"),
    "densenet121": lambda: light("densenet121"),
    "mobilenet_v2": mobilenet_v2,
}
