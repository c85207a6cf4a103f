"""Op cases for the pool family: MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.backends.numpy.opcase import OpCase


def distinct(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    """A permutation of well-separated values: no ties within a window, so max is smooth."""

    def sample(rng: np.random.Generator) -> np.ndarray:
        size = int(np.prod(shape))
        return (rng.permutation(size) * 0.1 - size * 0.05).reshape(shape)

    return sample


def normal(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    def sample(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(shape)

    return sample


def away_from_zero(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    def sample(rng: np.random.Generator) -> np.ndarray:
        x = rng.uniform(0.3, 1.5, shape)
        return x * rng.choice([-1.0, 1.0], shape)

    return sample


def maxpool(name: str, shape: tuple[int, ...], opset: int = 12, indices: bool = True,
            **attrs: object) -> OpCase:
    return OpCase("MaxPool", [distinct(*shape)], attrs, opset=opset, name=name,
                  n_outputs=2 if indices else 1, grad_outputs=(0,))


# onnxruntime has no kernel for AveragePool-1 and LpPool-1 ("Could not find an implementation"):
# those opset-1 cases are checked by the gradient check and the same geometry at later opsets.
def avgpool(name: str, shape: tuple[int, ...], opset: int = 11, **attrs: object) -> OpCase:
    return OpCase("AveragePool", [normal(*shape)], attrs, opset=opset, name=name,
                  check_ort=opset >= 7)


def lppool(name: str, shape: tuple[int, ...], opset: int = 11, **attrs: object) -> OpCase:
    return OpCase("LpPool", [away_from_zero(*shape)], attrs, opset=opset, name=name,
                  check_ort=opset >= 2)


MAX_CASES = [
    maxpool("2x2", (2, 3, 6, 5), opset=7, indices=False, kernel_shape=[2, 2], strides=[2, 2]),
    maxpool("3x3s2-pad", (2, 3, 7, 8), opset=8, kernel_shape=[3, 3], strides=[2, 2],
            pads=[1, 1, 1, 1]),
    maxpool("storage_order", (1, 2, 5, 7), opset=8, kernel_shape=[2, 3], strides=[1, 2],
            storage_order=1),
    maxpool("overlap-asympad", (2, 2, 7, 6), opset=10, kernel_shape=[3, 2], strides=[1, 1],
            pads=[0, 1, 2, 0]),
    maxpool("ceil", (1, 3, 7, 8), opset=10, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    maxpool("ceil-pad-drop-last", (1, 2, 6, 6), kernel_shape=[2, 2], strides=[2, 2],
            pads=[1, 1, 1, 1], ceil_mode=1),
    maxpool("dilations", (1, 2, 8, 9), opset=11, kernel_shape=[2, 3], dilations=[2, 2],
            strides=[1, 2], pads=[1, 0, 0, 1]),
    maxpool("dil-ceil-storage1", (1, 2, 9, 8), kernel_shape=[3, 2], dilations=[2, 1],
            strides=[2, 2], ceil_mode=1, storage_order=1),
    maxpool("same_upper", (1, 2, 7, 6), kernel_shape=[3, 2], strides=[2, 2],
            auto_pad=b"SAME_UPPER"),
    maxpool("same_lower", (1, 2, 7, 6), opset=18, kernel_shape=[4, 3], strides=[2, 1],
            auto_pad="SAME_LOWER"),
    maxpool("valid", (1, 2, 7, 6), opset=21, kernel_shape=[3, 3], strides=[2, 2],
            auto_pad="VALID"),
    maxpool("1d", (2, 3, 11), kernel_shape=[3], strides=[2], pads=[1, 1]),
    maxpool("3d", (1, 2, 5, 4, 6), kernel_shape=[2, 2, 3], strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 0]),
    maxpool("3d-storage1", (1, 2, 4, 5, 3), opset=8, kernel_shape=[2, 2, 2], storage_order=1),
    OpCase("MaxPool", [lambda rng: rng.integers(-128, 127, (1, 2, 6, 7)).astype(np.int8)],
           dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), opset=12, name="int8",
           n_outputs=2, check_grad=False),
]

AVG_CASES = [
    avgpool("2x2", (2, 3, 6, 5), opset=1, kernel_shape=[2, 2], strides=[2, 2]),
    avgpool("2x2-pad", (2, 3, 6, 5), opset=1, kernel_shape=[2, 2], pads=[1, 0, 1, 1]),
    avgpool("2x2", (2, 3, 6, 5), opset=7, kernel_shape=[2, 2], strides=[2, 2]),
    avgpool("pad-exclude", (2, 3, 7, 6), opset=7, kernel_shape=[3, 3], strides=[2, 2],
            pads=[1, 1, 1, 1]),
    avgpool("pad-include", (2, 3, 7, 6), opset=7, kernel_shape=[3, 3], strides=[2, 2],
            pads=[1, 0, 2, 1], count_include_pad=1),
    avgpool("ceil", (1, 2, 7, 8), opset=10, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    avgpool("ceil-pad-include", (1, 2, 6, 7), kernel_shape=[3, 2], strides=[2, 2],
            pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    avgpool("ceil-pad-exclude", (1, 2, 6, 7), kernel_shape=[3, 2], strides=[2, 2],
            pads=[1, 1, 1, 1], ceil_mode=1),
    avgpool("overlap", (1, 2, 6, 6), kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    avgpool("same_upper", (1, 2, 7, 6), kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
    avgpool("same_lower", (1, 2, 7, 6), opset=17, kernel_shape=[4, 3], strides=[2, 1],
            auto_pad="SAME_LOWER", count_include_pad=1),
    avgpool("valid", (1, 2, 7, 6), opset=17, kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"),
    avgpool("dilations", (1, 2, 8, 9), opset=19, kernel_shape=[2, 3], dilations=[2, 2],
            strides=[1, 2], pads=[1, 0, 0, 1]),
    avgpool("dil-include-ceil", (1, 2, 9, 8), opset=19, kernel_shape=[3, 2], dilations=[2, 1],
            strides=[2, 2], pads=[1, 1, 0, 1], count_include_pad=1, ceil_mode=1),
    avgpool("1d", (2, 3, 11), kernel_shape=[3], strides=[2], pads=[1, 1]),
    avgpool("3d", (1, 2, 5, 4, 6), opset=19, kernel_shape=[2, 2, 3], strides=[2, 1, 2],
            pads=[0, 1, 1, 1, 0, 0], count_include_pad=1),
]

LP_CASES = [
    lppool("p2", (2, 3, 6, 5), opset=1, kernel_shape=[2, 2], strides=[2, 2], p=2.0),
    lppool("p2", (2, 3, 6, 5), opset=2, kernel_shape=[2, 2], strides=[2, 2], p=2),
    lppool("p3-pad", (2, 2, 7, 6), opset=2, kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1], p=3),
    lppool("p1-overlap", (1, 2, 6, 6), kernel_shape=[3, 2], strides=[1, 1], p=1),
    lppool("p2-same", (1, 2, 7, 6), kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
    lppool("p2-ceil-dil", (1, 2, 9, 8), opset=18, kernel_shape=[3, 2], dilations=[2, 1],
           strides=[2, 2], ceil_mode=1, p=2),
    lppool("1d-p4", (2, 3, 9), opset=18, kernel_shape=[3], strides=[2], pads=[1, 0], p=4),
]

GLOBAL_CASES = [
    OpCase("GlobalAveragePool", [normal(2, 3, 5, 4)], opset=9, name="2d"),
    OpCase("GlobalAveragePool", [normal(2, 3, 7)], opset=17, name="1d"),
    OpCase("GlobalAveragePool", [normal(1, 2, 3, 4, 2)], opset=21, name="3d"),
    OpCase("GlobalMaxPool", [distinct(2, 3, 5, 4)], opset=9, name="2d"),
    OpCase("GlobalMaxPool", [distinct(1, 2, 3, 4, 2)], opset=17, name="3d"),
]

CASES: list[OpCase] = [*MAX_CASES, *AVG_CASES, *LP_CASES, *GLOBAL_CASES]
