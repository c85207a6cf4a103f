"""Op cases for the norm family."""

from __future__ import annotations

from tests.backends.numpy.opcase import OpCase

CASES: list[OpCase] = []
