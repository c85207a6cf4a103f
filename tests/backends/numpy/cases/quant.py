"""Op cases for the quant family (all forward-only: checked against onnxruntime)."""

from __future__ import annotations

import numpy as np

from tests.backends.numpy.opcase import OpCase, Sampler


def normal(*shape: int, std: float = 1.0) -> Sampler:
    return lambda rng: std * rng.standard_normal(shape)


def ints(dtype: type, *shape: int) -> Sampler:
    info = np.iinfo(dtype)
    return lambda rng: rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(() if len(values) == 1 else -1)


# Exact halves (x / scale = k + 0.5) to check round-half-to-even, and values far out of range.
TIES = np.array([0.25, 0.75, -0.25, -0.75, 1.25, 300.0, -300.0, 0.0], dtype=np.float32)

CASES: list[OpCase] = [
    # QuantizeLinear: 10 (per tensor), 13 (axis), 19, 21 (block_size, output_dtype).
    OpCase("QuantizeLinear", [normal(2, 3, 4), f32(0.02)], opset=10, constant_inputs=(1,),
           name="uint8-default"),
    OpCase("QuantizeLinear", [TIES, f32(0.5), np.array(0, np.int8)], opset=10,
           constant_inputs=(1, 2), name="ties-int8"),
    OpCase("QuantizeLinear", [TIES, f32(0.5), np.array(3, np.uint8)], opset=13,
           constant_inputs=(1, 2), name="ties-uint8"),
    OpCase("QuantizeLinear",
           [normal(2, 3, 4), f32(0.01, 0.02, 0.03), np.array([0, 5, -5], np.int8)],
           {"axis": 1}, opset=13, constant_inputs=(1, 2), name="per-axis"),
    OpCase("QuantizeLinear",
           [normal(4, 3), f32(0.01, 0.02, 0.03, 0.04), np.array([9, 128, 7, 250], np.uint8)],
           {"axis": -2}, opset=19, constant_inputs=(1, 2), name="per-axis-neg"),
    OpCase("QuantizeLinear", [normal(3, 5), f32(0.03), np.array(-7, np.int8)], opset=19,
           constant_inputs=(1, 2)),
    OpCase("QuantizeLinear",
           [normal(2, 6), np.array([[0.01, 0.02], [0.03, 0.015]], np.float32),
            np.array([[1, -1], [0, 4]], np.int8)],
           {"axis": 1, "block_size": 3}, opset=21, constant_inputs=(1, 2), name="blocked"),
    OpCase("QuantizeLinear",
           [normal(5, 2), np.array([[0.01, 0.02], [0.03, 0.015]], np.float32),
            np.array([[1, -1], [0, 4]], np.int8)],
           {"axis": 0, "block_size": 3}, opset=21, constant_inputs=(1, 2), name="blocked-ragged"),
    OpCase("QuantizeLinear", [normal(3, 4, std=100.0), f32(0.01), np.array(-3, np.int16)], opset=21,
           constant_inputs=(1, 2), name="int16"),
    OpCase("QuantizeLinear", [normal(3, 4), f32(0.02)], {"output_dtype": 3}, opset=21,
           constant_inputs=(1,), name="output-dtype-int8"),
    # DequantizeLinear: 10, 13 (axis), 19, 21 (block_size); int32 input without a zero point.
    OpCase("DequantizeLinear", [ints(np.uint8, 2, 3, 4), f32(0.02), np.array(128, np.uint8)],
           opset=10, constant_inputs=(1, 2)),
    OpCase("DequantizeLinear", [ints(np.int8, 3, 4), f32(0.05)], opset=10, constant_inputs=(1,),
           name="no-zp"),
    OpCase("DequantizeLinear", [ints(np.int32, 3, 4), f32(0.001)], opset=13, constant_inputs=(1,),
           name="int32"),
    OpCase("DequantizeLinear",
           [ints(np.int8, 4, 3, 2, 2), f32(0.1, 0.2, 0.3, 0.4), np.array([0, 1, -1, 2], np.int8)],
           {"axis": 0}, opset=13, constant_inputs=(1, 2), name="per-axis-weight"),
    OpCase("DequantizeLinear",
           [ints(np.uint8, 2, 3, 4), f32(0.1, 0.2, 0.3), np.array([1, 2, 3], np.uint8)],
           opset=19, constant_inputs=(1, 2), name="per-axis-default"),
    OpCase("DequantizeLinear",
           [ints(np.int8, 2, 5), np.array([[0.5, 0.25], [0.125, 1.0]], np.float32),
            np.array([[1, -1], [0, 4]], np.int8)],
           {"axis": 1, "block_size": 3}, opset=21, constant_inputs=(1, 2), name="blocked"),
    OpCase("DequantizeLinear", [ints(np.int16, 3, 4), f32(0.01), np.array(-5, np.int16)], opset=21,
           constant_inputs=(1, 2), name="int16"),
    # DynamicQuantizeLinear: mixed signs, all positive (min clamps to 0), and all zeros.
    OpCase("DynamicQuantizeLinear", [normal(3, 4, 5)], opset=11, n_outputs=3),
    OpCase("DynamicQuantizeLinear", [lambda rng: rng.uniform(0.5, 3.0, (4, 6))], opset=13,
           n_outputs=3, name="positive"),
    OpCase("DynamicQuantizeLinear", [np.zeros((2, 3), np.float32)], opset=13, n_outputs=3,
           name="zeros"),
]
