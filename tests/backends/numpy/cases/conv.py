"""Op cases for the conv family: Conv, ConvTranspose (with VJPs), ConvInteger, QLinearConv."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.backends.numpy.opcase import OpCase


def normal(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    def sample(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(shape)

    return sample


def ints(dtype: type, low: int, high: int, *shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    def sample(rng: np.random.Generator) -> np.ndarray:
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)

    return sample


def conv(name: str, x: tuple[int, ...], w: tuple[int, ...], bias: bool = True, opset: int = 17,
         check_ort: bool = True, **attrs: object) -> OpCase:
    inputs = [normal(*x), normal(*w)] + ([normal(w[0])] if bias else [])
    return OpCase("Conv", inputs, attrs, opset=opset, name=name, check_ort=check_ort)


def convt(name: str, x: tuple[int, ...], w: tuple[int, ...], bias: bool = True, opset: int = 17,
          **attrs: object) -> OpCase:
    groups = int(attrs.get("group", 1))  # type: ignore[call-overload]
    inputs = [normal(*x), normal(*w)] + ([normal(w[1] * groups)] if bias else [])
    return OpCase("ConvTranspose", inputs, attrs, opset=opset, name=name)


CONV_CASES = [
    conv("3x3-pad1", (2, 3, 7, 6), (4, 3, 3, 3), opset=9, pads=[1, 1, 1, 1]),
    conv("3x3-pad1", (2, 3, 7, 6), (4, 3, 3, 3), opset=11, pads=[1, 1, 1, 1]),
    conv("nobias-valid", (1, 2, 6, 5), (3, 2, 2, 3), bias=False),
    conv("stride2-asympad-dil2", (2, 3, 9, 8), (4, 3, 3, 2), strides=[2, 1], pads=[1, 0, 0, 2],
         dilations=[2, 1]),
    conv("kernel_shape", (1, 2, 5, 5), (3, 2, 3, 3), kernel_shape=[3, 3], strides=[2, 2]),
    conv("same_upper-s2", (1, 3, 7, 8), (2, 3, 4, 3), auto_pad=b"SAME_UPPER", strides=[2, 2]),
    conv("same_lower-s2", (1, 3, 7, 8), (2, 3, 4, 3), auto_pad="SAME_LOWER", strides=[2, 3]),
    # onnxruntime refuses dilations with SAME_* ("Dilation not supported for AutoPadType::SAME_UPPER"):
    # these two are checked against the spec's formula by the gradient check only.
    conv("same_upper-dil", (1, 2, 6, 6), (2, 2, 2, 2), opset=11, auto_pad="SAME_UPPER",
         dilations=[2, 2], check_ort=False),
    conv("valid", (1, 3, 7, 8), (2, 3, 3, 3), opset=21, auto_pad="VALID", strides=[2, 2]),
    conv("group2", (2, 4, 6, 5), (6, 2, 3, 3), group=2, pads=[1, 1, 1, 1]),
    conv("group3-stride2", (1, 6, 7, 7), (3, 2, 3, 2), group=3, strides=[2, 2], pads=[0, 1, 1, 0]),
    conv("depthwise", (2, 5, 7, 6), (5, 1, 3, 3), group=5, pads=[1, 1, 1, 1]),
    conv("depthwise-s2-dil", (1, 4, 9, 8), (4, 1, 3, 3), opset=11, group=4, strides=[2, 2],
         pads=[1, 2, 1, 0], dilations=[2, 1]),
    conv("depthwise-dil-asym", (2, 3, 8, 7), (3, 1, 2, 3), group=3, dilations=[2, 1],
         pads=[0, 2, 1, 0]),
    conv("depthwise-mult2", (1, 3, 6, 6), (6, 1, 3, 3), group=3, pads=[1, 1, 1, 1]),
    conv("1x1", (2, 5, 4, 3), (7, 5, 1, 1)),
    conv("1x1-s2", (2, 4, 5, 6), (3, 4, 1, 1), opset=11, strides=[2, 2]),
    conv("1x1-group", (1, 6, 3, 4), (4, 3, 1, 1), group=2, strides=[1, 2]),
    conv("1x1-pad", (1, 3, 3, 3), (2, 3, 1, 1), pads=[1, 0, 0, 1]),
    conv("1d-group-s2", (2, 4, 11), (6, 2, 3), group=2, strides=[2], pads=[1, 2]),
    conv("1d-same", (1, 2, 9), (3, 2, 4), opset=11, auto_pad="SAME_LOWER", dilations=[2],
         check_ort=False),
    conv("1d-same-nodil", (1, 2, 9), (3, 2, 4), auto_pad="SAME_LOWER", strides=[2]),
    conv("3d", (1, 2, 4, 5, 4), (3, 2, 2, 3, 2), strides=[1, 2, 1], pads=[1, 0, 1, 0, 1, 1]),
    conv("3d-depthwise", (1, 3, 4, 4, 5), (3, 1, 3, 3, 3), opset=11, group=3,
         pads=[1, 1, 1, 1, 1, 1]),
]

CONVT_CASES = [
    convt("basic", (2, 3, 4, 5), (3, 2, 3, 3), opset=9),
    convt("s2-pad-outpad", (1, 3, 4, 4), (3, 4, 3, 3), opset=11, strides=[2, 2],
          pads=[1, 1, 1, 1], output_padding=[1, 0]),
    convt("group2-dil", (2, 4, 3, 4), (4, 3, 2, 3), group=2, dilations=[2, 1], strides=[1, 2],
          pads=[0, 1, 1, 0]),
    convt("depthwise-s2", (1, 4, 4, 3), (4, 1, 3, 3), group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
    convt("depthwise-s1-dil", (2, 3, 5, 4), (3, 1, 3, 2), group=3, dilations=[1, 2],
          pads=[1, 0, 0, 1]),
    convt("output_shape", (1, 2, 3, 3), (2, 3, 3, 3), strides=[2, 2], output_shape=[8, 7]),
    convt("output_shape-outpad", (1, 2, 3, 4), (2, 2, 3, 3), opset=11, strides=[3, 2],
          output_shape=[9, 8], output_padding=[1, 1]),
    convt("output_shape-same_upper", (1, 2, 3, 3), (2, 2, 3, 3), strides=[2, 2],
          output_shape=[6, 5], auto_pad="SAME_UPPER"),
    convt("same_upper", (1, 2, 3, 4), (2, 2, 4, 3), strides=[2, 2], auto_pad="SAME_UPPER"),
    convt("same_lower", (1, 2, 3, 4), (2, 2, 4, 3), opset=11, strides=[2, 2],
          auto_pad="SAME_LOWER"),
    convt("valid", (1, 2, 3, 4), (2, 2, 2, 3), auto_pad="VALID", strides=[2, 1]),
    convt("1x1-s2", (2, 3, 3, 4), (3, 2, 1, 1), opset=21, strides=[2, 2], bias=False),
    convt("1d", (2, 3, 5), (3, 2, 4), strides=[3], pads=[1, 2], output_padding=[2]),
    convt("3d", (1, 2, 3, 2, 3), (2, 2, 2, 3, 2), strides=[2, 1, 2], pads=[1, 0, 0, 0, 1, 1]),
]


def qint(name: str, x: tuple[int, ...], w: tuple[int, ...], opset: int = 10, **attrs: object) -> OpCase:
    inputs = [ints(np.uint8, 0, 255, *x), ints(np.uint8, 0, 255, *w),
              np.array(131, np.uint8), np.array(117, np.uint8)]
    return OpCase("ConvInteger", inputs, attrs, opset=opset, name=name, constant_inputs=(2, 3))


def qlinear(name: str, x: tuple[int, ...], w: tuple[int, ...], per_channel: bool, bias: bool,
            opset: int = 10, w_dtype: type = np.int8, **attrs: object) -> OpCase:
    m = w[0]
    w_scale = np.linspace(0.01, 0.03, m).astype(np.float32) if per_channel else np.array(0.02, np.float32)
    w_zp = np.zeros(m if per_channel else (), w_dtype)
    lo, hi = (-127, 127) if w_dtype == np.int8 else (0, 255)
    inputs = [ints(np.uint8, 0, 255, *x), np.array(0.037, np.float32), np.array(121, np.uint8),
              ints(w_dtype, lo, hi, *w), w_scale, w_zp, np.array(0.91, np.float32),
              np.array(118, np.uint8)] + ([ints(np.int32, -3000, 3000, m)] if bias else [])
    return OpCase("QLinearConv", inputs, attrs, opset=opset, name=name,
                  constant_inputs=(1, 2, 4, 5, 6, 7))


QUANT_CASES = [
    qint("3x3-pad", (1, 3, 6, 5), (4, 3, 3, 3), pads=[1, 1, 1, 1]),
    qint("s2-group", (2, 4, 7, 6), (4, 2, 2, 3), opset=17, group=2, strides=[2, 1]),
    qlinear("3x3-bias", (1, 3, 6, 5), (4, 3, 3, 3), per_channel=False, bias=True, pads=[1, 1, 1, 1]),
    qlinear("per-channel-s2", (2, 4, 7, 6), (6, 4, 3, 2), per_channel=True, bias=True, opset=17,
            strides=[2, 2], pads=[1, 0, 0, 1]),
    qlinear("depthwise-uint8w", (1, 4, 5, 5), (4, 1, 3, 3), per_channel=False, bias=False,
            w_dtype=np.uint8, group=4, pads=[1, 1, 1, 1]),
]

CASES: list[OpCase] = [*CONV_CASES, *CONVT_CASES, *QUANT_CASES]
