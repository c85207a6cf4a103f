"""Model check-up: graph, weight, activation and runtime checks whose results are data.

``audit(model, inputs)`` returns an :class:`AuditResult` (findings by severity, a verdict,
checks run and skipped, timings); :func:`exit_code` turns it into a CI exit status. Every check
has a stable id (``family.name``) and a docstring saying what it flags and why it matters.
"""

from __future__ import annotations

from .findings import SEVERITIES, AuditResult, Finding, SkippedCheck, exit_code
from .runner import (
    INTERNAL,
    AuditContext,
    AuditSettings,
    Check,
    SkipCheck,
    all_checks,
    audit,
    select_checks,
)

__all__ = [
    "audit",
    "exit_code",
    "AuditResult",
    "Finding",
    "SkippedCheck",
    "SEVERITIES",
    "INTERNAL",
    "AuditSettings",
    "AuditContext",
    "Check",
    "SkipCheck",
    "all_checks",
    "select_checks",
]
