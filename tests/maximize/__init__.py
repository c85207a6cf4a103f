"""Tests of onnxviz.maximize, and the small structured CNN they optimise on.

:func:`gabor_cnn` is a train-free stand-in for a trained network: its first layer is a bank of
oriented Gabor filters (luminance and colour-opponent), so its units respond to oriented,
periodic, coloured structure and their optima are structured images rather than noise; the
layers above mix those responses with fixed random (He) weights and stride-2 convs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GABOR_LAYERS = ("relu1", "relu2", "relu3")


def gabor_bank(k: int = 7, n_orient: int = 8, wavelengths: tuple[float, ...] = (3.5, 6.0)) -> np.ndarray:
    """``(n_orient * len(wavelengths), k, k)`` zero-mean, unit-norm cosine Gabor filters."""
    r = (k - 1) / 2.0
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    out = []
    for lam in wavelengths:
        sigma = 0.45 * lam + 0.5
        for i in range(n_orient):
            th = np.pi * i / n_orient
            u = xx * np.cos(th) + yy * np.sin(th)
            g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2)) * np.cos(2 * np.pi * u / lam)
            g -= g.mean()
            out.append(g / np.linalg.norm(g))
    return np.stack(out)


def gabor_cnn(size: int | str = 64, *, seed: int = 0) -> onnx.ModelProto:
    """Gabor conv (16, 7x7) - Relu - conv 3x3/2 (16) - Relu - conv 3x3/2 (16) - Relu - mean - Gemm.

    ``input`` [N, 3, size, size] (``size`` may be symbolic) -> ``logits`` [N, 10], opset 13. The
    16 first-layer filters are 8 orientations x 2 wavelengths; the even ones see luminance, the
    odd ones a colour-opponent (red-green or blue-yellow) signal. Tensors ``relu1``, ``relu2``,
    ``relu3`` are the layers to visualise.
    """
    rng = np.random.default_rng(seed)
    bank = gabor_bank()
    colours = [np.array([1.0, 1.0, 1.0]) / np.sqrt(3), np.array([1.0, -1.0, 0.0]) / np.sqrt(2),
               np.array([-0.5, -0.5, 1.0]) / np.sqrt(1.5)]
    w1 = np.zeros((16, 3, 7, 7), dtype=np.float32)
    for i in range(16):
        col = colours[0] if i % 2 == 0 else colours[1 + (i // 2) % 2]
        w1[i] = col[:, None, None] * bank[i]
    b1 = np.full(16, -0.1, dtype=np.float32)
    w2 = (rng.standard_normal((16, 16, 3, 3)) * np.sqrt(2.0 / 144)).astype(np.float32)
    b2 = np.full(16, -0.05, dtype=np.float32)
    w3 = (rng.standard_normal((16, 16, 3, 3)) * np.sqrt(2.0 / 144)).astype(np.float32)
    b3 = np.full(16, -0.05, dtype=np.float32)
    wf = (rng.standard_normal((10, 16)) * np.sqrt(2.0 / 16)).astype(np.float32)
    bf = np.zeros(10, dtype=np.float32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"), (wf, "wf"), (bf, "bf"))
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv1"], kernel_shape=[7, 7], pads=[3, 3, 3, 3]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("Conv", ["relu1", "w2", "b2"], ["conv2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("Conv", ["relu2", "w3", "b3"], ["conv3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv3"], ["relu3"]),
        helper.make_node("ReduceMean", ["relu3"], ["gap"], axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["gap", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "gabor_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="onnxviz-tests")
    model.ir_version = 8
    return model
