"""Op cases for the reduce family."""

from __future__ import annotations

import numpy as np

from tests.backends.numpy.opcase import OpCase, Sampler


def normal(*shape: int) -> Sampler:
    return lambda rng: rng.standard_normal(shape)


def positive(*shape: int) -> Sampler:
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape: int) -> Sampler:
    """|x| in [0.5, 1.5], half of them negative: no kinks for L1, no zero products for Prod."""

    def sample(rng: np.random.Generator) -> np.ndarray:
        signs = rng.permutation((-1.0) ** np.arange(int(np.prod(shape)))).reshape(shape)
        return rng.uniform(0.5, 1.5, shape) * signs

    return sample


def tied(*shape: int) -> Sampler:
    """Small integers as floats: many ties, to check select_last_index."""
    return lambda rng: rng.integers(0, 3, shape).astype(np.float64)


def axes(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)



def sampler_for(op: str, *shape: int) -> Sampler:
    if op in ("ReduceProd", "ReduceL1"):
        return away_from_zero(*shape)
    if op == "ReduceLogSum":
        return positive(*shape)
    return normal(*shape)


def reduce_cases(op: str, new_since: int) -> list[OpCase]:
    """The attribute form at an old opset and the input form at ``new_since``."""
    old = 11 if new_since == 13 else 13
    s = lambda *shape: sampler_for(op, *shape)  # noqa: E731
    return [
        OpCase(op, [s(2, 3, 4)], {"axes": [1]}, opset=old, name="axis1"),
        OpCase(op, [s(2, 3, 5)], {"axes": [0, -1], "keepdims": 0}, opset=old, name="noKeep"),
        OpCase(op, [s(3, 4)], opset=old, name="all"),
        OpCase(op, [s(3, 1, 4, 2)], {"axes": [1, 3]}, opset=old, name="size1"),
        OpCase(op, [s(2, 3, 4), axes(2, 0)], opset=new_since, constant_inputs=(1,), name="in"),
        OpCase(
            op, [s(2, 3, 4), axes(-2)], {"keepdims": 0}, opset=new_since, constant_inputs=(1,),
            name="in-noKeep",
        ),
        OpCase(op, [s(3, 5)], {"keepdims": 0}, opset=new_since, name="in-all"),
        OpCase(
            op, [s(2, 3), axes()], opset=new_since, constant_inputs=(1,), name="in-empty",
        ),
        OpCase(
            op, [s(2, 3)], {"noop_with_empty_axes": 1}, opset=new_since, name="in-noop",
        ),
    ]


CASES: list[OpCase] = [
    *reduce_cases("ReduceSum", 13),
    *reduce_cases("ReduceMean", 18),
    *reduce_cases("ReduceMax", 18),
    *reduce_cases("ReduceMin", 18),
    *reduce_cases("ReduceProd", 18),
    *reduce_cases("ReduceL1", 18),
    *reduce_cases("ReduceL2", 18),
    *reduce_cases("ReduceSumSquare", 18),
    *reduce_cases("ReduceLogSum", 18),
    *reduce_cases("ReduceLogSumExp", 18),
    OpCase(
        "ReduceMax", [normal(2, 3, 4), axes(2)], opset=20, constant_inputs=(1,), name="opset20"
    ),
    # ArgMax/ArgMin (forward only): tie-breaking to the first or (select_last_index) last index.
    OpCase("ArgMax", [normal(3, 4, 5)], opset=9),
    OpCase("ArgMax", [normal(3, 4, 5)], {"axis": -1, "keepdims": 0}, opset=11, name="last"),
    OpCase("ArgMax", [tied(4, 6)], {"axis": 1}, opset=13, name="ties-first"),
    OpCase("ArgMax", [tied(4, 6)], {"axis": 1, "select_last_index": 1}, opset=12, name="ties-last"),
    OpCase("ArgMin", [normal(3, 4, 5)], {"axis": 1}, opset=9),
    OpCase("ArgMin", [tied(5, 4)], {"axis": 0, "keepdims": 0}, opset=13, name="ties-first"),
    OpCase(
        "ArgMin", [tied(5, 4)], {"axis": -2, "select_last_index": 1, "keepdims": 0}, opset=13,
        name="ties-last",
    ),
]
