"""Compare two versions of a model: FP32 vs FP16 or INT8, a re-export, another optimization level.

``diff(a, b, inputs)`` returns a :class:`DiffResult`: output agreement, drift of every matched
tensor and the first layer that diverges, per-layer kernel (quantization) error, and whether the
attribution maps still point at the same evidence. ``match_tensors`` is the tensor pairing it
uses (by name, then by graph position through quantization wrappers).
"""

from __future__ import annotations

from .compare import (
    DEFAULT_METHODS,
    DEFAULT_MIN_SPEARMAN,
    DEFAULT_THRESHOLD,
    FALLBACK_METHODS,
    diff,
    gradient_blocker,
    probe_inputs,
    spearman,
)
from .match import (
    Matching,
    NodePair,
    TensorPair,
    UnmatchedTensor,
    canonical_op,
    match_tensors,
)
from .result import AttentionDrift, DiffResult, OutputDrift, TensorDrift, WeightDrift

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_MIN_SPEARMAN",
    "DEFAULT_THRESHOLD",
    "FALLBACK_METHODS",
    "AttentionDrift",
    "DiffResult",
    "Matching",
    "NodePair",
    "OutputDrift",
    "TensorDrift",
    "TensorPair",
    "UnmatchedTensor",
    "WeightDrift",
    "canonical_op",
    "diff",
    "gradient_blocker",
    "match_tensors",
    "probe_inputs",
    "spearman",
]
