"""What :func:`onnxviz.diff.diff` measured, as frozen dataclasses with ``to_json()``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Diff flags are audit findings: one shape for every flag onnxviz raises.
from ..audit.findings import Finding
from .match import Matching, UnmatchedTensor

__all__ = [
    "AttentionDrift",
    "DiffResult",
    "Finding",
    "OutputDrift",
    "TensorDrift",
    "WeightDrift",
]


@dataclass(frozen=True)
class TensorDrift:
    """How far B's tensor ``b`` is from A's tensor ``a`` over all the inputs.

    ``max_abs`` = max |b - a|; ``rel_l2`` = ||b - a|| / ||a|| (the norms over every sample and
    element); ``cosine`` = <a, b> / (||a|| ||b||). Non-finite elements (in either model) are
    counted in ``nonfinite`` and left out of the three figures.
    """

    a: str
    b: str
    node: str
    op_type: str
    matched_by: str
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float
    cosine: float
    nonfinite: int = 0

    def to_json(self) -> dict[str, Any]:
        return _jsonable(
            {
                "a": self.a,
                "b": self.b,
                "node": self.node,
                "op_type": self.op_type,
                "matched_by": self.matched_by,
                "shape": list(self.shape),
                "max_abs": self.max_abs,
                "rel_l2": self.rel_l2,
                "cosine": self.cosine,
                "nonfinite": self.nonfinite,
            }
        )


@dataclass(frozen=True)
class OutputDrift:
    """A model output of A and its counterpart in B: score drift and class agreement.

    ``top1`` is the share of samples whose arg-max class is the same; ``top5`` the mean share of
    each sample's ``k`` = min(5, classes) highest classes that both models rank in their top
    ``k`` (set overlap, order ignored). Both are ``None`` for outputs that are not ``(N, classes)``.
    """

    drift: TensorDrift
    top1: float | None
    top5: float | None
    k: int | None
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {
            **self.drift.to_json(),
            "top1": self.top1,
            "top5": self.top5,
            "k": self.k,
            "samples": self.samples,
        }


@dataclass(frozen=True)
class WeightDrift:
    """The difference between a conv's kernels in A and in B (the quantization error, for a
    quantized B): ``max_abs``, ``rel_l2`` = ||w_B - w_A|| / ||w_A||, and ``snr_db`` =
    10 log10(||w_A||^2 / ||w_B - w_A||^2) (``inf`` when equal). ``note`` says how B's weights were
    read (dequantized, or rescaled from integer units)."""

    node_a: str
    node_b: str
    op_a: str
    op_b: str
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float
    snr_db: float
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _jsonable(
            {
                "node_a": self.node_a,
                "node_b": self.node_b,
                "op_a": self.op_a,
                "op_b": self.op_b,
                "shape": list(self.shape),
                "max_abs": self.max_abs,
                "rel_l2": self.rel_l2,
                "snr_db": self.snr_db,
                "note": self.note,
            }
        )


@dataclass(frozen=True)
class AttentionDrift:
    """One attribution method on both models for the same targets (A's top-1 classes):
    Spearman rank correlation of the two maps, one value per input (``nan`` where a map is
    constant and the other is not)."""

    method: str
    spearman: tuple[float, ...]
    forward_only: bool
    layer_a: str | None = None
    layer_b: str | None = None

    @property
    def mean(self) -> float:
        vals = [s for s in self.spearman if math.isfinite(s)]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def min(self) -> float:
        vals = [s for s in self.spearman if math.isfinite(s)]
        return float(np.min(vals)) if vals else float("nan")

    def to_json(self) -> dict[str, Any]:
        return _jsonable(
            {
                "method": self.method,
                "mean": self.mean,
                "min": self.min,
                "spearman": list(self.spearman),
                "forward_only": self.forward_only,
                "layer_a": self.layer_a,
                "layer_b": self.layer_b,
            }
        )


@dataclass(frozen=True)
class DiffResult:
    """Everything ``diff(A, B)`` measured.

    ``tensors`` are the compared tensors in A's topological order; ``first_divergence`` is the
    first of them whose ``rel_l2`` exceeds ``threshold``. ``attention_note`` says which methods
    produced ``attention`` and, when forward-only methods stood in for gradient ones, why.
    ``findings`` are the flags raised, most severe first.
    """

    model_a: str
    model_b: str
    inputs: str
    samples: int
    threshold: float
    min_spearman: float
    outputs: tuple[OutputDrift, ...]
    tensors: tuple[TensorDrift, ...]
    first_divergence: TensorDrift | None
    weights: tuple[WeightDrift, ...]
    attention: tuple[AttentionDrift, ...]
    attention_note: str
    attention_fallback: bool
    matching: Matching
    findings: tuple[Finding, ...]

    @property
    def unmatched(self) -> tuple[UnmatchedTensor, ...]:
        return self.matching.unmatched

    def to_json(self) -> dict[str, Any]:
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "inputs": self.inputs,
            "samples": self.samples,
            "threshold": self.threshold,
            "min_spearman": self.min_spearman,
            "outputs": [o.to_json() for o in self.outputs],
            "first_divergence": None if self.first_divergence is None else self.first_divergence.to_json(),
            "tensors": [t.to_json() for t in self.tensors],
            "weights": [w.to_json() for w in self.weights],
            "attention": {
                "note": self.attention_note,
                "fallback": self.attention_fallback,
                "methods": [m.to_json() for m in self.attention],
            },
            "matching": {
                "inputs": [list(p) for p in self.matching.inputs],
                "outputs": [list(p) for p in self.matching.outputs],
                "nodes": [{"a": n.a, "b": n.b, "op_a": n.op_a, "op_b": n.op_b} for n in self.matching.nodes],
                "unmatched": [
                    {"model": u.model, "tensor": u.tensor, "reason": u.reason} for u in self.matching.unmatched
                ],
            },
            "findings": [f.to_json() for f in self.findings],
        }


def _jsonable(value: Any) -> Any:
    """Python numbers for numpy ones; non-finite floats as strings (strict JSON has none)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
