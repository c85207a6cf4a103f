"""Op cases for the matmul family."""

from __future__ import annotations

import numpy as np

from tests.backends.numpy.opcase import OpCase, Sampler


def normal(*shape: int) -> Sampler:
    return lambda rng: rng.standard_normal(shape)


def ints(dtype: type, low: int, high: int, *shape: int) -> Sampler:
    return lambda rng: rng.integers(low, high, shape, endpoint=True).astype(dtype)


def scale(*shape: int) -> Sampler:
    return lambda rng: rng.uniform(0.01, 0.05, shape).astype(np.float32)


def einsum_case(equation: str, *shapes: tuple[int, ...], opset: int = 12, name: str = "") -> OpCase:
    return OpCase(
        "Einsum", [normal(*s) for s in shapes], {"equation": equation}, opset=opset,
        name=name or equation.replace("->", "_to_").replace(",", "_").replace("...", "E"),
    )


CASES: list[OpCase] = [
    # Gemm: 7 (C required), 9, 11 (C optional), 13.
    OpCase("Gemm", [normal(3, 4), normal(4, 5), normal(3, 5)], opset=7),
    OpCase(
        "Gemm", [normal(4, 3), normal(4, 5), normal(5)],
        {"transA": 1, "alpha": 0.5, "beta": 2.0}, opset=9, name="transA-bcastC",
    ),
    OpCase(
        "Gemm", [normal(3, 4), normal(5, 4), normal(1, 1)], {"transB": 1, "beta": -0.7}, opset=11,
        name="transB-scalarC",
    ),
    OpCase("Gemm", [normal(3, 4), normal(4, 5)], {"alpha": 1.5}, opset=11, name="noC"),
    OpCase(
        "Gemm", [normal(4, 3), normal(5, 4), normal(3, 1)], {"transA": 1, "transB": 1}, opset=13,
        name="transAB-colC",
    ),
    OpCase("Gemm", [normal(1, 7), normal(7, 2)], opset=13, name="noC-row"),
    # MatMul: 1-D operands and batch broadcasting.
    OpCase("MatMul", [normal(3, 4), normal(4, 5)], opset=9),
    OpCase("MatMul", [normal(2, 3, 4), normal(4, 5)], opset=13, name="batchA"),
    OpCase("MatMul", [normal(2, 1, 3, 4), normal(3, 4, 2)], opset=13, name="bcast-batch"),
    OpCase("MatMul", [normal(4), normal(2, 4, 3)], opset=13, name="vec-A"),
    OpCase("MatMul", [normal(2, 3, 4), normal(4)], opset=13, name="vec-B"),
    OpCase("MatMul", [normal(5), normal(5)], opset=13, name="dot"),
    # Einsum: common 2-operand forms, transposes, reductions, ellipsis, diagonals.
    einsum_case("ij,jk->ik", (3, 4), (4, 5)),
    einsum_case("bij,bjk->bik", (2, 3, 4), (2, 4, 3), opset=13),
    einsum_case("ij,kj->ik", (3, 4), (5, 4)),
    einsum_case("i,j->ij", (3,), (4,)),
    einsum_case("ij,ij->i", (3, 4), (3, 4)),
    einsum_case("ij,jk", (3, 4), (4, 2), name="implicit"),
    einsum_case("ijk->kji", (2, 3, 4)),
    einsum_case("ij->", (3, 4), name="total"),
    einsum_case("ij,k->ik", (3, 4), (2,), name="summed-alone"),
    einsum_case("...ij,jk->...ik", (2, 3, 4), (4, 2), opset=18),
    einsum_case("...ij,...jk->...ik", (2, 3, 4), (1, 4, 2), opset=18, name="batched"),
    einsum_case("b...c,c->b...", (2, 3, 4, 5), (5,), opset=18),
    einsum_case("...j,...j->...", (1, 3, 4), (2, 1, 4), opset=18, name="ellipsis-bcast"),
    einsum_case("bhid, bhjd -> bhij", (2, 2, 3, 4), (2, 2, 5, 4), opset=18, name="attention"),
    einsum_case("ii->i", (4, 4), name="diag"),
    einsum_case("ii", (3, 3), name="trace"),
    einsum_case("ij,jj->i", (3, 4), (4, 4), name="diag-operand"),
    # MatMulInteger (forward only): per-tensor and per-row/per-column zero points.
    OpCase(
        "MatMulInteger", [ints(np.uint8, 0, 255, 3, 4), ints(np.uint8, 0, 255, 4, 5)], opset=10,
        name="nozp",
    ),
    OpCase(
        "MatMulInteger",
        [
            ints(np.uint8, 0, 255, 3, 4), ints(np.int8, -128, 127, 4, 5),
            np.array(128, np.uint8), np.array(-3, np.int8),
        ],
        opset=10, name="scalar-zp",
    ),
    OpCase(
        "MatMulInteger",
        [
            ints(np.uint8, 0, 255, 2, 3, 4), ints(np.uint8, 0, 255, 4, 5),
            np.array([7], np.uint8), np.array([1, 2, 3, 4, 5], np.uint8),
        ],
        opset=13, name="batch-percol-zp",
    ),
    # QLinearMatMul (forward only)
    OpCase(
        "QLinearMatMul",
        [
            ints(np.uint8, 0, 255, 3, 4), np.array(0.02, np.float32), np.array(120, np.uint8),
            ints(np.uint8, 0, 255, 4, 5), np.array(0.03, np.float32), np.array(130, np.uint8),
            np.array(0.05, np.float32), np.array(128, np.uint8),
        ],
        opset=10, atol=0.0, rtol=0.0,
    ),
    OpCase(
        "QLinearMatMul",
        [
            ints(np.uint8, 0, 255, 3, 4), np.array(0.02, np.float32), np.array(120, np.uint8),
            ints(np.int8, -128, 127, 4, 5), scale(5), ints(np.int8, -3, 3, 5),
            np.array(0.05, np.float32), np.array(128, np.uint8),
        ],
        opset=21, name="per-column-b", atol=0.0, rtol=0.0,
    ),
    OpCase(
        "MatMulInteger",
        [
            ints(np.uint8, 0, 255, 3, 4), ints(np.uint8, 0, 255, 4, 2),
            np.array([1, 2, 3], np.uint8), np.array(5, np.uint8),
        ],
        # onnxruntime's CPU kernel only takes a scalar a_zero_point (the spec allows per row).
        opset=10, name="per-row-zp", check_ort=False,
    ),
    OpCase(
        "QLinearMatMul",
        [
            ints(np.int8, -128, 127, 2, 3, 4), np.array(0.01, np.float32), np.array(-2, np.int8),
            ints(np.int8, -128, 127, 4, 5), np.array(0.02, np.float32), np.array(3, np.int8),
            np.array(0.04, np.float32), np.array(-5, np.int8),
        ],
        opset=21, name="int8-batch", atol=0.0, rtol=0.0,
    ),
]
