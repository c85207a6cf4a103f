"""Hand-built ONNX models for the tests: one small CNN per exporter pattern that onnxviz must open.

Every builder is deterministic (a seeded ``numpy.random.Generator`` of its own), returns an
``onnx.ModelProto`` that passes ``onnx.checker.check_model(full_check=True)`` and runs in
onnxruntime, and keeps to inputs of at most 3x32x32 and a few conv layers. Each docstring says
which exporter's habits it copies, because those habits (layouts, where the weights live, how
names look, which opset) are what the loader, the input pipeline and the reports have to survive.

Weights are He-scaled so that activations stay of order one through the few layers, which keeps
float32 comparisons at 1e-4 meaningful. Nothing here downloads anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

Dim = int | str

#: Fragments that ``hostile_names`` puts into names, doc strings and metadata; a report that
#: renders any of them unescaped (or evaluates the template expression) is broken.
HOSTILE_FRAGMENTS: tuple[str, ...] = (
    "<script>alert(1)</script>",
    "\"double\" and 'single' quotes",
    "{{ 7*7 }}",
    "&amp;",
    "line one\nline two",
    "ünïcødé — 猫 🙂",
)

#: ``with_dead_and_duplicate_filters``: the conv the audits should look at, and its defects.
AUDIT_CONV_NODE = "conv_audited"
AUDIT_CONV_WEIGHT = "conv_audited.weight"
DEAD_FILTER = 2  # all-zero weights and zero bias: the output channel is identically 0
NEVER_ACTIVE_FILTER = 3  # ordinary weights but a bias so negative that the ReLU never fires
DUPLICATE_FILTERS = (5, 6)  # identical weights and bias

#: ``with_escaping_external_data``: the location written into every initializer.
ESCAPING_LOCATION = "../secret.bin"


class _Graph:
    """Accumulates nodes and initializers for one graph, with a private seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def init(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | str,
        *,
        name: str | None = None,
        **attrs: Any,
    ) -> str:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        self.nodes.append(
            helper.make_node(op_type, list(inputs), outputs, name=name or outputs[0], **attrs)
        )
        return outputs[0]

    def constant(self, name: str, value: np.ndarray) -> str:
        """A ``Constant`` node (the weight lives in the node, not in ``graph.initializer``)."""
        tensor = numpy_helper.from_array(np.asarray(value), name)
        return self.node("Constant", [], name, name=f"{name}_const", value=tensor)

    def he(self, *shape: int, fan_in: int | None = None) -> np.ndarray:
        """He-normal weights: variance 2 / fan_in keeps ReLU activations of order one."""
        fan_in = fan_in if fan_in is not None else int(np.prod(shape[1:]))
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def small(self, *shape: int, scale: float = 0.1) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def conv(
        self,
        x: str,
        name: str,
        cin: int,
        cout: int,
        k: int,
        *,
        stride: int = 1,
        pad: int | None = None,
        group: int = 1,
    ) -> str:
        pad = k // 2 if pad is None else pad
        w = self.init(f"{name}.weight", self.he(cout, cin // group, k, k))
        b = self.init(f"{name}.bias", self.small(cout))
        return self.node(
            "Conv",
            [x, w, b],
            name,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=group,
        )

    def gemm(self, x: str, name: str, fin: int, fout: int) -> str:
        """``Gemm`` with ``transB=1`` and a ``[out, in]`` weight, as PyTorch's Linear exports."""
        w = self.init(f"{name}.weight", self.he(fout, fin))
        b = self.init(f"{name}.bias", self.small(fout))
        return self.node("Gemm", [x, w, b], name, transB=1)

    def graph(
        self,
        name: str,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        *,
        initializers_as_inputs: bool = False,
    ) -> onnx.GraphProto:
        inputs = list(inputs)
        if initializers_as_inputs:
            # Before IR version 4 every initializer had to be a graph input too.
            inputs += [
                helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                for t in self.initializers
            ]
        return helper.make_graph(self.nodes, name, inputs, list(outputs), self.initializers)


def _tensor(
    name: str, shape: Sequence[Dim], elem_type: int = TensorProto.FLOAT
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def _model(
    graph: onnx.GraphProto,
    opset: int,
    *,
    producer: str,
    producer_version: str = "",
    ir_version: int | None = None,
    doc: str = "",
) -> onnx.ModelProto:
    """Wrap a graph with the lowest IR version its opset allows, as exporters of that era wrote."""
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opset_ids,
        producer_name=producer,
        producer_version=producer_version,
        doc_string=doc,
    )
    model.ir_version = ir_version or helper.find_min_ir_version_for(opset_ids)
    return model


# --------------------------------------------------------------------------------------------
# Float models
# --------------------------------------------------------------------------------------------


def tiny_cnn(opset: int = 13, batch: Dim = "N", *, seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu-MaxPool-Conv-Relu-GlobalAveragePool-Flatten-Gemm, NCHW, as PyTorch exports it.

    ``input`` [batch, 3, 32, 32] -> ``logits`` [batch, 10]. Opsets 9 to 21 are accepted (every op
    used is unchanged over that range); ``batch`` is a symbolic name or a fixed size. The
    intermediate tensors are named ``conv1``, ``relu1``, ``pool1``, ``conv2``, ``relu2``,
    ``gap``, ``flatten``.
    """
    if not 9 <= opset <= 21:
        raise ValueError(f"tiny_cnn supports opsets 9..21, not {opset}")
    g = _Graph(seed)
    h = g.conv("input", "conv1", 3, 8, 3)
    h = g.node("Relu", [h], "relu1")
    h = g.node("MaxPool", [h], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    h = g.conv(h, "conv2", 8, 16, 3)
    h = g.node("Relu", [h], "relu2")
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flatten", axis=1)
    g.gemm(h, "logits", 16, 10)
    graph = g.graph(
        "tiny_cnn", [_tensor("input", [batch, 3, 32, 32])], [_tensor("logits", [batch, 10])]
    )
    return _model(graph, opset, producer="pytorch", producer_version="2.1.0")


def tf2onnx_nhwc(*, seed: int = 1) -> onnx.ModelProto:
    """A Keras model through tf2onnx (opset 13): NHWC input, a Transpose to NCHW before the convs.

    ``input_1`` [unk__6, 32, 32, 3] -> ``dense`` [unk__6, 10] (softmax probabilities). Like
    tf2onnx: ``unk__`` batch names, TF-scoped node names with ``:0`` tensor names, a Transpose
    back to NHWC before the global pooling (``ReduceMean`` over H, W), and Dense as
    ``MatMul`` + ``Add`` with an ``[in, out]`` kernel.
    """
    g = _Graph(seed)
    batch = "unk__6"
    x = g.node(
        "Transpose",
        ["input_1"],
        "model/conv2d/Conv2D__6:0",
        name="model/conv2d/Conv2D__6",
        perm=[0, 3, 1, 2],
    )
    for i, (cin, cout, stride) in enumerate([(3, 8, 1), (8, 16, 2)]):
        scope = "model/conv2d" + (f"_{i}" if i else "")
        w = g.init(f"{scope}/Conv2D/ReadVariableOp:0", g.he(cout, cin, 3, 3))
        b = g.init(f"{scope}/BiasAdd/ReadVariableOp:0", g.small(cout))
        x = g.node(
            "Conv",
            [x, w, b],
            f"{scope}/BiasAdd:0",
            name=f"{scope}/BiasAdd",
            kernel_shape=[3, 3],
            strides=[stride, stride],
            pads=[1, 1, 1, 1],
        )
        x = g.node("Relu", [x], f"{scope}/Relu:0", name=f"{scope}/Relu")
    x = g.node(
        "Transpose",
        [x],
        "model/conv2d_1/Relu__10:0",
        name="model/conv2d_1/Relu__10",
        perm=[0, 2, 3, 1],
    )
    x = g.node(
        "ReduceMean",
        [x],
        "model/global_average_pooling2d/Mean:0",
        name="model/global_average_pooling2d/Mean",
        axes=[1, 2],
        keepdims=0,
    )
    kernel = g.init("model/dense/MatMul/ReadVariableOp:0", g.he(16, 10, fan_in=16))
    bias = g.init("model/dense/BiasAdd/ReadVariableOp:0", g.small(10))
    x = g.node("MatMul", [x, kernel], "model/dense/MatMul:0", name="model/dense/MatMul")
    x = g.node("Add", [x, bias], "model/dense/BiasAdd:0", name="model/dense/BiasAdd")
    g.node("Softmax", [x], "dense", name="model/dense/Softmax", axis=-1)
    graph = g.graph(
        "tf2onnx",
        [_tensor("input_1", [batch, 32, 32, 3])],
        [_tensor("dense", [batch, 10])],
    )
    return _model(graph, 13, producer="tf2onnx", producer_version="1.16.1 15c810")


def paddle_style_constants(*, seed: int = 2) -> onnx.ModelProto:
    """PaddlePaddle through paddle2onnx (opset 11): every weight is a ``Constant`` node.

    ``x`` [-1, 3, 32, 32] -> ``save_infer_model/scale_0.tmp_0`` [-1, 10]. Like paddle2onnx: the
    dynamic batch is ``dim_value: -1`` rather than a symbolic name, there are no initializers at
    all, the conv bias is a separate ``Add`` of a ``[1, C, 1, 1]`` constant, batch norm takes
    constant scale/bias/mean/var, flattening is a ``Reshape`` to ``[0, -1]`` and the classifier is
    ``MatMul`` + ``Add``.
    """
    g = _Graph(seed)
    x = "x"
    for i, (cin, cout) in enumerate([(3, 8), (8, 16)]):
        w = g.constant(f"conv2d_{i}.w_0", g.he(cout, cin, 3, 3))
        x = g.node(
            "Conv",
            [x, w],
            f"conv2d_{i}.tmp_0",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        )
        b = g.constant(f"conv2d_{i}.b_0", g.small(1, cout, 1, 1))
        x = g.node("Add", [x, b], f"conv2d_{i}.tmp_1")
        bn = [
            g.constant(f"batch_norm_{i}.w_0", g.rng.uniform(0.5, 1.5, cout).astype(np.float32)),
            g.constant(f"batch_norm_{i}.b_0", g.small(cout)),
            g.constant(f"batch_norm_{i}.w_1", g.small(cout, scale=0.2)),
            g.constant(f"batch_norm_{i}.w_2", g.rng.uniform(0.5, 2.0, cout).astype(np.float32)),
        ]
        x = g.node("BatchNormalization", [x, *bn], f"batch_norm_{i}.tmp_2", epsilon=1e-5)
        x = g.node("Relu", [x], f"relu_{i}.tmp_0")
        x = g.node("MaxPool", [x], f"pool2d_{i}.tmp_0", kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("GlobalAveragePool", [x], "pool2d_2.tmp_0")
    shape = g.constant("reshape_0.shape", np.array([0, -1], dtype=np.int64))
    x = g.node("Reshape", [x, shape], "reshape2_0.tmp_0")
    w = g.constant("linear_0.w_0", g.he(16, 10, fan_in=16))
    x = g.node("MatMul", [x, w], "linear_0.tmp_0")
    b = g.constant("linear_0.b_0", g.small(10))
    x = g.node("Add", [x, b], "linear_0.tmp_1")
    g.node("Softmax", [x], "save_infer_model/scale_0.tmp_0", axis=1)
    graph = g.graph(
        "paddle-onnx",
        [_tensor("x", [-1, 3, 32, 32])],
        [_tensor("save_infer_model/scale_0.tmp_0", [-1, 10])],
    )
    return _model(graph, 11, producer="PaddlePaddle", producer_version="2.6.0")


def constant_subgraph_weights(*, seed: int = 3) -> onnx.ModelProto:
    """Weights that exist only after constant folding, as in unoptimised exports and light models.

    ``input`` [N, 3, 32, 32] -> ``logits`` [N, 10] (opset 13). Every weight is the output of a
    small constant subgraph rather than an initializer used directly:

    - ``conv1`` weight: an HWIO initializer (TensorFlow's layout) through ``Transpose`` to OIHW,
      as tf2onnx leaves it without its optimiser;
    - ``conv1`` bias: ``ConstantOfShape`` with a 0.05 fill, as the onnx light models store weights;
    - ``conv2`` weight and bias: float16 storage through ``Cast`` to float32, as fp16 exports do;
    - ``fc`` weight: a flat ``Constant`` through ``Reshape``; ``fc`` bias: int32 through ``Cast``.
    """
    g = _Graph(seed)
    hwio = g.init("conv1.weight.hwio", g.he(8, 3, 3, 3).transpose(2, 3, 1, 0))
    w1 = g.node("Transpose", [hwio], "conv1.weight", perm=[3, 2, 0, 1])
    b1_shape = g.constant("conv1.bias.shape", np.array([8], dtype=np.int64))
    b1 = g.node(
        "ConstantOfShape",
        [b1_shape],
        "conv1.bias",
        value=numpy_helper.from_array(np.array([0.05], dtype=np.float32)),
    )
    x = g.node("Conv", ["input", w1, b1], "conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = g.node("Relu", [x], "relu1")
    x = g.node("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    w2_half = g.init("conv2.weight.fp16", g.he(16, 8, 3, 3).astype(np.float16))
    w2 = g.node("Cast", [w2_half], "conv2.weight", to=TensorProto.FLOAT)
    b2_half = g.constant("conv2.bias.fp16", g.small(16).astype(np.float16))
    b2 = g.node("Cast", [b2_half], "conv2.bias", to=TensorProto.FLOAT)
    x = g.node("Conv", [x, w2, b2], "conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = g.node("Relu", [x], "relu2")
    x = g.node("GlobalAveragePool", [x], "gap")
    x = g.node("Flatten", [x], "flatten")
    flat = g.constant("fc.weight.flat", g.he(10, 16).reshape(-1))
    fc_shape = g.constant("fc.weight.shape", np.array([10, 16], dtype=np.int64))
    wf = g.node("Reshape", [flat, fc_shape], "fc.weight")
    bf_int = g.constant("fc.bias.int", g.rng.integers(-2, 3, 10).astype(np.int32))
    bf = g.node("Cast", [bf_int], "fc.bias", to=TensorProto.FLOAT)
    g.node("Gemm", [x, wf, bf], "logits", transB=1)
    graph = g.graph(
        "constant_subgraphs", [_tensor("input", ["N", 3, 32, 32])], [_tensor("logits", ["N", 10])]
    )
    return _model(graph, 13, producer="pytorch", producer_version="1.13.1")


def grayscale_cnn(*, seed: int = 4) -> onnx.ModelProto:
    """An MNIST-style LeNet: one-channel 28x28 input, unpadded 5x5 and 3x3 convs.

    ``Input3`` [N, 1, 28, 28] -> ``Plus214_Output_0`` [N, 10] (opset 13), named as the model zoo's
    CNTK MNIST export names them, with a ``Reshape`` flatten feeding ``Gemm``.
    """
    g = _Graph(seed)
    x = g.conv("Input3", "Convolution28_Output_0", 1, 4, 5, pad=0)  # 24x24
    x = g.node("Relu", [x], "ReLU32_Output_0")
    x = g.node("MaxPool", [x], "Pooling66_Output_0", kernel_shape=[2, 2], strides=[2, 2])  # 12x12
    x = g.conv(x, "Convolution110_Output_0", 4, 8, 3, pad=0)  # 10x10
    x = g.node("Relu", [x], "ReLU114_Output_0")
    x = g.node("MaxPool", [x], "Pooling160_Output_0", kernel_shape=[2, 2], strides=[2, 2])  # 5x5
    shape = g.init("Pooling160_Output_0_reshape0_shape", np.array([-1, 200], dtype=np.int64))
    x = g.node("Reshape", [x, shape], "Pooling160_Output_0_reshape0")
    g.gemm(x, "Plus214_Output_0", 200, 10)
    graph = g.graph(
        "CNTKGraph",
        [_tensor("Input3", ["N", 1, 28, 28])],
        [_tensor("Plus214_Output_0", ["N", 10])],
    )
    return _model(graph, 13, producer="CNTK", producer_version="2.7")


def two_input_model(*, seed: int = 5) -> onnx.ModelProto:
    """An image and a side vector combined late, as multi-modal PyTorch models export.

    ``image`` [N, 3, 32, 32] and ``meta`` [N, 4] -> ``score`` [N, 2] (opset 13). The image
    branch is conv-pool-GAP to [N, 8]; ``meta`` goes through its own Gemm to [N, 8]; the two are
    concatenated on axis 1 before the head. Attribution must treat ``meta`` as a second input,
    not as an image.
    """
    g = _Graph(seed)
    x = g.conv("image", "conv1", 3, 8, 3, stride=2)
    x = g.node("Relu", [x], "relu1")
    x = g.conv(x, "conv2", 8, 8, 3)
    x = g.node("Relu", [x], "relu2")
    x = g.node("GlobalAveragePool", [x], "gap")
    x = g.node("Flatten", [x], "image_features")
    m = g.gemm("meta", "meta_fc", 4, 8)
    m = g.node("Relu", [m], "meta_features")
    x = g.node("Concat", [x, m], "fused", axis=1)
    g.gemm(x, "score", 16, 2)
    graph = g.graph(
        "two_inputs",
        [_tensor("image", ["N", 3, 32, 32]), _tensor("meta", ["N", 4])],
        [_tensor("score", ["N", 2])],
    )
    return _model(graph, 13, producer="pytorch", producer_version="2.1.0")


def non_image_mlp(*, seed: int = 6) -> onnx.ModelProto:
    """A tabular MLP, as PyTorch exports ``Linear-ReLU-Linear``: no image input at all.

    ``features`` [N, 16] -> ``scores`` [N, 3] (opset 13). onnxviz must say clearly that image
    methods do not apply rather than guess a layout.
    """
    g = _Graph(seed)
    x = g.gemm("features", "fc1", 16, 32)
    x = g.node("Relu", [x], "relu1")
    g.gemm(x, "scores", 32, 3)
    graph = g.graph("mlp", [_tensor("features", ["N", 16])], [_tensor("scores", ["N", 3])])
    return _model(graph, 13, producer="pytorch", producer_version="2.1.0")


def dynamic_spatial(*, seed: int = 7) -> onnx.ModelProto:
    """A fully convolutional net with symbolic batch, height and width (opset 17).

    ``input`` [N, 3, H, W] -> ``logits`` [N, 5]: padded convs (one stride 2), a 1x1 class conv
    and ``GlobalAveragePool``, so any H, W >= 1 runs, as segmentation-style and
    ``dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}}`` exports allow.
    """
    g = _Graph(seed)
    x = g.conv("input", "conv1", 3, 8, 3)
    x = g.node("Relu", [x], "relu1")
    x = g.conv(x, "conv2", 8, 16, 3, stride=2)
    x = g.node("Relu", [x], "relu2")
    x = g.conv(x, "classifier", 16, 5, 1)
    x = g.node("GlobalAveragePool", [x], "gap")
    g.node("Flatten", [x], "logits")
    graph = g.graph(
        "fully_convolutional",
        [_tensor("input", ["N", 3, "H", "W"])],
        [_tensor("logits", ["N", 5])],
    )
    return _model(graph, 17, producer="pytorch", producer_version="2.1.0")


def hostile_names(*, seed: int = 8) -> onnx.ModelProto:
    """``tiny_cnn`` with every name and doc string an injection attempt (opset 13).

    Graph, node and tensor names (input, output, intermediates, initializers), doc strings,
    producer and metadata all carry ``HOSTILE_FRAGMENTS``. Exporters copy user-controlled strings
    (module paths, layer names, model cards) into these fields, so reports must escape them all.
    Input ``<script>alert(1)</script> "input"`` [N, 3, 32, 32] -> output
    ``logits {{ 7*7 }} &amp; ünïcødé`` [N, 10].
    """
    script, quotes, template, amp, newline, uni = HOSTILE_FRAGMENTS
    inp = f'{script} "input"'
    out = f"logits {template} {amp} ünïcødé"
    g = _Graph(seed)
    x = g.conv(inp, f"conv {quotes}", 3, 8, 3)
    g.nodes[-1].doc_string = f"{script} {newline}"
    x = g.node("Relu", [x], f"relu {template}", name=f"relu node {script}")
    x = g.node("MaxPool", [x], f"pool {amp} {newline}", kernel_shape=[2, 2], strides=[2, 2])
    x = g.conv(x, f"conv2 {uni}", 8, 16, 3)
    x = g.node("Relu", [x], f"relu2 {uni} {script}")
    x = g.node("GlobalAveragePool", [x], f"gap {quotes} {amp}")
    x = g.node("Flatten", [x], f"flatten {newline} {template}")
    g.gemm(x, out, 16, 10)
    g.nodes[-1].doc_string = f"{quotes} {template} {uni}"
    inputs = [_tensor(inp, ["N", 3, 32, 32])]
    inputs[0].doc_string = f"{amp} {script}"
    graph = g.graph(f"graph {script}", inputs, [_tensor(out, ["N", 10])])
    graph.doc_string = f"{template} {newline}"
    model = _model(
        graph,
        13,
        producer=f"producer {script}",
        producer_version=f"{quotes} {template}",
        doc=" ".join(HOSTILE_FRAGMENTS),
    )
    model.domain = f"ai.{amp}.{uni}"
    helper.set_model_props(
        model,
        {
            script: template,
            "author": f"{quotes} {amp}",
            f"notes {newline}": f"{uni} {script}",
        },
    )
    return model


def with_dead_and_duplicate_filters(*, seed: int = 9) -> onnx.ModelProto:
    """A conv whose filters have the defects that weight and activation audits look for (opset 13).

    ``input`` [N, 3, 32, 32] -> ``logits`` [N, 10]. The first conv (node ``AUDIT_CONV_NODE``,
    weight ``AUDIT_CONV_WEIGHT``, 8 filters, output ``conv_audited``) has filter
    ``DEAD_FILTER`` all zero with zero bias, filter ``NEVER_ACTIVE_FILTER`` with a -100 bias
    (dead after the ReLU for any input of ordinary range), and filters ``DUPLICATE_FILTERS``
    identical in weights and bias. Such filters appear after pruning or from dying ReLUs.
    """
    g = _Graph(seed)
    w = g.he(8, 3, 3, 3)
    b = g.small(8)
    w[DEAD_FILTER] = 0.0
    b[DEAD_FILTER] = 0.0
    b[NEVER_ACTIVE_FILTER] = -100.0
    first, second = DUPLICATE_FILTERS
    w[second] = w[first]
    b[second] = b[first]
    g.init(AUDIT_CONV_WEIGHT, w)
    g.init(f"{AUDIT_CONV_NODE}.bias", b)
    x = g.node(
        "Conv",
        ["input", AUDIT_CONV_WEIGHT, f"{AUDIT_CONV_NODE}.bias"],
        AUDIT_CONV_NODE,
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
    )
    x = g.node("Relu", [x], "relu1")
    x = g.node("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    x = g.conv(x, "conv2", 8, 16, 3)
    x = g.node("Relu", [x], "relu2")
    x = g.node("GlobalAveragePool", [x], "gap")
    x = g.node("Flatten", [x], "flatten")
    g.gemm(x, "logits", 16, 10)
    graph = g.graph(
        "audit_targets", [_tensor("input", ["N", 3, 32, 32])], [_tensor("logits", ["N", 10])]
    )
    return _model(graph, 13, producer="pytorch", producer_version="2.1.0")


def old_opset_model(opset: int = 7, *, seed: int = 10) -> onnx.ModelProto:
    """A Caffe2/early-PyTorch era graph at opset 7, 8 or 9, with IR version 3 or 4.

    ``data_0`` [1, 3, 32, 32] (fixed batch, as those exporters wrote) -> ``prob`` [1, 4, 32, 32].
    Conv -> BatchNormalization -> Relu -> MaxPool -> Conv -> Relu -> Upsample (nearest, x2) ->
    1x1 Conv -> Softmax(axis=1). At opsets 7/8, BatchNormalization-7 carries ``spatial=1`` and
    Upsample-7 takes ``scales`` as an attribute; at opset 9, BatchNormalization-9 and Upsample-9
    with a ``scales`` input. Softmax-1 on the 4-D tensor coerces it to 2-D ``[1, 4*32*32]``, so
    the probabilities sum to one over channels *and* pixels, not per pixel. As IR < 4 requires,
    every initializer is listed among the graph inputs too (with IR 4 too, as those exporters
    kept doing), so "inputs" include weights that must not be treated as user inputs.
    """
    if opset not in (7, 8, 9):
        raise ValueError(f"old_opset_model supports opsets 7, 8 and 9, not {opset}")
    g = _Graph(seed)
    x = g.conv("data_0", "conv1_1", 3, 8, 3)
    bn_inputs = [
        g.init("bn1_scale", g.rng.uniform(0.5, 1.5, 8).astype(np.float32)),
        g.init("bn1_bias", g.small(8)),
        g.init("bn1_mean", g.small(8, scale=0.2)),
        g.init("bn1_var", g.rng.uniform(0.5, 2.0, 8).astype(np.float32)),
    ]
    bn_attrs: dict[str, Any] = {"epsilon": 1e-5}
    if opset < 9:
        bn_attrs["spatial"] = 1
    x = g.node("BatchNormalization", [x, *bn_inputs], "bn1", **bn_attrs)
    x = g.node("Relu", [x], "relu1")
    x = g.node("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    x = g.conv(x, "conv2_1", 8, 8, 3)
    x = g.node("Relu", [x], "relu2")
    scales = np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32)
    if opset < 9:
        x = g.node("Upsample", [x], "upsample1", mode="nearest", scales=scales.tolist())
    else:
        x = g.node("Upsample", [x, g.init("upsample1_scales", scales)], "upsample1", mode="nearest")
    x = g.conv(x, "score", 8, 4, 1)
    g.node("Softmax", [x], "prob", axis=1)
    graph = g.graph(
        "caffe2_net",
        [_tensor("data_0", [1, 3, 32, 32])],
        [_tensor("prob", [1, 4, 32, 32])],
        initializers_as_inputs=True,
    )
    return _model(graph, opset, producer="onnx-caffe2", ir_version=3 if opset < 9 else 4)


# --------------------------------------------------------------------------------------------
# Quantized models
# --------------------------------------------------------------------------------------------


def _per_channel_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 quantization (zero point 0), as onnxruntime quantizes."""
    scale = (np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0).astype(np.float32)
    q = np.clip(np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
    return q, scale


def quantized_qdq(*, seed: int = 11) -> onnx.ModelProto:
    """onnxruntime's static quantizer in QDQ format (opset 13).

    ``input`` [N, 3, 32, 32] float -> ``logits`` [N, 10] float. Activations pass through
    ``QuantizeLinear``/``DequantizeLinear`` pairs (uint8, scale and zero point per tensor); conv
    weights are int8 initializers with per-channel (``axis=0``) scales through
    ``DequantizeLinear``; biases are int32 with scale ``input_scale * weight_scale``, also
    dequantized per channel; the final Gemm weight is per-tensor int8. Bypassing the activation
    Q/DQ pairs leaves a float ``tiny_cnn``-shaped graph.
    """
    g = _Graph(seed)

    def qdq(x: str, name: str, scale: float, zero_point: int) -> tuple[str, float]:
        s = g.init(f"{name}_scale", np.array(scale, dtype=np.float32))
        z = g.init(f"{name}_zero_point", np.array(zero_point, dtype=np.uint8))
        q = g.node("QuantizeLinear", [x, s, z], f"{name}_QuantizeLinear_Output")
        return g.node("DequantizeLinear", [q, s, z], f"{name}_DequantizeLinear_Output"), scale

    def qconv(x: str, x_scale: float, name: str, cin: int, cout: int) -> str:
        wq, ws = _per_channel_int8(g.he(cout, cin, 3, 3))
        w = g.node(
            "DequantizeLinear",
            [
                g.init(f"{name}.weight_quantized", wq),
                g.init(f"{name}.weight_scale", ws),
                g.init(f"{name}.weight_zero_point", np.zeros(cout, dtype=np.int8)),
            ],
            f"{name}.weight_DequantizeLinear_Output",
            axis=0,
        )
        bias_scale = (x_scale * ws).astype(np.float32)
        bq = np.round(g.small(cout) / bias_scale).astype(np.int32)
        b = g.node(
            "DequantizeLinear",
            [g.init(f"{name}.bias_quantized", bq), g.init(f"{name}.bias_scale", bias_scale)],
            f"{name}.bias_DequantizeLinear_Output",
            axis=0,
        )
        return g.node(
            "Conv", [x, w, b], f"{name}_output", name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        )

    x, s = qdq("input", "input", 0.02, 128)
    x = qconv(x, s, "conv1", 3, 8)
    x = g.node("Relu", [x], "relu1_output")
    x, s = qdq(x, "relu1_output", 0.02, 0)
    x = g.node("MaxPool", [x], "pool1_output", kernel_shape=[2, 2], strides=[2, 2])
    x, s = qdq(x, "pool1_output", 0.02, 0)
    x = qconv(x, s, "conv2", 8, 16)
    x = g.node("Relu", [x], "relu2_output")
    x, s = qdq(x, "relu2_output", 0.02, 0)
    x = g.node("GlobalAveragePool", [x], "gap_output")
    x, s = qdq(x, "gap_output", 0.01, 0)
    x = g.node("Flatten", [x], "flatten_output")
    wf = g.he(10, 16)
    wf_scale = np.float32(np.abs(wf).max() / 127.0)
    w = g.node(
        "DequantizeLinear",
        [
            g.init("fc.weight_quantized", np.round(wf / wf_scale).astype(np.int8)),
            g.init("fc.weight_scale", np.array(wf_scale, dtype=np.float32)),
            g.init("fc.weight_zero_point", np.array(0, dtype=np.int8)),
        ],
        "fc.weight_DequantizeLinear_Output",
    )
    g.node("Gemm", [x, w, g.init("fc.bias", g.small(10))], "logits", name="fc", transB=1)
    graph = g.graph(
        "tiny_cnn_qdq", [_tensor("input", ["N", 3, 32, 32])], [_tensor("logits", ["N", 10])]
    )
    return _model(graph, 13, producer="onnx.quantize", producer_version="0.1.0")


def quantized_qlinear(*, seed: int = 12) -> onnx.ModelProto:
    """QOperator-format quantization: ``QLinearConv`` and ``ConvInteger`` (opset 13).

    ``input`` [N, 3, 32, 32] float -> ``logits`` [N, 10] float. ``QuantizeLinear`` takes the
    input to uint8; ``QLinearConv`` (int8 per-channel weights, int32 bias, uint8 output with zero
    point 0, which folds the ReLU in as onnxruntime's quantizer does) makes the first feature map;
    ``ConvInteger`` (uint8 weights with zero point 128, the dynamic quantizer's pattern) makes the
    second, which is rescaled to float by ``Cast`` and ``Mul`` and finished in float.
    """
    g = _Graph(seed)
    x_scale, x_zp = 0.02, 128
    y_scale = 0.02
    s_in = g.init("input_scale", np.array(x_scale, dtype=np.float32))
    z_in = g.init("input_zero_point", np.array(x_zp, dtype=np.uint8))
    xq = g.node("QuantizeLinear", ["input", s_in, z_in], "input_quantized")

    w1q, w1s = _per_channel_int8(g.he(8, 3, 3, 3))
    b1q = np.round(g.small(8) / (x_scale * w1s)).astype(np.int32)
    y1 = g.node(
        "QLinearConv",
        [
            xq,
            s_in,
            z_in,
            g.init("conv1.weight_quantized", w1q),
            g.init("conv1.weight_scale", w1s),
            g.init("conv1.weight_zero_point", np.zeros(8, dtype=np.int8)),
            g.init("relu1_output_scale", np.array(y_scale, dtype=np.float32)),
            g.init("relu1_output_zero_point", np.array(0, dtype=np.uint8)),
            g.init("conv1.bias_quantized", b1q),
        ],
        "relu1_output_quantized",
        name="conv1_quant",
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
    )

    w2 = g.he(16, 8, 3, 3)
    w2_scale = np.float32(np.abs(w2).max() / 127.0)
    w2q = (np.clip(np.round(w2 / w2_scale), -127, 127) + 128).astype(np.uint8)
    acc = g.node(
        "ConvInteger",
        [
            y1,
            g.init("conv2.weight_quantized", w2q),
            g.init("relu1_output_zero_point_for_convinteger", np.array(0, dtype=np.uint8)),
            g.init("conv2.weight_zero_point", np.array(128, dtype=np.uint8)),
        ],
        "conv2_output_quantized",
        name="conv2_quant",
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        strides=[2, 2],
    )
    acc = g.node("Cast", [acc], "conv2_output_quantized_cast_output", to=TensorProto.FLOAT)
    scale = g.init("conv2_output_scale", np.array(y_scale * w2_scale, dtype=np.float32))
    x = g.node("Mul", [acc, scale], "conv2_output_rescaled")
    x = g.node("Add", [x, g.init("conv2.bias", g.small(1, 16, 1, 1))], "conv2_output")
    x = g.node("Relu", [x], "relu2_output")
    x = g.node("GlobalAveragePool", [x], "gap_output")
    x = g.node("Flatten", [x], "flatten_output")
    g.gemm(x, "logits", 16, 10)
    graph = g.graph(
        "tiny_cnn_qoperator", [_tensor("input", ["N", 3, 32, 32])], [_tensor("logits", ["N", 10])]
    )
    return _model(graph, 13, producer="onnx.quantize", producer_version="0.1.0")


# --------------------------------------------------------------------------------------------
# Models on disk
# --------------------------------------------------------------------------------------------


def with_external_data(tmp_dir: str | os.PathLike[str]) -> Path:
    """``tiny_cnn()`` saved as ``tiny_cnn.onnx`` with every initializer in ``tiny_cnn.onnx.data``.

    This is how exporters write models over 2 GB (and how PyTorch's dynamo exporter writes
    any model by default); the weights file sits beside the model and is referenced by a
    relative location. Returns the path of the ``.onnx`` file.
    """
    directory = Path(tmp_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny_cnn.onnx"
    onnx.save_model(
        tiny_cnn(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="tiny_cnn.onnx.data",
        size_threshold=0,
    )
    return path


def with_escaping_external_data(tmp_dir: str | os.PathLike[str]) -> Path:
    """A model whose external data location, ``ESCAPING_LOCATION``, leaves the model's folder.

    Writes ``tmp_dir/model/escaping.onnx`` and ``tmp_dir/secret.bin``; the latter really holds
    ``tiny_cnn``'s weights at the recorded offsets, so a loader that followed the path would
    succeed: onnxviz must refuse by itself, not because the file is missing. Returns the
    ``.onnx`` path. (The tensors are rewritten by hand because ``onnx.save_model`` rightly
    refuses to write such a location.)
    """
    root = Path(tmp_dir)
    model_dir = root / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model = tiny_cnn()
    blob = bytearray()
    for tensor in model.graph.initializer:
        raw = numpy_helper.to_array(tensor).tobytes()
        offset = len(blob)
        blob += raw
        blob += b"\0" * (-len(blob) % 64)
        set_external_data(tensor, ESCAPING_LOCATION, offset=offset, length=len(raw))
        tensor.data_location = TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
    (root / "secret.bin").write_bytes(bytes(blob))
    path = model_dir / "escaping.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def light_model_paths() -> list[Path]:
    """The ``light_*.onnx`` models shipped inside the installed onnx package, sorted by path.

    They are the model zoo's classic networks (AlexNet, DenseNet-121, Inception v1/v2,
    ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512) at opset 9, IR 3, with every weight
    replaced by a ``ConstantOfShape`` so that the files are a few kilobytes.
    """
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return sorted(light.glob("*.onnx"))


def fixed_flatten_cnn(slice_batch: bool = False, allowzero: bool = False) -> onnx.ModelProto:
    """input [1, 3, 8, 8] -> Conv -> Relu -> Reshape [1, -1] -> Gemm -> logits [1, 4]; with
    ``slice_batch`` the logits are sliced to their first row (a batch the rewrite cannot see)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"),
        numpy_helper.from_array(rng.standard_normal((4, 72)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv"], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("Reshape", ["relu", "flat_shape"], ["flat"], name="flat",
                         **({"allowzero": 1} if allowzero else {})),
        helper.make_node("Gemm", ["flat", "fc"], ["gemm"], name="gemm", transB=1),
    ]
    if slice_batch:
        nodes.append(helper.make_node("Slice", ["gemm", "zero", "one", "zero"], ["logits"], name="first_row"))
    else:
        nodes.append(helper.make_node("Identity", ["gemm"], ["logits"], name="logits"))
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def tiny_cnn_with_unsupported_op() -> onnx.ModelProto:
    """tiny_cnn with ``Shrink(lambd=0, bias=0)`` (the identity) after the first ReLU: an op the
    numpy engine has no rule for, which onnxruntime runs (forward-only methods must still work)."""
    proto = tiny_cnn()
    nodes = list(proto.graph.node)
    k = next(i for i, n in enumerate(nodes) if n.output[0] == "relu1")
    for n in nodes:
        for j, name in enumerate(n.input):
            if name == "relu1":
                n.input[j] = "shrunk"
    nodes.insert(k + 1, helper.make_node("Shrink", ["relu1"], ["shrunk"], name="the_shrink", lambd=0.0, bias=0.0))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto
