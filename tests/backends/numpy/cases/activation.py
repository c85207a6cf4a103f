"""Op cases for the activation family."""

from __future__ import annotations

import numpy as np

from tests.backends.numpy.opcase import OpCase, Sampler


def normal(*shape: int, scale: float = 1.0) -> Sampler:
    return lambda rng: scale * rng.standard_normal(shape)


def away_from(
    *shape: int, kinks: tuple[float, ...] = (0.0,), gap: float = 0.1, scale: float = 2.0
) -> Sampler:
    """Normal samples pushed at least ``gap`` from every kink (Relu at 0, HardSwish at +-3...)."""

    def sample(rng: np.random.Generator) -> np.ndarray:
        x = scale * rng.standard_normal(shape)
        for k in kinks:
            near = np.abs(x - k) < gap
            x[near] = k + np.where(x[near] >= k, gap, -gap) * (1.0 + rng.random(int(near.sum())))
        return x

    return sample


def scalar(value: float) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def pointwise_cases() -> list[OpCase]:
    X = (2, 3, 5, 7)
    cases = [
        OpCase("Relu", [away_from(*X)], opset=7),
        OpCase("Relu", [away_from(3, 11)], opset=14, name="odd"),
        OpCase("LeakyRelu", [away_from(*X)], opset=7),
        OpCase("LeakyRelu", [away_from(*X)], {"alpha": 0.2}, opset=16, name="alpha"),
        OpCase("LeakyRelu", [away_from(13)], {"alpha": -0.5}, opset=16, name="neg-alpha"),
        OpCase("Elu", [away_from(*X)], opset=7),
        OpCase("Elu", [away_from(*X)], {"alpha": 0.5}, opset=18, name="alpha"),
        OpCase("Selu", [away_from(*X)], opset=7),
        OpCase("Selu", [away_from(*X)], {"alpha": 1.5, "gamma": 2.0}, opset=18, name="attrs"),
        OpCase("Celu", [away_from(*X)], opset=12),
        OpCase("Celu", [away_from(*X)], {"alpha": 2.5}, opset=18, name="alpha"),
        OpCase("ThresholdedRelu", [away_from(*X, kinks=(1.0,))], opset=10),
        OpCase("ThresholdedRelu", [away_from(*X, kinks=(-0.5,))], {"alpha": -0.5}, opset=18,
               name="alpha"),
        OpCase("Sigmoid", [normal(*X, scale=3.0)], opset=7),
        OpCase("Sigmoid", [normal(3, 11, scale=10.0)], opset=13, name="wide"),
        OpCase("HardSigmoid", [away_from(*X, kinks=(-2.5, 2.5), scale=3.0)], opset=7),
        OpCase("HardSigmoid", [away_from(*X, kinks=(-1.5, 0.5), scale=2.0)],
               {"alpha": 0.5, "beta": 0.75}, opset=18, name="attrs"),
        OpCase("HardSwish", [away_from(*X, kinks=(-3.0, 3.0), scale=3.0)], opset=14),
        OpCase("Tanh", [normal(*X, scale=2.0)], opset=7),
        OpCase("Tanh", [normal(5, 9)], opset=13, name="odd"),
        OpCase("Softplus", [normal(*X, scale=3.0)], opset=7),
        OpCase("Softplus", [normal(5, 9, scale=30.0)], opset=18, name="wide"),
        OpCase("Softsign", [normal(*X, scale=2.0)], opset=7),
        OpCase("Mish", [normal(*X, scale=2.0)], opset=18),
        OpCase("Gelu", [normal(*X, scale=2.0)], opset=20),
        OpCase("Gelu", [normal(*X, scale=2.0)], {"approximate": "tanh"}, opset=20, name="tanh"),
        OpCase("Gelu", [normal(5, 9, scale=4.0)], {"approximate": "none"}, opset=21, name="none"),
        # The exact VJP reads Phi(x) = Y / x off the output; x == 0 takes Phi(0) = 1/2.
        OpCase("Gelu", [lambda rng: np.r_[0.0, 3.0 * rng.standard_normal(20), -9.0, 9.0]], opset=20,
               name="zero"),
        OpCase("Mish", [normal(5, 9, scale=15.0)], opset=18, name="wide"),
    ]
    return cases


def prelu_cases() -> list[OpCase]:
    X = (2, 3, 5, 4)
    return [
        # PRelu-6/7-era exporters: one slope per channel as [C, 1, 1].
        OpCase("PRelu", [away_from(*X), normal(3, 1, 1)], opset=7, name="chan"),
        OpCase("PRelu", [away_from(*X), normal(1)], opset=9, name="shared"),
        OpCase("PRelu", [away_from(*X), normal(*X)], opset=9, name="full"),
        OpCase("PRelu", [away_from(*X), normal(4)], opset=16, name="last"),
        OpCase("PRelu", [away_from(*X), normal(1, 3, 1, 1)], opset=16, name="chan4d"),
        OpCase("PRelu", [away_from(2, 7), normal(7)], opset=16, name="2d"),
    ]


def clip_cases() -> list[OpCase]:
    X = (2, 3, 5, 7)
    # Bounds at -0.7/0.9 and samples kept away from them.
    x = away_from(*X, kinks=(-0.7, 0.9), gap=0.05)
    return [
        OpCase("Clip", [x], {"min": -0.7, "max": 0.9}, opset=7),
        OpCase("Clip", [x], {"min": -0.7}, opset=7, name="min"),
        OpCase("Clip", [x], opset=7, name="none"),
        OpCase("Clip", [x, scalar(-0.7), scalar(0.9)], opset=11),
        OpCase("Clip", [x, scalar(-0.7), scalar(0.9)], opset=13, name="const",
               constant_inputs=(1, 2)),
        OpCase("Clip", [x, scalar(-0.7)], opset=12, name="min"),
        OpCase("Clip", [x, None, scalar(0.9)], opset=13, name="max"),
        OpCase("Clip", [x], opset=13, name="none"),
        # min > max: everything becomes max, and all the gradient goes to max.
        OpCase("Clip", [x, scalar(0.9), scalar(-0.7)], opset=13, name="crossed"),
        OpCase("Clip", [lambda rng: rng.integers(-9, 9, (4, 5), dtype=np.int64),
                        np.asarray(-3, dtype=np.int64), np.asarray(4, dtype=np.int64)],
               opset=12, name="int64", check_grad=False),
    ]


def softmax_cases() -> list[OpCase]:
    cases = []
    for op in ("Softmax", "LogSoftmax"):  # backends/numpy/ops/softmax.py
        cases += [
            OpCase(op, [normal(3, 10)], opset=9),
            # Opset 1/11: coerce to 2-D at axis, normalise over the flattened trailing block.
            OpCase(op, [normal(2, 3, 4, 5)], opset=9, name="4d-default"),
            OpCase(op, [normal(2, 3, 4, 5)], {"axis": 2}, opset=11, name="4d-axis2"),
            OpCase(op, [normal(2, 3, 4, 5)], {"axis": -3}, opset=11, name="4d-neg"),
            OpCase(op, [normal(2, 3, 4, 5)], {"axis": 0}, opset=11, name="4d-axis0"),
            # Opset 13: one axis.
            OpCase(op, [normal(2, 3, 4, 5)], opset=13, name="4d-default"),
            OpCase(op, [normal(2, 3, 4, 5)], {"axis": 1}, opset=13, name="4d-axis1"),
            OpCase(op, [normal(2, 7, 3)], {"axis": -2}, opset=18, name="3d-neg"),
            OpCase(op, [normal(4, 9, scale=20.0)], opset=13, name="wide"),
        ]
    return cases


CASES: list[OpCase] = [*pointwise_cases(), *prelu_cases(), *clip_cases(), *softmax_cases()]
