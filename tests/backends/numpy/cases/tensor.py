"""Op cases for the tensor family."""

from __future__ import annotations

import numpy as np

from tests.backends.numpy.opcase import OpCase, Sampler

INT_MAX = np.iinfo(np.int64).max
INT_MIN = np.iinfo(np.int64).min


def normal(*shape: int) -> Sampler:
    def sample(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(shape)

    return sample


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


CASES: list[OpCase] = [
    # Concat
    OpCase("Concat", [normal(2, 3), normal(2, 1), normal(2, 4)], opset=9, attrs={"axis": 1}),
    OpCase("Concat", [normal(2, 3, 2), normal(1, 3, 2)], opset=13, name="axis0", attrs={"axis": 0}),
    OpCase("Concat", [normal(2, 3, 2), normal(2, 3, 1), normal(2, 3, 3)], opset=13, name="neg", attrs={"axis": -1}),
    # Split
    OpCase("Split", [normal(2, 6)], opset=9, attrs={"axis": 1, "split": [1, 2, 3]}, n_outputs=3),
    OpCase("Split", [normal(4, 3, 2)], opset=11, name="neg", attrs={"axis": -2, "split": [2, 1]}, n_outputs=2,
           grad_outputs=(1,)),
    OpCase("Split", [normal(6, 2), ints(3, 3)], opset=13, constant_inputs=(1,), n_outputs=2),
    # Before opset 18 the number of equal parts is the node's output count, which a forward
    # function cannot see: the engine passes it as num_outputs, an attribute ORT rejects here.
    OpCase("Split", [normal(6, 2)], opset=13, name="equal", attrs={"num_outputs": 3}, n_outputs=3,
           check_ort=False),
    OpCase("Split", [normal(2, 7)], opset=18, name="uneven", attrs={"axis": 1, "num_outputs": 3}, n_outputs=3,
           grad_outputs=(0, 2)),
    OpCase("Split", [normal(2, 7), ints(4, 3)], opset=18, name="sizes", attrs={"axis": -1},
           constant_inputs=(1,), n_outputs=2),
    # Slice
    OpCase("Slice", [normal(4, 5, 3)], opset=9, attrs={"starts": [1, -4], "ends": [3, 1000], "axes": [0, 1]}),
    OpCase("Slice", [normal(4, 5)], opset=9, name="no-axes", attrs={"starts": [-3, 0], "ends": [-1, 2]}),
    OpCase("Slice", [normal(4, 6), ints(0, 1), ints(3, 6), ints(0, 1), ints(2, 2)], opset=10,
           constant_inputs=(1, 2, 3, 4)),
    OpCase("Slice", [normal(5, 6), ints(INT_MAX, -2), ints(INT_MIN, 0), ints(0, 1), ints(-1, -2)], opset=11,
           name="neg-steps", constant_inputs=(1, 2, 3, 4)),
    OpCase("Slice", [normal(3, 4, 5), ints(1), ints(INT_MAX), ints(-1), None], opset=13, name="int-max",
           constant_inputs=(1, 2, 3)),
    OpCase("Slice", [normal(3, 4, 5), ints(-1, 0), ints(-100, 2), ints(2, 0), ints(-2, 1)], opset=13,
           name="clamp-neg", constant_inputs=(1, 2, 3, 4)),
    OpCase("Slice", [normal(3, 4), ints(0, 2), ints(3, 2)], opset=13, name="empty", constant_inputs=(1, 2)),
    # Gather
    OpCase("Gather", [normal(5, 3), ints(0, 4, -1, 2, 0)], opset=9),
    OpCase("Gather", [normal(2, 5, 3), np.array([[1, -2], [4, 1]], dtype=np.int64)], opset=13, name="axis1",
           attrs={"axis": 1}),
    OpCase("Gather", [normal(2, 5, 3), np.array(-1, dtype=np.int64)], opset=13, name="scalar",
           attrs={"axis": -1}),
    OpCase("Gather", [normal(4, 3), np.array([2, 0], dtype=np.int32)], opset=11, name="int32"),
    # GatherElements
    OpCase("GatherElements", [normal(3, 4), np.array([[0, 2, 1, 2], [1, 1, 0, 0]], dtype=np.int64)], opset=11),
    OpCase("GatherElements", [normal(2, 3, 4), np.array([[[0, -1], [3, 3], [1, 2]]] * 2, dtype=np.int64)],
           opset=13, name="neg-axis", attrs={"axis": -1}),
    # ScatterND
    OpCase("ScatterND", [normal(4, 5, 3), ints(0, 2).reshape(2, 1), normal(2, 5, 3)], opset=11),
    OpCase("ScatterND", [normal(4, 5), np.array([[0, 1], [3, -1], [2, 2]], dtype=np.int64), normal(3)],
           opset=13, name="elements"),
    OpCase("ScatterND", [normal(4, 5), np.array([[1], [3], [1]], dtype=np.int64), normal(3, 5)],
           opset=16, name="add-dups", attrs={"reduction": "add"}),
    OpCase("ScatterND", [normal(4, 5), np.array([[1], [3]], dtype=np.int64), normal(2, 5)],
           opset=18, name="max", attrs={"reduction": "max"}, check_grad=False),
    OpCase("ScatterND", [normal(4, 5), np.array([[0], [2]], dtype=np.int64), normal(2, 5)],
           opset=18, name="mul", attrs={"reduction": "mul"}, check_grad=False),
    # Pad
    OpCase("Pad", [normal(2, 3, 4)], opset=9, attrs={"pads": [0, 1, 2, 0, 2, 1], "value": 1.5}),
    OpCase("Pad", [normal(1, 2, 4, 5)], opset=9, name="reflect",
           attrs={"pads": [0, 0, 2, 1, 0, 0, 3, 2], "mode": "reflect"}),
    OpCase("Pad", [normal(2, 3, 4), ints(1, 0, -1, 0, 2, 2), np.array(0.7)], opset=11, name="const-crop",
           constant_inputs=(1,)),
    OpCase("Pad", [normal(2, 3, 4), ints(0, 2, 1, 0, 3, 2)], opset=11, name="edge", attrs={"mode": "edge"},
           constant_inputs=(1,)),
    OpCase("Pad", [normal(1, 2, 5, 4), ints(0, 0, 3, 1, 0, 0, 4, -1)], opset=13, name="reflect-crop",
           attrs={"mode": "reflect"}, constant_inputs=(1,)),
    OpCase("Pad", [normal(2, 3, 4), ints(1, 2, 2, 1), np.array(-1.0), ints(-1, 1)], opset=18, name="axes",
           constant_inputs=(1, 3)),
    OpCase("Pad", [normal(2, 3, 4), ints(1, 3), None, ints(2)], opset=18, name="axes-edge",
           attrs={"mode": "edge"}, constant_inputs=(1, 3)),
    OpCase("Pad", [normal(3, 4), ints(2, 1, 1, 5)], opset=19, name="wrap", attrs={"mode": "wrap"},
           constant_inputs=(1,)),
    OpCase("Pad", [normal(1, 2, 4, 3), ints(0, 0, 1, 2, 0, 0, 2, 1)], opset=21, name="reflect",
           attrs={"mode": "reflect"}, constant_inputs=(1,)),
]
