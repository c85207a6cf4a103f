"""Op cases for the shape family."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.backends.numpy.opcase import OpCase, Sampler


def normal(*shape: int) -> Sampler:
    def sample(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(shape)

    return sample


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def scalar(value: float | int, dtype: type) -> np.ndarray:
    return np.array(value, dtype=dtype)


SPARSE = helper.make_sparse_tensor(
    numpy_helper.from_array(np.array([1.5, -2.0, 3.0], dtype=np.float32), "values"),
    numpy_helper.from_array(np.array([1, 4, 10], dtype=np.int64), "indices"),
    [3, 4],
)

CASES: list[OpCase] = [
    # Reshape
    OpCase("Reshape", [normal(2, 3, 4), ints(4, -1)], opset=9, constant_inputs=(1,)),
    OpCase("Reshape", [normal(2, 3, 4), ints(0, 0, -1, 1)], opset=13, name="zero-copies", constant_inputs=(1,)),
    OpCase("Reshape", [normal(2, 3, 4), ints(-1, 6)], opset=14, attrs={"allowzero": 1}, constant_inputs=(1,)),
    OpCase("Reshape", [normal(0, 3), ints(3, 0)], opset=14, name="allowzero-empty", attrs={"allowzero": 1}, constant_inputs=(1,)),
    OpCase("Reshape", [normal(2, 3, 4), ints(0, 12)], opset=21, constant_inputs=(1,)),
    # Flatten
    OpCase("Flatten", [normal(2, 3, 4, 5)], opset=9),
    OpCase("Flatten", [normal(2, 3, 4, 5)], opset=9, name="axis0", attrs={"axis": 0}),
    OpCase("Flatten", [normal(2, 3, 4, 5)], opset=11, name="axis-neg", attrs={"axis": -1}),
    OpCase("Flatten", [normal(2, 3, 4, 5)], opset=13, name="axis4", attrs={"axis": 4}),
    # Transpose
    OpCase("Transpose", [normal(2, 3, 4)], opset=9, name="default"),
    OpCase("Transpose", [normal(2, 3, 4, 5)], opset=13, attrs={"perm": [0, 2, 3, 1]}),
    # Squeeze / Unsqueeze
    OpCase("Squeeze", [normal(1, 3, 1, 4)], opset=9, name="all"),
    OpCase("Squeeze", [normal(1, 3, 1, 4)], opset=11, name="neg-attr", attrs={"axes": [-2]}),
    OpCase("Squeeze", [normal(1, 3, 1, 4), ints(0, 2)], opset=13, constant_inputs=(1,)),
    OpCase("Squeeze", [normal(1, 3, 1, 4), None], opset=13, name="no-axes"),
    OpCase("Unsqueeze", [normal(3, 4)], opset=9, attrs={"axes": [0, 3]}),
    OpCase("Unsqueeze", [normal(3, 4)], opset=11, name="neg-attr", attrs={"axes": [-1, 1]}),
    OpCase("Unsqueeze", [normal(3, 4), ints(-1, 0)], opset=13, constant_inputs=(1,)),
    # Shape / Size
    OpCase("Shape", [normal(2, 3, 4)], opset=9),
    OpCase("Shape", [normal(2, 3, 4)], opset=15, name="start-end", attrs={"start": 1, "end": -1}),
    OpCase("Shape", [normal(2, 3, 4)], opset=15, name="clamped", attrs={"start": -7, "end": 9}),
    OpCase("Shape", [normal(2, 3, 4)], opset=15, name="empty", attrs={"start": 2, "end": 1}),
    OpCase("Size", [normal(2, 3, 4)], opset=13),
    # Identity / Dropout
    OpCase("Identity", [normal(2, 3)], opset=9),
    OpCase("Identity", [normal(2, 3)], opset=16),
    # onnxruntime fills the inference mask of Dropout-7..11 with zeros (its identity kernel leaves it
    # unset); the spec's output = data * mask * scale needs an all-true mask, as ORT gives from 12 on.
    OpCase("Dropout", [normal(2, 3, 4)], opset=7, attrs={"ratio": 0.3}, n_outputs=2, grad_outputs=(0,),
           check_ort=False),
    OpCase("Dropout", [normal(2, 3, 4)], opset=10, n_outputs=2, check_ort=False),
    OpCase("Dropout", [normal(2, 3, 4), scalar(0.2, np.float32), np.array(False)], opset=12,
           n_outputs=2, constant_inputs=(1, 2)),
    OpCase("Dropout", [normal(2, 3, 4), None, None], opset=13, n_outputs=2),
    # Cast / CastLike
    OpCase("Cast", [normal(2, 3)], opset=9, name="to-double", attrs={"to": TensorProto.DOUBLE}),
    # float64 -> float32 rounds: Cast is linear, so a large step keeps the rounding error small.
    OpCase("Cast", [normal(2, 3)], opset=13, name="to-float", attrs={"to": TensorProto.FLOAT},
           fd_eps=0.5, fd_rtol=1e-5),
    OpCase("Cast", [normal(3, 4)], opset=13, name="to-int64", attrs={"to": TensorProto.INT64}, check_grad=False),
    OpCase("Cast", [ints(3, -2, 7)], opset=19, name="int-to-float", attrs={"to": TensorProto.FLOAT}),
    OpCase("Cast", [normal(3, 4)], opset=21, name="to-bool", attrs={"to": TensorProto.BOOL}, check_grad=False),
    OpCase("CastLike", [normal(2, 3), np.zeros(1, dtype=np.float64)], opset=15, grad_wrt=(0,)),
    OpCase("CastLike", [ints(1, 2, 3), np.zeros(1, dtype=np.float32)], opset=19, name="int-to-float",
           check_grad=False),
    # Constant / ConstantOfShape / Range
    OpCase("Constant", [], opset=9, attrs={"value": numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))}),
    # onnxruntime returns a sparse tensor for sparse_value; the numpy engine densifies it.
    OpCase("Constant", [], opset=11, name="sparse", attrs={"sparse_value": SPARSE}, check_ort=False),
    OpCase("Constant", [], opset=13, name="value_float", attrs={"value_float": 2.5}),
    OpCase("Constant", [], opset=13, name="value_floats", attrs={"value_floats": [1.0, 2.5]}),
    OpCase("Constant", [], opset=13, name="value_int", attrs={"value_int": 7}),
    OpCase("Constant", [], opset=19, name="value_ints", attrs={"value_ints": [1, -2, 3]}),
    OpCase("ConstantOfShape", [ints(2, 3)], opset=9),
    OpCase("ConstantOfShape", [ints(2, 3)], opset=20, name="int64",
           attrs={"value": numpy_helper.from_array(np.array([5], dtype=np.int64))}),
    OpCase("ConstantOfShape", [ints()], opset=20, name="scalar",
           attrs={"value": numpy_helper.from_array(np.array([1.5], dtype=np.float32))}),
    OpCase("Range", [scalar(3, np.int64), scalar(10, np.int64), scalar(3, np.int64)], opset=11),
    OpCase("Range", [scalar(10, np.int64), scalar(4, np.int64), scalar(-2, np.int64)], opset=11, name="down"),
    OpCase("Range", [scalar(0.5, np.float32), scalar(2.0, np.float32), scalar(0.25, np.float32)], opset=13,
           name="float", check_grad=False),
    # Expand / Tile
    OpCase("Expand", [normal(3, 1), ints(2, 3, 4)], opset=8, constant_inputs=(1,)),
    OpCase("Expand", [normal(1, 3, 1), ints(2, 1, 1, 5)], opset=13, name="bidirectional", constant_inputs=(1,)),
    OpCase("Tile", [normal(2, 3), ints(2, 3)], opset=9, constant_inputs=(1,)),
    OpCase("Tile", [normal(2, 1, 3), ints(1, 4, 2)], opset=13, constant_inputs=(1,)),
    # DepthToSpace / SpaceToDepth
    OpCase("DepthToSpace", [normal(2, 8, 3, 2)], opset=9, attrs={"blocksize": 2}),
    OpCase("DepthToSpace", [normal(1, 18, 2, 3)], opset=11, name="DCR", attrs={"blocksize": 3, "mode": "DCR"}),
    OpCase("DepthToSpace", [normal(2, 8, 3, 2)], opset=13, name="CRD", attrs={"blocksize": 2, "mode": "CRD"}),
    OpCase("SpaceToDepth", [normal(2, 3, 4, 6)], opset=9, attrs={"blocksize": 2}),
    OpCase("SpaceToDepth", [normal(1, 2, 6, 3)], opset=13, attrs={"blocksize": 3}),
]
