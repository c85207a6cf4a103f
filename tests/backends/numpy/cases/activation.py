"""Op cases for the activation family."""

from __future__ import annotations

from tests.backends.numpy.opcase import OpCase

CASES: list[OpCase] = []
