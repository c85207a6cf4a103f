"""Op cases for the elementwise family."""

from __future__ import annotations

from tests.backends.numpy.opcase import OpCase

CASES: list[OpCase] = []
