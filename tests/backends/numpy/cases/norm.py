"""Op cases for the norm family."""

from __future__ import annotations

from tests.backends.numpy.opcase import OpCase, Sampler


def normal(*shape: int) -> Sampler:
    return lambda rng: rng.standard_normal(shape)


def positive(*shape: int, low: float = 0.5, high: float = 2.0) -> Sampler:
    return lambda rng: rng.uniform(low, high, shape)


def bn_inputs(x_shape: tuple[int, ...], p_shape: tuple[int, ...]) -> list[Sampler]:
    params = [normal(*p_shape), normal(*p_shape), normal(*p_shape), positive(*p_shape)]
    return [normal(*x_shape), *params]


def affine(*shape: int) -> list[Sampler]:
    return [normal(*shape), normal(*shape)]


CASES: list[OpCase] = [
    # BatchNormalization: 7 (spatial attribute), 9, 14, 15 (served by the 14 registration).
    OpCase("BatchNormalization", bn_inputs((2, 3, 4, 5), (3,)), opset=7, name="spatial"),
    OpCase(
        "BatchNormalization", bn_inputs((2, 3, 4), (3, 4)), {"spatial": 0}, opset=7,
        name="nonspatial",
    ),
    OpCase("BatchNormalization", bn_inputs((3, 4, 5, 3), (4,)), {"epsilon": 1e-3}, opset=9),
    OpCase("BatchNormalization", bn_inputs((5, 3), (3,)), opset=9, name="rank2"),
    OpCase("BatchNormalization", bn_inputs((2, 3, 4, 3, 2), (3,)), opset=14, name="rank5"),
    OpCase("BatchNormalization", bn_inputs((2, 5, 3, 4), (5,)), {"epsilon": 0.01}, opset=15),
    OpCase(
        "BatchNormalization", bn_inputs((2, 4, 7), (4,)), {"training_mode": 0}, opset=15, name="1d"
    ),
    # InstanceNormalization
    OpCase("InstanceNormalization", [normal(2, 3, 4, 5), *affine(3)], opset=9),
    OpCase(
        "InstanceNormalization", [normal(3, 2, 7), *affine(2)], {"epsilon": 1e-3}, opset=17,
        name="1d",
    ),
    # LayerNormalization (Y, Mean, InvStdDev)
    OpCase("LayerNormalization", [normal(2, 3, 8), normal(8), normal(8)], opset=17),
    OpCase(
        "LayerNormalization", [normal(2, 3, 4, 5), normal(4, 5), normal(4, 5)], {"axis": 2},
        opset=17, name="axis2",
    ),
    OpCase(
        "LayerNormalization", [normal(3, 4, 5), normal(4, 5)], {"axis": -2, "epsilon": 1e-3},
        opset=18, name="noB",
    ),
    OpCase(
        "LayerNormalization", [normal(2, 3, 4), normal(1, 4), normal(4)], {"axis": 1}, opset=17,
        name="bcast-scale",
    ),
    OpCase(
        "LayerNormalization", [normal(2, 6), normal(6), normal(6)], opset=17, name="Y-only-grad",
        grad_outputs=(0,),
    ),
    # GroupNormalization: 18 has per-group scale/bias, 21 per-channel.
    OpCase("GroupNormalization", [normal(2, 6, 3, 4), *affine(3)], {"num_groups": 3}, opset=18),
    OpCase(
        "GroupNormalization", [normal(2, 4, 5), *affine(1)], {"num_groups": 1, "epsilon": 1e-3},
        opset=18, name="one-group",
    ),
    OpCase("GroupNormalization", [normal(2, 6, 3, 4), *affine(6)], {"num_groups": 2}, opset=21),
    OpCase(
        "GroupNormalization", [normal(3, 4, 5), *affine(4)], {"num_groups": 4, "epsilon": 1e-3},
        opset=21, name="instance",
    ),
    # LRN: odd and even windows (the even one is asymmetric).
    OpCase("LRN", [normal(2, 5, 3, 4)], {"size": 3}, opset=9),
    OpCase(
        "LRN", [normal(2, 7, 3, 3)], {"size": 4, "alpha": 0.5, "beta": 0.6, "bias": 1.5},
        # onnxruntime's CPU LRN kernel only accepts odd sizes (lrn.h: size_ % 2 == 1).
        opset=13, name="even", check_ort=False,
    ),
    OpCase(
        "LRN", [normal(1, 4, 2, 5)], {"size": 5, "alpha": 0.2, "beta": 0.9, "bias": 2.0},
        opset=13, name="wide",
    ),
    OpCase("LRN", [normal(2, 3, 2, 2)], {"size": 1, "alpha": 0.3}, opset=13, name="size1"),
    # MeanVarianceNormalization
    OpCase("MeanVarianceNormalization", [normal(2, 3, 4, 5)], opset=9),
    OpCase(
        "MeanVarianceNormalization", [normal(3, 4, 5)], {"axes": [1, 2]}, opset=13, name="axes12"
    ),
    OpCase(
        "MeanVarianceNormalization", [normal(2, 3, 4, 5)], {"axes": [-1]}, opset=13, name="last"
    ),
]
