"""Op cases for the conv family."""

from __future__ import annotations

from tests.backends.numpy.opcase import OpCase

CASES: list[OpCase] = []
