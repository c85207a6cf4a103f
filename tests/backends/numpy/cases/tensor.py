"""Op cases for the tensor family."""

from __future__ import annotations

from tests.backends.numpy.opcase import OpCase

CASES: list[OpCase] = []
