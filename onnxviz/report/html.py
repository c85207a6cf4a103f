"""Render :class:`~onnxviz.report.data.ReportData` as one self-contained HTML file.

The only module that touches jinja2. Templates live in the ``onnxviz.templates`` package:
``report.html`` is the page (with ``report.css`` and ``report.js`` inlined) and includes
``section_<kind>.html`` for every section, so a new section kind needs one new template and
nothing here. ``audit.html`` is the standalone audit page (``onnxviz audit -o``), the same
``section_audit.html`` the report includes with ``--audit``, on its own. Autoescaping is on for
every template and undefined variables are errors: every string from a model is untrusted and is
escaped, never marked safe. Images become PNG data URIs through the ``png`` filter, so the file
opens from ``file://`` with nothing else beside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateError

from .. import imaging
from ..errors import OnnxvizError, ReportError
from ..files import atomic_write
from .data import ReportData

if TYPE_CHECKING:
    from ..audit.findings import AuditResult

__all__ = ["render_audit_html", "render_html", "write_audit_html", "write_html"]

_TEMPLATE = "report.html"
_AUDIT_TEMPLATE = "audit.html"


def _png(image: np.ndarray) -> str:
    return imaging.data_uri(image)


def _num(value: Any, digits: int = 4) -> str:
    """A float with ``digits`` significant digits; '–' for missing or non-finite values."""
    if value is None:
        return "–"
    v = float(value)
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("+inf" if v > 0 else "-inf")
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def _count(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def _si(value: Any) -> str:
    """A large count in SI units: 8.18 G."""
    if value is None:
        return "–"
    v = float(value)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f}"


def _size(value: Any) -> str:
    if value is None:
        return "–"
    v = float(value)
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{int(v)} bytes"


def _pct(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "–"
    return f"{100.0 * float(value):.1f}%"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("onnxviz.templates", "."),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(png=_png, num=_num, count=_count, si=_si, size=_size, pct=_pct)
    return env


def _generate(name: str, **context: Any) -> Iterator[str]:
    """Template ``name`` rendered in chunks; any failure is raised as :class:`ReportError`."""
    try:
        template = _environment().get_template(name)
        yield from template.generate(**context)
    except TemplateError as e:
        raise ReportError(
            f"the report template failed: {type(e).__name__}: {e}",
            hint="this is a bug in onnxviz or a damaged installation; reinstall onnxviz and report it",
        ) from e
    except OnnxvizError as e:
        raise ReportError(
            f"a report image could not be rendered: {e.message}",
            hint=e.hint or "this is a bug in onnxviz; please report it with the model",
        ) from e


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML page (inline CSS/JS, images as data URIs)."""
    return "".join(_generate(_TEMPLATE, report=data))


def write_html(data: ReportData, path: str | os.PathLike[str]) -> Path:
    """Render the report into ``path`` atomically and return the path.

    The page is streamed into a temporary file in the same folder, flushed to disk, and moved
    over ``path`` with ``os.replace``. If rendering or writing fails at any point the temporary
    file is removed and an existing report at ``path`` is left as it was.
    """
    return _write(_generate(_TEMPLATE, report=data), path)


def render_audit_html(result: AuditResult, *, timings: bool = False) -> str:
    """The audit as one self-contained HTML page: the verdict, then the findings by severity
    with their evidence and hints, then the checks that ran and those skipped with why.

    Deterministic for a given result: the seconds per check are shown only with ``timings``.
    """
    return "".join(_audit_page(result, timings))


def write_audit_html(result: AuditResult, path: str | os.PathLike[str], *, timings: bool = False) -> Path:
    """Render the audit page into ``path`` atomically (as :func:`write_html`) and return the path."""
    return _write(_audit_page(result, timings), path)


def _audit_page(result: AuditResult, timings: bool) -> Iterator[str]:
    from .audit import audit_section

    return _generate(_AUDIT_TEMPLATE, s=audit_section(result, timings=timings))


def _write(chunks: Iterator[str], path: str | os.PathLike[str]) -> Path:
    """Stream ``chunks`` into ``path`` atomically; on any failure ``path`` is left as it was."""
    return atomic_write(path, chunks, what="report")
