"""Check a model: graph validity, weights, activations, runtime consistency and explanation sanity.

Prints the verdict (pass / warn / fail) first, then the findings by severity with their
evidence and hints. The exit status is 1 when a finding at or above --fail-on exists, so a CI
pipeline can gate on it; -o also writes the same as a standalone HTML page (deterministic: the
timings are left out), e.g. to keep as a CI artifact.

Examples:
  onnxviz audit model.onnx
  onnxviz audit model.onnx --input cat.png --input dog.jpg --json audit.json
  onnxviz audit model.onnx -o audit.html
  onnxviz audit model.onnx --fail-on warning --checks graph,weights.nonfinite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..audit import AuditResult, Finding, audit, exit_code, select_checks
from ..model import load
from .common import Progress, add_input_arguments, prepare_cli_inputs, write_json

__all__ = ["add_arguments", "run", "format_result"]

_EVIDENCE_ITEMS = 6
_EVIDENCE_WIDTH = 160


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument("--json", metavar="FILE", help="also write the findings as JSON (written atomically)")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="also write the audit as a standalone HTML page (written atomically)"
    )
    parser.add_argument(
        "--fail-on",
        choices=["error", "warning", "never"],
        default="error",
        help="exit with status 1 when a finding of this severity or worse exists (default: error)",
    )
    parser.add_argument(
        "--checks",
        metavar="ID,ID",
        help="comma-separated check ids or families (graph, weights, activations, runtime, explanations); "
        "default: all",
    )
    parser.add_argument("--list-checks", action="store_true", help="list the check ids and exit")
    add_input_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.list_checks:
        for cls in select_checks(None):
            doc = (cls.__doc__ or "").strip().splitlines()
            sys.stdout.write(f"{cls.id:32s} {doc[0] if doc else ''}\n")
        return 0
    progress = Progress(args.quiet)
    checks = [c for c in args.checks.split(",") if c.strip()] if args.checks else None
    if checks is not None:
        select_checks(checks)  # unknown ids fail before the model is loaded
    progress(f"loading {args.model}")
    # Not validated on load: an invalid model is a finding (graph.checker), not a refusal.
    model = load(args.model, check=False)
    prepared = prepare_cli_inputs(model, args)
    progress("auditing" + (f" with {prepared.batch_size} input(s)" if prepared is not None else " with a generated probe set"))
    result = audit(model, prepared, checks=checks, raise_errors=bool(getattr(args, "debug", False)))
    sys.stdout.write(format_result(result))
    if args.json:
        data = result.to_json()
        data["fail_on"] = args.fail_on
        data["exit_code"] = exit_code(result, args.fail_on)
        write_json(data, Path(args.json))
        progress(f"wrote {args.json}")
    if args.output:
        from ..report.html import write_audit_html

        write_audit_html(result, Path(args.output))
        progress(f"wrote {args.output}")
    return exit_code(result, args.fail_on)


def _clean(text: str, width: int | None = None) -> str:
    """Untrusted model strings: control characters shown escaped so they cannot move the terminal."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    if width is not None and len(out) > width:
        out = out[: width - 1] + "…"
    return out


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        items = list(v.items())
        shown = ", ".join(f"{_clean(k)}: {_value(x)}" for k, x in items[:_EVIDENCE_ITEMS])
        more = f", … {len(items) - _EVIDENCE_ITEMS} more" if len(items) > _EVIDENCE_ITEMS else ""
        return "{" + shown + more + "}"
    if isinstance(v, (list, tuple)):
        shown = ", ".join(_value(x) for x in v[: _EVIDENCE_ITEMS * 2])
        more = f", … {len(v) - _EVIDENCE_ITEMS * 2} more" if len(v) > _EVIDENCE_ITEMS * 2 else ""
        return "[" + shown + more + "]"
    if isinstance(v, str):
        return _clean(v)
    return _clean(str(v))


def _finding_lines(f: Finding) -> list[str]:
    lines = [f"  [{f.check}] {_clean(f.message)}"]
    where = [f"node {_clean(f.node)!s}" if f.node else "", f"tensor {_clean(f.tensor)!s}" if f.tensor else ""]
    where = [w for w in where if w]
    if where:
        lines.append("      at " + ", ".join(where))
    for key, value in f.evidence.items():
        lines.append(_clean(f"      {key}: {_value(value)}", _EVIDENCE_WIDTH))
    if f.hint:
        lines.append(f"      hint: {_clean(f.hint)}")
    return lines


def format_result(result: AuditResult) -> str:
    counts = result.counts
    lines = [
        f"verdict: {result.verdict.upper()}  ({counts['error']} error(s), {counts['warning']} warning(s), "
        f"{counts['info']} info) — {_clean(result.model)}",
    ]
    if result.inputs:
        lines.append(f"inputs: {_clean(result.inputs)}")
    for severity in ("error", "warning", "info"):
        group = [f for f in result.findings if f.severity == severity]
        if not group:
            continue
        lines.append("")
        lines.append(f"{severity.upper()} ({len(group)})")
        for f in group:
            lines.extend(_finding_lines(f))
    if result.skipped:
        lines.append("")
        lines.append("skipped")
        for s in result.skipped:
            lines.append(f"  [{s.check}] {_clean(s.reason)}")
    total = sum(v for k, v in result.timings.items() if not k.startswith("shared:"))
    lines.append("")
    lines.append(f"{len(result.checks_run)} checks ran in {total:.1f}s")
    return "\n".join(lines) + "\n"
