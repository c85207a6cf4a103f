"""The numpy engine: an ONNX interpreter with a vector-Jacobian rule for every supported op."""

from __future__ import annotations

from . import ops  # noqa: F401  (registers every op family)
from .registry import NON_DIFFERENTIABLE, REGISTRY, Call

__all__ = ["REGISTRY", "NON_DIFFERENTIABLE", "Call"]
