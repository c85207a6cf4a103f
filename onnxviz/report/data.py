"""View models of the HTML report: frozen dataclasses of numbers, strings and images.

Nothing here knows HTML or jinja2. :func:`build_report` runs the analyses (layer table, kernels,
feature maps, predictions) and turns their results into a :class:`ReportData`: a title, a tuple
of typed *sections* and a footer. Every section derives from
:class:`~onnxviz.report.sections.Section`: it has a ``kind`` (the template it is rendered by:
``templates/section_<kind>.html``), an ``id`` (its HTML anchor, never derived from a model
string) and a ``title``; adding a section to the report is one dataclass and one template.

The overview, layer table, inputs and predictions sections live here; the larger ones have a
module each, with their view models and a builder that :func:`build_report` calls:
:mod:`~onnxviz.report.kernels`, :mod:`~onnxviz.report.featuremaps`,
:mod:`~onnxviz.report.attributions`, :mod:`~onnxviz.report.featurevis` and
:mod:`~onnxviz.report.audit`. Their names that have always been importable from here (the
kernels and feature-maps view models, ``Section``, ``TocEntry``) still are.

Images are float arrays ``(H, W)`` or ``(H, W, 3)`` in ``[0, 1]``; :mod:`onnxviz.report.html`
encodes them as PNG data URIs. Strings taken from the model (names, metadata, doc strings) are
untrusted and kept verbatim: escaping them is the renderer's job.

The data is deterministic: the same model and inputs give the same ``ReportData`` (the
generation time is only recorded with ``timestamp=True``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import imaging
from ..kernels import conv_kernels
from ..layers import ModelSummary, summarize
from .featuremaps import (
    ChannelRank,
    FeatureMapGrid,
    FeatureMapsSection,
    FeatureMapView,
    feature_maps_section,
)
from .kernels import KernelLayer, KernelsSection, WeightSummary, kernels_section
from .sections import MAX_SHOWN_INPUTS, Image, Section, TocEntry, shape_str

if TYPE_CHECKING:  # the input pipeline is only needed for its types and array_to_image
    from ..audit.findings import AuditResult
    from ..inputs import PreparedInputs
    from ..model import Model
    from .featurevis import FeatureVisOptions

__all__ = [
    "MAX_SHOWN_INPUTS",
    "ChannelRank",
    "FeatureMapGrid",
    "FeatureMapView",
    "FeatureMapsSection",
    "Footer",
    "InputThumb",
    "InputsSection",
    "KernelLayer",
    "KernelsSection",
    "LayerRow",
    "LayersSection",
    "OutputPredictions",
    "OverviewSection",
    "Prediction",
    "PredictionsSection",
    "ReportData",
    "Section",
    "TensorRow",
    "TocEntry",
    "Totals",
    "WeightSummary",
    "build_report",
]

#: Input thumbnails larger than this (longest edge) are reduced; tiny ones are upscaled
#: (nearest) to at least half of it.
THUMBNAIL_PX = 224
#: Predictions shown per input and output.
TOP_PREDICTIONS = 5


# ------------------------------------------------------------------------------------------
# sections


@dataclass(frozen=True)
class TensorRow:
    name: str
    shape: str
    dtype: str


@dataclass(frozen=True)
class Totals:
    params: int
    macs: int
    flops: int
    #: How the counts were obtained, e.g. "per sample (batch 1), input 'x' 1x3x224x224".
    basis: str
    #: Layers whose MACs could not be counted (unknown shapes); they are left out of ``macs``.
    unknown_macs: tuple[str, ...]


@dataclass(frozen=True)
class OverviewSection(Section):
    kind: ClassVar[str] = "overview"
    id: str
    title: str
    model_name: str
    file_size: int | None
    producer: str
    ir_version: int
    opsets: tuple[tuple[str, int], ...]
    model_version: int
    doc_string: str
    metadata: tuple[tuple[str, str], ...]
    inputs: tuple[TensorRow, ...]
    outputs: tuple[TensorRow, ...]
    totals: Totals
    op_histogram: tuple[tuple[str, int], ...]
    layer_count: int
    folded_nodes: int
    conv_count: int


@dataclass(frozen=True)
class LayerRow:
    index: int
    label: str
    op_type: str
    inputs: str
    outputs: str
    params: int
    macs: int | None


@dataclass(frozen=True)
class LayersSection(Section):
    kind: ClassVar[str] = "layers"
    id: str
    title: str
    rows: tuple[LayerRow, ...]
    note: str


@dataclass(frozen=True)
class InputThumb:
    label: str
    image: Image | None
    note: str


@dataclass(frozen=True)
class InputsSection(Section):
    kind: ClassVar[str] = "inputs"
    id: str
    title: str
    batch_size: int
    feeds: tuple[TensorRow, ...]
    image_input: str
    thumbnails: tuple[InputThumb, ...]
    preprocess: tuple[tuple[str, str], ...]
    note: str


@dataclass(frozen=True)
class Prediction:
    rank: int
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class InputPredictions:
    label: str
    top: tuple[Prediction, ...]


@dataclass(frozen=True)
class OutputPredictions:
    output: str
    shape: str
    per_input: tuple[InputPredictions, ...]
    note: str


@dataclass(frozen=True)
class PredictionsSection(Section):
    kind: ClassVar[str] = "predictions"
    id: str
    title: str
    outputs: tuple[OutputPredictions, ...]
    note: str


@dataclass(frozen=True)
class Footer:
    versions: tuple[tuple[str, str], ...]
    command: str
    generated: str | None


@dataclass(frozen=True)
class ReportData:
    title: str
    sections: tuple[Section, ...]
    footer: Footer

    def section(self, kind: str) -> Section | None:
        """The first section of this kind, or ``None``."""
        return next((s for s in self.sections if s.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data: numbers and strings only (images are left out).

        Every section becomes a dict with its ``kind``; non-finite floats become ``None``.
        """
        return {
            "title": self.title,
            "sections": [_jsonable(s) for s in self.sections],
            "footer": _jsonable(self.footer),
        }


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        kind = getattr(value, "kind", None)
        if isinstance(kind, str) and kind:
            out["kind"] = kind
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if isinstance(v, np.ndarray):
                continue
            out[f.name] = _jsonable(v)
        return out
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# ------------------------------------------------------------------------------------------
# building


def build_report(
    model: Model,
    *,
    inputs: PreparedInputs | None = None,
    feature_tensors: list[str] | None = None,
    top_k: int = 16,
    command: str = "",
    max_channels: int = 16,
    timestamp: bool = False,
    methods: Sequence[str] | None = None,
    featurevis: FeatureVisOptions | None = None,
    audit: AuditResult | None = None,
) -> ReportData:
    """Analyse ``model`` (and, when given, its run on ``inputs``) into report view models.

    Sections: overview, layer table, kernels of every convolution; with ``inputs`` also the
    inputs, the top predictions and the feature maps of ``feature_tensors`` (default:
    :func:`onnxviz.featuremaps.default_feature_tensors`; ``[]`` for none), each with its
    ``top_k`` channels by mean activation, and the attribution maps of ``methods`` (registry
    names; default :data:`onnxviz.report.attributions.DEFAULT_METHODS`, ``[]`` for none).
    Deeper conv layers show at most ``max_channels`` filters and input channels, chosen by L2
    norm. With ``featurevis`` options, also the feature-visualization section
    (:mod:`onnxviz.report.featurevis`; seeded, so still deterministic). With an ``audit``
    result, also the audit section (:mod:`onnxviz.report.audit`, without timings).

    A model exported with a fixed batch of 1 is run one sample at a time, so a report can show
    several inputs of such a model.
    """
    from ..errors import InputError

    if top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}")
    if max_channels < 1:
        raise InputError(f"max_channels must be at least 1, got {max_channels}")
    feeds = None if inputs is None else dict(inputs.feeds)
    sample_shapes = None if feeds is None else _per_sample_shapes(model, feeds)
    summary = summarize(model, sample_shapes)
    kernels = conv_kernels(model)

    sections: list[Section] = [
        _overview(summary, len(kernels), sample_shapes, feeds),
        _layers(summary),
    ]
    if inputs is not None and feeds is not None:
        batch = _batch_size(feeds)
        labels = _sample_labels(inputs.sources, batch)
        sections.append(_inputs_section(model, inputs, feeds, labels))
        sections.append(_predictions(model, feeds, labels))
    sections.append(kernels_section(kernels, max_channels=max_channels))
    if inputs is not None and feeds is not None:
        sections.append(
            feature_maps_section(
                model, feeds, labels, tensors=feature_tensors, top_k=top_k
            )
        )
        from .attributions import DEFAULT_METHODS, attribution_section

        chosen = DEFAULT_METHODS if methods is None else tuple(methods)
        if chosen:
            sections.append(
                attribution_section(
                    model, feeds, inputs.preprocess, labels, chosen, input_name=getattr(inputs, "image_input", None)
                )
            )
    if featurevis is not None:
        from .featurevis import featurevis_section

        sections.append(
            featurevis_section(
                model,
                featurevis,
                feeds=feeds,
                preprocess=None if inputs is None else inputs.preprocess,
                labels=() if feeds is None else _sample_labels(inputs.sources, _batch_size(feeds)),  # type: ignore[union-attr]
            )
        )
    if audit is not None:
        from .audit import audit_section

        sections.append(audit_section(audit))
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds") if timestamp else None
    return ReportData(
        title=summary.name,
        sections=tuple(sections),
        footer=Footer(versions=_versions(), command=command, generated=generated),
    )


# ------------------------------------------------------------------------------------------
# batches


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1


def _per_sample_shapes(model: Model, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Input shapes with the batch set to 1, so the layer table counts MACs per sample."""
    n = _batch_size(feeds)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, arr in feeds.items():
        shape = tuple(int(d) for d in arr.shape)
        if len(shape) >= 2 and shape[0] == n:
            shape = (1,) + shape[1:]
        shapes[name] = shape
    return shapes


def _sample_labels(sources: Sequence[str], batch: int) -> list[str]:
    """One caption per sample: the input's file name (the path as given when two share a name)."""
    names = [Path(str(s)).name or str(s) for s in sources]
    shown = names if len(set(names)) == len(names) else [str(s) for s in sources]
    if len(shown) == batch:
        return shown
    if len(shown) == 1:
        return [f"{shown[0]}[{i}]" for i in range(batch)]
    return [f"sample {i}" for i in range(batch)]


# ------------------------------------------------------------------------------------------
# overview and layer table


def _overview(
    s: ModelSummary,
    conv_count: int,
    sample_shapes: Mapping[str, tuple[int, ...]] | None,
    feeds: Mapping[str, np.ndarray] | None,
) -> OverviewSection:
    used = ", ".join(f"{name!r} {shape_str(shape)}" for name, shape in s.input_shapes_used.items())
    if sample_shapes is not None and feeds is not None:
        basis = f"per sample (batch 1), for the given inputs: {used}"
    else:
        basis = f"per sample (batch 1), for the declared input shapes: {used or 'unknown'}"
    return OverviewSection(
        id="overview",
        title="Overview",
        model_name=s.name,
        file_size=s.file_size,
        producer=s.producer,
        ir_version=s.ir_version,
        opsets=tuple((k, int(v)) for k, v in s.opsets.items()),
        model_version=s.model_version,
        doc_string=s.doc_string,
        metadata=tuple((str(k), str(v)) for k, v in s.metadata.items()),
        inputs=tuple(TensorRow(t.name, t.shape_str(), str(t.dtype)) for t in s.inputs),
        outputs=tuple(TensorRow(t.name, t.shape_str(), str(t.dtype)) for t in s.outputs),
        totals=Totals(
            params=s.total_params,
            macs=s.total_macs,
            flops=s.total_flops,
            basis=basis,
            unknown_macs=tuple(s.unknown_macs),
        ),
        op_histogram=tuple((k, int(v)) for k, v in s.op_histogram.items()),
        layer_count=len(s.layers),
        folded_nodes=s.folded_nodes,
        conv_count=conv_count,
    )


def _layers(s: ModelSummary) -> LayersSection:
    rows = tuple(
        LayerRow(
            index=layer.index,
            label=layer.label,
            op_type=layer.op_type if layer.domain in ("", "ai.onnx") else f"{layer.domain}.{layer.op_type}",
            inputs=" ".join(shape_str(x) for x in layer.input_shapes),
            outputs=" ".join(shape_str(x) for x in layer.output_shapes),
            params=layer.params,
            macs=layer.macs,
        )
        for layer in s.layers
    )
    note = (
        f"{len(rows)} runtime nodes in graph order; {s.folded_nodes} node(s) that only compute "
        "constants (weight subgraphs, Constant nodes) are folded away. Shapes and MACs are per "
        "sample (batch 1); '?' is a shape that shape inference could not resolve."
    )
    return LayersSection(id="layers", title="Layers", rows=rows, note=note)


# ------------------------------------------------------------------------------------------
# inputs and predictions


def _display_image(x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """An unbatched array without a preprocessing record, min-max scaled for display."""
    a = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    elif not (a.ndim == 3 and a.shape[2] in (1, 3)):
        return None, f"array of shape {list(x.shape)} is not an image"
    lo, hi = float(a.min()), float(a.max())
    img = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)
    return (img[:, :, 0] if img.shape[2] == 1 else img), "min-max scaled for display (no preprocessing record)"


def _thumbnail(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    longest = max(h, w)
    if longest < THUMBNAIL_PX // 2:
        return imaging.upscale_nearest(img, math.ceil(THUMBNAIL_PX / 2 / longest))
    if longest <= THUMBNAIL_PX:
        return img
    from PIL import Image as PILImage

    size = (max(1, round(w * THUMBNAIL_PX / longest)), max(1, round(h * THUMBNAIL_PX / longest)))
    u8 = imaging.to_uint8(img)
    small = PILImage.fromarray(u8).resize(size, resample=PILImage.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _inputs_section(
    model: Model, inputs: PreparedInputs, feeds: Mapping[str, np.ndarray], labels: list[str]
) -> InputsSection:
    image_input = getattr(inputs, "image_input", None)
    if image_input is None:
        image_input = next(
            (t.name for t in model.inputs if t.shape is not None and len(t.shape) == 4 and t.name in feeds), ""
        )
    pre = inputs.preprocess
    thumbs: list[InputThumb] = []
    if image_input:
        batch = feeds[image_input]
        for i, label in enumerate(labels[:MAX_SHOWN_INPUTS]):
            if pre is not None:
                from ..inputs import array_to_image

                img: np.ndarray | None = array_to_image(batch[i], pre)
                note = "the model input mapped back through the preprocessing"
            else:
                img, note = _display_image(batch[i])
            if img is not None:
                if img.ndim == 3 and img.shape[2] == 1:
                    img = img[:, :, 0]
                img = _thumbnail(np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0))
            thumbs.append(InputThumb(label=label, image=img, note=note))
    described = pre.describe() if pre is not None else {}
    preprocess = tuple((str(k), _plain(v)) for k, v in described.items())
    n = _batch_size(feeds)
    note = ""
    if n > MAX_SHOWN_INPUTS:
        note = f"showing the first {MAX_SHOWN_INPUTS} of {n} inputs"
    if model.fixed_batch and n > 1:
        note = (note + "; " if note else "") + "the model has a fixed batch of 1: it was run once per input"
    return InputsSection(
        id="inputs",
        title="Inputs",
        batch_size=n,
        feeds=tuple(TensorRow(k, shape_str(v.shape), str(v.dtype)) for k, v in feeds.items()),
        image_input=image_input,
        thumbnails=tuple(thumbs),
        preprocess=preprocess,
        note=note,
    )


def _plain(v: object) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_plain(x) for x in v) if v else "none"
    if v is None:
        return "none"
    return str(v)


def _class_names(metadata: Mapping[str, str]) -> tuple[list[str] | None, str]:
    raw = metadata.get("classes")
    if raw is None:
        return None, ""
    try:
        names = json.loads(raw)
    except (ValueError, RecursionError):
        return None, "metadata key 'classes' is not valid JSON; class indices are shown instead"
    if not isinstance(names, list):
        return None, "metadata key 'classes' is not a JSON list; class indices are shown instead"
    return [str(n) for n in names], "class names from the model's metadata key 'classes'"


def _predictions(model: Model, feeds: Mapping[str, np.ndarray], labels: list[str]) -> PredictionsSection:
    out_names = [t.name for t in model.outputs]
    values: dict[str, list[np.ndarray]] = {n: [] for n in out_names}
    result = model.run(feeds)
    for n in out_names:
        values[n].append(np.asarray(result[n]))
    names, names_note = _class_names(model.metadata)
    n = len(labels)
    outputs: list[OutputPredictions] = []
    skipped: list[str] = []
    for out in out_names:
        arr = np.concatenate(values[out], axis=0) if len(values[out]) > 1 else values[out][0]
        if arr.ndim < 1 or arr.shape[0] != n or arr.size // max(n, 1) < 2 or arr.dtype.kind not in "fiu":
            skipped.append(out)
            continue
        flat = arr.reshape(n, -1).astype(np.float64)
        k = min(TOP_PREDICTIONS, flat.shape[1])
        per_input: list[InputPredictions] = []
        for i, label in enumerate(labels):
            row = np.nan_to_num(flat[i], nan=-np.inf)
            order = np.argsort(-row, kind="stable")[:k]
            top = tuple(
                Prediction(
                    rank=r + 1,
                    index=int(c),
                    label=names[c] if names is not None and c < len(names) else "",
                    score=float(flat[i, c]),
                )
                for r, c in enumerate(order)
            )
            per_input.append(InputPredictions(label=label, top=top))
        notes = []
        if np.all(flat >= 0) and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3):
            notes.append("each row sums to 1: the scores are probabilities")
        else:
            notes.append("raw output values (not normalised)")
        if names is not None and len(names) != flat.shape[1]:
            notes.append(f"the metadata lists {len(names)} class names for {flat.shape[1]} outputs")
        outputs.append(
            OutputPredictions(output=out, shape=shape_str(arr.shape), per_input=tuple(per_input), note="; ".join(notes))
        )
    note_parts = [names_note] if names_note else []
    if skipped:
        note_parts.append("outputs without per-input scores are not listed: " + ", ".join(repr(s) for s in skipped))
    return PredictionsSection(
        id="predictions", title="Predictions", outputs=tuple(outputs), note="; ".join(note_parts)
    )


# ------------------------------------------------------------------------------------------
# footer


def _versions() -> tuple[tuple[str, str], ...]:
    import onnx

    from .. import __version__

    try:
        import onnxruntime

        ort_version = str(onnxruntime.__version__)
    except ImportError:  # the report itself does not need it without inputs
        ort_version = "not installed"
    return (
        ("onnxviz", __version__),
        ("onnx", str(onnx.__version__)),
        ("onnxruntime", ort_version),
        ("numpy", str(np.__version__)),
        ("python", platform.python_version()),
    )
