"""Audit results as data: findings, the verdict, and the exit code a CI pipeline acts on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Severity",
    "SEVERITIES",
    "FailOn",
    "Finding",
    "SkippedCheck",
    "AuditResult",
    "exit_code",
]

Severity = Literal["error", "warning", "info"]
#: Severities from the most to the least severe; the order findings are listed in.
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
FailOn = Literal["error", "warning", "never"]

_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    """One thing an audit check noticed.

    ``check`` is the stable id of the check (``"weights.dead-filters"``); ``node`` and ``tensor``
    name where in the graph it is (node labels as :class:`onnxviz.graph.Node` gives them);
    ``evidence`` holds the numbers behind the message (numbers, strings and short lists only, so
    it serialises to JSON as is); ``hint`` says what to do about it.
    """

    check: str
    severity: Severity
    message: str
    node: str | None = None
    tensor: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    hint: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"unknown severity {self.severity!r}; use one of {SEVERITIES}")

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "node": self.node,
            "tensor": self.tensor,
            "evidence": _jsonable(dict(self.evidence)),
            "hint": self.hint,
        }


@dataclass(frozen=True)
class SkippedCheck:
    """A check that did not run, and why (not applicable, or a prerequisite failed)."""

    check: str
    reason: str


@dataclass(frozen=True)
class AuditResult:
    """Everything one audit found. ``findings`` are sorted by severity, then check id.

    ``inputs`` says which inputs the input-dependent checks used (the given ones, or a generated
    probe set); ``timings`` holds seconds per check, plus shared passes under ``"shared:..."``.
    """

    model: str
    findings: tuple[Finding, ...]
    checks_run: tuple[str, ...]
    skipped: tuple[SkippedCheck, ...]
    timings: Mapping[str, float]
    inputs: str = ""

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.findings, key=lambda f: (_RANK[f.severity], f.check)))
        object.__setattr__(self, "findings", ordered)

    @property
    def verdict(self) -> Literal["fail", "warn", "pass"]:
        """``"fail"`` with any error finding, ``"warn"`` with any warning, else ``"pass"``."""
        if any(f.severity == "error" for f in self.findings):
            return "fail"
        if any(f.severity == "warning" for f in self.findings):
            return "warn"
        return "pass"

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "verdict": self.verdict,
            "counts": self.counts,
            "inputs": self.inputs,
            "findings": [f.to_json() for f in self.findings],
            "checks_run": list(self.checks_run),
            "skipped": [{"check": s.check, "reason": s.reason} for s in self.skipped],
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
        }


def exit_code(result: AuditResult, fail_on: FailOn = "error") -> int:
    """1 when a finding at or above ``fail_on`` exists, else 0 (``"never"``: always 0)."""
    if fail_on == "never":
        return 0
    if fail_on not in ("error", "warning"):
        raise ValueError(f"fail_on must be 'error', 'warning' or 'never', not {fail_on!r}")
    limit = _RANK[fail_on]
    return 1 if any(_RANK[f.severity] <= limit for f in result.findings) else 0


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays to python numbers/lists, non-finite floats to strings (strict JSON)."""
    import math

    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
