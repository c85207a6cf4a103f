"""The audit as HTML: the standalone page (onnxviz audit -o) and the report section (report --audit)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import onnx
import pytest

from onnxviz.audit import AuditResult, Finding, SkippedCheck, audit
from onnxviz.cli import audit as audit_cli
from onnxviz.cli.main import main
from onnxviz.errors import InputError, ReportError
from onnxviz.model import Model
from onnxviz.report import data as report_data
from onnxviz.report.audit import AuditSection, audit_section
from onnxviz.report.html import render_audit_html, render_html, write_audit_html
from tests import models

SCRIPT = "<script>alert(1)</script>"


def _result(**kwargs: Any) -> AuditResult:
    found = (
        Finding("x.info", "info", "an info", evidence={"values": list(range(20))}),
        Finding("x.error", "error", "an error", node="conv1", tensor="conv1_out", evidence={"ratio": 0.123456789}, hint="fix it"),
        Finding("x.warning", "warning", "a warning", evidence={"per_channel": {f"c{i}": i for i in range(12)}}),
    )
    fields: dict[str, Any] = {
        "model": "m",
        "findings": found,
        "checks_run": ("x.error", "x.warning", "x.info"),
        "skipped": (SkippedCheck("x.skipped", "does not apply: no image input"),),
        "timings": {"x.error": 0.25, "x.warning": 1.5},
        "inputs": "given inputs (2 samples)",
    }
    fields.update(kwargs)
    return AuditResult(**fields)


def _positions(html: str, *needles: str) -> list[int]:
    at = [html.find(n) for n in needles]
    assert all(p >= 0 for p in at), [n for n, p in zip(needles, at) if p < 0]
    return at


def test_verdict_first_then_findings_by_severity_with_evidence_and_hints() -> None:
    html = render_audit_html(_result())
    verdict, error, warning, info, checks = _positions(
        html, 'id="audit-verdict"', "an error", "a warning", "an info", 'id="audit-checks"'
    )
    assert verdict < error < warning < info < checks
    assert '<span class="v warn">FAIL</span>' in html
    for severity, n in (("error", 1), ("warning", 1), ("info", 1)):
        assert f'<span class="k">{severity}</span><span class="v{" warn" if severity != "info" else ""}">{n}</span>' in html
    assert 'node <span class="name">conv1</span>, tensor <span class="name">conv1_out</span>' in html
    assert "<tr><th>ratio</th><td class=\"mono\">0.1235</td></tr>" in html
    assert "[0, 1, 2, 3, 4, 5, 6, 7, … 12 more]" in html  # lists shortened
    assert "c7: 7, … 4 more}" in html  # mappings too
    assert "<strong>Hint:</strong> fix it" in html
    assert "<td class=\"mono\">x.skipped</td><td>does not apply: no image input</td>" in html
    assert "given inputs (2 samples)" in html
    # The page stands alone: report.css inlined, no script, nothing fetched.
    assert html.startswith("<!DOCTYPE html>") and "--accent" in html and "<script" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)


def test_timings_only_on_request_so_the_page_is_deterministic() -> None:
    plain = render_audit_html(_result())
    assert "Seconds" not in plain and "1.500" not in plain
    assert render_audit_html(_result(timings={"x.error": 9.0})) == plain
    timed = render_audit_html(_result(), timings=True)
    slow, fast = _positions(timed, "<td class=\"num\">1.500</td>", "<td class=\"num\">0.250</td>")
    assert slow < fast  # slowest first


def test_pass_with_no_findings() -> None:
    html = render_audit_html(_result(findings=(), skipped=()))
    assert '<span class="v">PASS</span>' in html and "<p>No findings.</p>" in html
    assert "Skipped check" not in html


def test_hostile_model_strings_are_escaped() -> None:
    model = Model.from_proto(models.hostile_names(), check=False)
    result = audit(model, probe_samples=2, probe_size=32, checks=["graph", "activations.ranges", "explanations"])
    assert any(SCRIPT in (f.node or "") + (f.tensor or "") + f.message for f in result.findings)
    html = render_audit_html(result)
    assert "<script" not in html and "alert(1)" in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # title, heading, findings
    assert "{{ 7*7 }}" in html and "&#34;double&#34; and &#39;single&#39;" in html
    assert "\"double\" and 'single'" not in html
    assert "<title>graph &lt;script&gt;alert(1)&lt;/script&gt; · onnxviz audit</title>" in html


def test_write_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "audit.html"
    write_audit_html(_result(), target)
    good = target.read_bytes()
    assert good.rstrip().endswith(b"</html>")

    class Exploding(str):
        def __html__(self) -> str:  # rendering fails after part of the page was written
            raise InputError("simulated failure while rendering")

    broken = _result(findings=(Finding("x.late", "info", Exploding("boom")),))
    with pytest.raises(ReportError, match="simulated failure"):
        write_audit_html(broken, target)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html"]


def test_cli_writes_the_page_and_keeps_its_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(models.with_dead_and_duplicate_filters(), path)
    out = tmp_path / "audit.html"
    checks = ["--checks", "weights,explanations"]
    assert main(["audit", str(path), "-q", "-o", str(out), *checks]) == 0
    html = out.read_text(encoding="utf-8")
    assert '<span class="v warn">WARN</span>' in html and "weights.dead-filters" in html
    assert "explanations.randomization" in html
    assert capsys.readouterr().out.startswith("verdict: WARN")
    out.unlink()
    assert main(["audit", str(path), "-q", "-o", str(out), "--fail-on", "warning", *checks]) == 1
    assert out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_cli_failed_write_leaves_the_old_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(models.tiny_cnn(), path)
    out = tmp_path / "audit.html"
    out.write_text("old page", encoding="utf-8")

    class Exploding(str):
        def __html__(self) -> str:
            raise InputError("simulated failure while rendering")

    monkeypatch.setattr(audit_cli, "audit", lambda *a, **k: _result(findings=(Finding("x", "info", Exploding("m")),)))
    assert main(["audit", str(path), "-q", "-o", str(out)]) == 1
    assert "error: a report image could not be rendered: simulated failure" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html", "m.onnx"]


def test_report_with_audit_has_the_audit_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, Any] = {}
    real = report_data.build_report

    def build(model: Model, **kwargs: Any) -> report_data.ReportData:
        captured.update(kwargs)
        return real(model, **{**kwargs, "featurevis": None})  # feature visualization is not under test

    monkeypatch.setattr(report_data, "build_report", build)
    path = tmp_path / "m.onnx"
    onnx.save(models.tiny_cnn(), path)
    out = tmp_path / "report.html"
    assert main(["report", str(path), "-q", "--audit", "-o", str(out)]) == 0
    assert isinstance(captured["audit"], AuditResult)
    html = out.read_text(encoding="utf-8")
    section = html[html.index('<section id="audit" class="section section-audit">') :]
    assert section.index('id="audit-verdict"') < section.index('id="audit-info"') < section.index('id="audit-checks"')
    assert '<li><a href="#audit">Audit</a>' in html  # in the table of contents
    assert "explanations.randomization" in section and "Seconds" not in section

    assert main(["report", str(path), "-q", "-o", str(out)]) == 0
    assert captured["audit"] is None and 'id="audit"' not in out.read_text(encoding="utf-8")


def test_audit_section_view_model_and_json() -> None:
    model = Model.from_proto(models.tiny_cnn(), check=False)
    result = _result()
    data = report_data.build_report(model, audit=result)
    section = data.section("audit")
    assert isinstance(section, AuditSection) and data.sections[-1] is section
    assert section == audit_section(result)
    assert [g.severity for g in section.groups] == ["error", "warning", "info"]
    assert [e.title for e in section.toc] == ["Errors (1)", "Warnings (1)", "Info (1)"]
    assert section.timings == () and audit_section(result, timings=True).timings[0] == ("x.warning", 1.5)
    as_json = data.to_json()["sections"][-1]
    assert as_json["kind"] == "audit" and as_json["verdict"] == "fail" and as_json["counts"][0] == ["error", 1]
    html = render_html(data)
    assert '<section id="audit" class="section section-audit">' in html
    assert render_html(dataclasses.replace(data)) == html
