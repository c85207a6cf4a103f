"""What every report section shares: the base class, the table-of-contents entry, the image type
and the small formatting helpers several sections use.

A section is a frozen dataclass deriving from :class:`Section`: ``kind`` selects the template
that renders it (``templates/section_<kind>.html``), ``id`` is its HTML anchor (never derived
from a model string), ``title`` its heading and :attr:`Section.toc` the sub-entries listed under
it in the table of contents. Images are float arrays ``(H, W)`` or ``(H, W, 3)`` in ``[0, 1]``.

The section modules (:mod:`~onnxviz.report.kernels`, :mod:`~onnxviz.report.featuremaps`,
:mod:`~onnxviz.report.attributions`, :mod:`~onnxviz.report.featurevis`,
:mod:`~onnxviz.report.audit`) import this module and never :mod:`onnxviz.report.data`, whose
:func:`~onnxviz.report.data.build_report` imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

import numpy as np

from ..graph import Dim

__all__ = [
    "MAX_SHOWN_INPUTS",
    "Image",
    "Section",
    "TocEntry",
    "shape_str",
    "upscale_for",
]

#: Feature-map grids and thumbnails are drawn for at most this many inputs of a batch.
MAX_SHOWN_INPUTS = 4

#: A float image ``(H, W)`` or ``(H, W, 3)`` in ``[0, 1]``; the renderer encodes it as a PNG.
Image: TypeAlias = np.ndarray


@dataclass(frozen=True)
class TocEntry:
    """One line of the table of contents: the anchor ``id`` and the text shown."""

    id: str
    title: str


class Section:
    """Base of every report section: ``kind`` selects the template, ``id`` is the anchor."""

    kind: ClassVar[str] = ""
    id: str
    title: str

    @property
    def toc(self) -> tuple[TocEntry, ...]:
        """Sub-entries shown under this section in the table of contents."""
        return ()


def shape_str(shape: Sequence[Dim] | None) -> str:
    """``[1, 3, ?, ?]``: a shape with unknown dimensions as ``?``; ``?`` for an unknown shape."""
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def upscale_for(k: int, target: int) -> int:
    """The nearest-neighbour upscaling factor for an edge of ``k`` pixels: the largest integer
    that keeps it within ``target`` pixels, and at least 1 (larger edges are left as they are)."""
    return max(1, target // max(1, k))
