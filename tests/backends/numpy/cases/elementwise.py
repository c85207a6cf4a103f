"""Op cases for the elementwise family."""

from __future__ import annotations

import numpy as np

from tests.backends.numpy.opcase import OpCase, Sampler

Shape = tuple[int, ...]


def normal(*shape: int) -> Sampler:
    return lambda rng: rng.standard_normal(shape)


def positive(*shape: int, low: float = 0.2, high: float = 3.0) -> Sampler:
    return lambda rng: rng.uniform(low, high, shape)


def away_from_zero(*shape: int, low: float = 0.1) -> Sampler:
    """Values with |x| in [low, 2], both signs: no kink of Abs/Relu/Clip within the FD step."""
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(low, 2.0, shape)


def integers(*shape: int, low: int = -20, high: int = 20, nonzero: bool = False) -> Sampler:
    def sample(rng: np.random.Generator) -> np.ndarray:
        x = rng.integers(low, high, shape, dtype=np.int64)
        if nonzero:
            x[x == 0] = 1
        return x

    return sample


def booleans(*shape: int) -> Sampler:
    return lambda rng: rng.random(shape) < 0.5


def fixed(values: list[float], dtype: type = np.float32) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


SPECIALS = fixed([0.0, -1.5, np.inf, -np.inf, np.nan, 2.5, -0.0, 1e30])

BINARY = ("Add", "Sub", "Mul", "Div")
BROADCASTS: list[tuple[str, Shape, Shape]] = [
    ("same", (3, 4, 5), (3, 4, 5)),
    ("bcast-right", (2, 3, 4, 5), (5,)),
    ("bcast-both", (2, 1, 4, 1), (3, 1, 6)),
    ("bcast-scalar", (3, 7), ()),
    ("bcast-chan", (2, 3, 4, 4), (3, 1, 1)),
]


def binary_cases() -> list[OpCase]:
    cases = []
    for op in BINARY:
        for name, sa, sb in BROADCASTS:
            # Div: keep the divisor away from zero so the FD step does not cross a pole.
            rhs = away_from_zero(*sb, low=0.5) if op == "Div" else normal(*sb)
            for opset in (7, 14):
                cases.append(OpCase(op, [normal(*sa), rhs], opset=opset, name=name))
        cases.append(OpCase(op, [integers(2, 3, 4), integers(3, 4, nonzero=True)], opset=13,
                            name="int64", check_grad=False))
    return cases


def variadic_cases() -> list[OpCase]:
    cases = []
    for op in ("Sum", "Mean", "Min", "Max"):
        cases += [
            OpCase(op, [normal(3, 4)], opset=8, name="one"),
            OpCase(op, [normal(3, 4), normal(3, 4)], opset=8, name="two"),
            OpCase(op, [normal(2, 1, 5), normal(3, 1), normal(5), normal(1, 1, 1)], opset=13,
                   name="four-bcast"),
            OpCase(op, [normal(2, 3, 4, 5), normal(3, 1, 1)], opset=13, name="chan"),
        ]
    # Ties: the forward only (a tie is a kink, where a finite difference says nothing).
    tie = fixed([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    cases += [
        OpCase("Max", [tie, fixed([1.0, 5.0, 0.0])], opset=13, name="ties", check_grad=False),
        OpCase("Min", [tie, fixed([1.0, 5.0, 9.0])], opset=13, name="ties", check_grad=False),
        OpCase("Max", [integers(3, 4), integers(4)], opset=13, name="int64", check_grad=False),
    ]
    return cases


UNARY: list[tuple[str, Sampler, tuple[int, ...]]] = [
    ("Sqrt", positive(3, 4, 5), (7, 13)),
    ("Exp", normal(3, 4, 5), (7, 13)),
    ("Log", positive(3, 4, 5), (7, 13)),
    ("Neg", normal(3, 4, 5), (7, 13)),
    ("Abs", away_from_zero(3, 4, 5), (7, 13)),
    ("Reciprocal", away_from_zero(3, 4, 5, low=0.3), (7, 13)),
    ("Erf", normal(3, 4, 5), (9, 13)),
    ("Sign", normal(3, 4, 5), (9, 13)),
    ("Floor", normal(3, 4, 5), (7, 13)),
    ("Ceil", normal(3, 4, 5), (7, 13)),
    ("Round", normal(3, 4, 5), (11, 21)),
    ("IsNaN", SPECIALS, (9, 13, 20)),
    ("IsInf", SPECIALS, (10, 20)),
]


def unary_cases() -> list[OpCase]:
    cases = [OpCase(op, [sample], opset=opset) for op, sample, opsets in UNARY for opset in opsets]
    cases += [
        OpCase("Erf", [normal(7, 11)], opset=13, name="odd"),
        OpCase("Abs", [integers(5, 3)], opset=13, name="int64", check_grad=False),
        OpCase("Neg", [integers(5, 3)], opset=13, name="int64", check_grad=False),
        OpCase("Round", [fixed([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 2.51])], opset=11,
               name="half-even"),
        OpCase("Sign", [fixed([-2.0, 0.0, 3.0])], opset=13, name="zero"),
        OpCase("IsInf", [SPECIALS], {"detect_negative": 0}, opset=10, name="pos"),
        OpCase("IsInf", [SPECIALS], {"detect_positive": 0}, opset=20, name="neg"),
    ]
    return cases


def pow_cases() -> list[OpCase]:
    return [
        OpCase("Pow", [positive(3, 4, 5), normal(3, 4, 5)], opset=7),
        OpCase("Pow", [positive(2, 3, 4), positive(4, low=0.5, high=2.5)], opset=12, name="bcast"),
        OpCase("Pow", [positive(2, 3, 1), normal(1, 5)], opset=15, name="bcast-both"),
        OpCase("Pow", [fixed([2.0]), normal(3, 4)], opset=15, name="scalar-base"),
        # A negative base is fine with an integer-valued exponent; no gradient to Y there.
        OpCase("Pow", [away_from_zero(3, 4), fixed([2.0, 3.0, 1.0, 4.0])], opset=13,
               name="neg-base", grad_wrt=(0,)),
        # Pow-12+: an integer exponent on a float base; the result stays float.
        OpCase("Pow", [normal(3, 4), np.array([2, 3, 0, 1], dtype=np.int64)], opset=15,
               name="int-exp"),
        OpCase("Pow", [integers(3, 4, low=-5, high=5), np.array([2, 3, 0, 1], dtype=np.int64)],
               opset=15, name="int64", check_grad=False),
    ]


def where_cases() -> list[OpCase]:
    return [
        OpCase("Where", [booleans(3, 4, 5), normal(3, 4, 5), normal(3, 4, 5)], opset=9),
        OpCase("Where", [booleans(4, 1), normal(3, 1, 5), normal(5)], opset=16, name="bcast"),
        OpCase("Where", [booleans(2, 3, 4), normal(), normal(2, 1, 1)], opset=16, name="scalar"),
        OpCase("Where", [booleans(6), integers(6), integers(1)], opset=16, name="int64",
               check_grad=False),
    ]


def logic_cases() -> list[OpCase]:
    cases = []
    for op, (old, new) in {
        "Equal": (11, 19),
        "Greater": (9, 13),
        "Less": (9, 13),
        "GreaterOrEqual": (12, 16),
        "LessOrEqual": (12, 16),
    }.items():
        cases += [
            OpCase(op, [integers(3, 4, low=-3, high=3), integers(4, low=-3, high=3)], opset=old,
                   name="int64"),
            OpCase(op, [normal(2, 3, 4), fixed([-0.5, 0.0, 0.5, 1.0])], opset=new, name="bcast"),
        ]
    # Equal on floats with exact ties (the values are small integers in float).
    cases.append(OpCase("Equal", [fixed([1.0, 2.0, 3.0]), fixed([[1.0], [3.0]])], opset=13,
                        name="float"))
    cases.append(OpCase("Not", [booleans(3, 4, 5)], opset=7))
    for op in ("And", "Or", "Xor"):
        cases += [
            OpCase(op, [booleans(3, 4), booleans(3, 4)], opset=7),
            OpCase(op, [booleans(2, 3, 4), booleans(4)], opset=17, name="bcast"),
        ]
    return cases


CASES: list[OpCase] = [
    *binary_cases(),
    *pow_cases(),
    *unary_cases(),
    *variadic_cases(),
    *where_cases(),
    *logic_cases(),
]
