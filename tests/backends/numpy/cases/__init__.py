"""The table of op cases, one module per op family (mirrors backends/numpy/ops)."""

from __future__ import annotations

from tests.backends.numpy.opcase import OpCase
from tests.backends.numpy.cases import elementwise
from tests.backends.numpy.cases import activation
from tests.backends.numpy.cases import conv
from tests.backends.numpy.cases import pool
from tests.backends.numpy.cases import norm
from tests.backends.numpy.cases import matmul
from tests.backends.numpy.cases import reduce
from tests.backends.numpy.cases import shape
from tests.backends.numpy.cases import tensor
from tests.backends.numpy.cases import resize
from tests.backends.numpy.cases import quant

ALL_CASES: list[OpCase] = [
    *elementwise.CASES,
    *activation.CASES,
    *conv.CASES,
    *pool.CASES,
    *norm.CASES,
    *matmul.CASES,
    *reduce.CASES,
    *shape.CASES,
    *tensor.CASES,
    *resize.CASES,
    *quant.CASES,
]
