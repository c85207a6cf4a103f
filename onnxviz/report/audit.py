"""The audit as a report section: the verdict first, then the findings by severity.

:func:`audit_section` turns an :class:`~onnxviz.audit.AuditResult` into an
:class:`AuditSection`, rendered by ``templates/section_audit.html`` inside the report
(``onnxviz report --audit``) and alone on the standalone page ``templates/audit.html``
(``onnxviz audit -o audit.html``). Evidence values are formatted here into short strings (lists
and mappings shortened); strings from the model stay verbatim, escaping them is the renderer's.
Timings vary from run to run, so they are left out unless asked for: the rest is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..audit.findings import SEVERITIES, AuditResult, Finding
from .sections import Section, TocEntry

__all__ = ["AuditFinding", "AuditGroup", "AuditSection", "audit_section"]

#: Items of a list (or entries of a mapping) shown in an evidence cell before "… N more".
EVIDENCE_ITEMS = 8
#: Longest evidence cell, in characters.
EVIDENCE_WIDTH = 200

_TITLES = {"error": "Errors", "warning": "Warnings", "info": "Info"}


@dataclass(frozen=True)
class AuditFinding:
    id: str
    check: str
    severity: str
    message: str
    node: str | None
    tensor: str | None
    evidence: tuple[tuple[str, str], ...]
    hint: str | None


@dataclass(frozen=True)
class AuditGroup:
    id: str
    severity: str
    title: str
    findings: tuple[AuditFinding, ...]


@dataclass(frozen=True)
class AuditSection(Section):
    """``verdict`` is ``"pass"``, ``"warn"`` or ``"fail"``; ``counts`` has every severity, most
    severe first; ``groups`` only the severities with findings; ``timings`` is empty unless the
    section was built with ``timings=True``."""

    kind: ClassVar[str] = "audit"
    id: str
    title: str
    model: str
    verdict: str
    counts: tuple[tuple[str, int], ...]
    inputs: str
    groups: tuple[AuditGroup, ...]
    checks_run: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    timings: tuple[tuple[str, float], ...]

    @property
    def toc(self) -> tuple[TocEntry, ...]:
        return tuple(TocEntry(g.id, f"{g.title} ({len(g.findings)})") for g in self.groups)


def audit_section(result: AuditResult, *, timings: bool = False, id: str = "audit", title: str = "Audit") -> AuditSection:
    """The view model of ``result``; with ``timings`` also the seconds per check, slowest first."""
    groups = []
    k = 0
    for severity in SEVERITIES:
        found = [f for f in result.findings if f.severity == severity]
        if not found:
            continue
        views = []
        for f in found:
            views.append(_finding(f, f"{id}-finding-{k}"))
            k += 1
        groups.append(AuditGroup(f"{id}-{severity}", severity, _TITLES[severity], tuple(views)))
    counts = result.counts
    timed: tuple[tuple[str, float], ...] = ()
    if timings:
        timed = tuple(sorted(((c, float(s)) for c, s in result.timings.items()), key=lambda cs: (-cs[1], cs[0])))
    return AuditSection(
        id=id,
        title=title,
        model=result.model,
        verdict=result.verdict,
        counts=tuple((s, counts[s]) for s in SEVERITIES),
        inputs=result.inputs,
        groups=tuple(groups),
        checks_run=tuple(result.checks_run),
        skipped=tuple((s.check, s.reason) for s in result.skipped),
        timings=timed,
    )


def _finding(f: Finding, anchor: str) -> AuditFinding:
    return AuditFinding(
        id=anchor,
        check=f.check,
        severity=f.severity,
        message=f.message,
        node=f.node,
        tensor=f.tensor,
        evidence=tuple((str(key), _shorten(_value(v))) for key, v in f.evidence.items()),
        hint=f.hint,
    )


def _value(v: Any) -> str:
    """One evidence value as text: floats to 4 significant digits, containers shortened."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        items = list(v.items())
        shown = ", ".join(f"{k}: {_value(x)}" for k, x in items[:EVIDENCE_ITEMS])
        more = f", … {len(items) - EVIDENCE_ITEMS} more" if len(items) > EVIDENCE_ITEMS else ""
        return "{" + shown + more + "}"
    if isinstance(v, (list, tuple)):
        shown = ", ".join(_value(x) for x in v[:EVIDENCE_ITEMS])
        more = f", … {len(v) - EVIDENCE_ITEMS} more" if len(v) > EVIDENCE_ITEMS else ""
        return "[" + shown + more + "]"
    return str(v)


def _shorten(text: str) -> str:
    return text if len(text) <= EVIDENCE_WIDTH else text[: EVIDENCE_WIDTH - 1] + "…"
