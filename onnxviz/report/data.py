"""View models of the HTML report: frozen dataclasses of numbers, strings and images.

Nothing here knows HTML or jinja2. :func:`build_report` runs the analyses (layer table, kernels,
feature maps, predictions) and turns their results into a :class:`ReportData`: a title, a tuple
of typed *sections* and a footer. Every section has a ``kind`` (the template it is rendered by:
``templates/section_<kind>.html``), an ``id`` (its HTML anchor, never derived from a model
string) and a ``title``; adding a section to the report is one dataclass here and one template.

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
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from .. import imaging
from ..featuremaps import FeatureMap, default_feature_tensors, feature_maps
from ..graph import Dim
from ..kernels import ConvKernels, conv_kernels
from ..layers import ModelSummary, summarize

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

#: Feature-map grids and thumbnails are drawn for at most this many inputs of a batch.
MAX_SHOWN_INPUTS = 4
#: A 1x1 convolution's weight matrix is shown for at most this many outputs and inputs.
MATRIX_CHANNELS = 64
#: First-layer filters shown (all of them in every common CNN: 64 or 96).
FIRST_LAYER_MAX_FILTERS = 256
#: Target edge, in image pixels, of one upscaled kernel tile (first layer / deeper grids).
FIRST_LAYER_TILE_PX = 48
KERNEL_TILE_PX = 24
#: A 1x1 weight-matrix heatmap is drawn about this wide, with cells of 4 to 16 pixels.
MATRIX_PX = 256
#: Small feature maps are upscaled (nearest) to at least this edge so a 7x7 map is visible.
FEATURE_TILE_PX = 56
#: Input thumbnails larger than this (longest edge) are reduced; tiny ones are upscaled
#: (nearest) to at least half of it.
THUMBNAIL_PX = 224
#: Predictions shown per input and output.
TOP_PREDICTIONS = 5

Image = np.ndarray


# ------------------------------------------------------------------------------------------
# sections


@dataclass(frozen=True)
class TocEntry:
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
class WeightSummary:
    count: int
    mean: float
    std: float
    min: float
    max: float
    near_zero_share: float
    dead_filters: tuple[int, ...]
    nonfinite: int
    bias_min: float | None
    bias_max: float | None


@dataclass(frozen=True)
class KernelLayer:
    """One convolution's kernels as an image.

    ``layout`` is ``"color"`` (first layer, RGB filters), ``"grey"`` (first layer, 1-channel
    input), ``"grid"`` (one row per output filter, one tile per input channel),
    ``"depthwise"`` (one row of per-channel filters) or ``"matrix"`` (1x1 conv as a heatmap of
    the output x input weight matrix); ``image`` is ``None`` when the weight cannot be drawn.
    """

    id: str
    node: str
    op_type: str
    weight_shape: str
    group: int
    first_layer: bool
    layout: str
    image: Image | None
    caption: str
    filters_shown: tuple[int, ...]
    filters_total: int
    channels_shown: tuple[int, ...]
    channels_total: int
    stats: WeightSummary
    source: str
    quantization: str | None


@dataclass(frozen=True)
class KernelsSection(Section):
    kind: ClassVar[str] = "kernels"
    id: str
    title: str
    layers: tuple[KernelLayer, ...]
    note: str

    @property
    def toc(self) -> tuple[TocEntry, ...]:
        return tuple(TocEntry(k.id, k.node) for k in self.layers)


@dataclass(frozen=True)
class ChannelRank:
    channel: int
    mean: float
    #: ``|mean|`` relative to the largest ``|mean|`` among the ranked channels (for bar lengths).
    relative: float


@dataclass(frozen=True)
class FeatureMapGrid:
    label: str
    image: Image


@dataclass(frozen=True)
class FeatureMapView:
    id: str
    tensor: str
    node: str
    op_type: str
    shape: str
    minimum: float
    maximum: float
    mean: float
    zero_share: float
    nonfinite: int
    channels_total: int
    silent_channels: int
    ranking: tuple[ChannelRank, ...]
    grids: tuple[FeatureMapGrid, ...]


@dataclass(frozen=True)
class FeatureMapsSection(Section):
    kind: ClassVar[str] = "feature_maps"
    id: str
    title: str
    maps: tuple[FeatureMapView, ...]
    note: str

    @property
    def toc(self) -> tuple[TocEntry, ...]:
        return tuple(TocEntry(m.id, m.tensor) for m in self.maps)


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
    sections.append(_kernels_section(kernels, max_channels))
    if inputs is not None and feeds is not None:
        sections.append(_feature_maps_section(model, feeds, feature_tensors, top_k, labels))
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


def _shape_str(shape: Sequence[Dim] | None) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _overview(
    s: ModelSummary,
    conv_count: int,
    sample_shapes: Mapping[str, tuple[int, ...]] | None,
    feeds: Mapping[str, np.ndarray] | None,
) -> OverviewSection:
    used = ", ".join(f"{name!r} {_shape_str(shape)}" for name, shape in s.input_shapes_used.items())
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
            inputs=" ".join(_shape_str(x) for x in layer.input_shapes),
            outputs=" ".join(_shape_str(x) for x in layer.output_shapes),
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
        feeds=tuple(TensorRow(k, _shape_str(v.shape), str(v.dtype)) for k, v in feeds.items()),
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
            OutputPredictions(output=out, shape=_shape_str(arr.shape), per_input=tuple(per_input), note="; ".join(notes))
        )
    note_parts = [names_note] if names_note else []
    if skipped:
        note_parts.append("outputs without per-input scores are not listed: " + ", ".join(repr(s) for s in skipped))
    return PredictionsSection(
        id="predictions", title="Predictions", outputs=tuple(outputs), note="; ".join(note_parts)
    )


# ------------------------------------------------------------------------------------------
# kernels


def _summary_of(k: ConvKernels) -> WeightSummary:
    st = k.stats
    b = None if k.bias is None or k.bias.size == 0 else k.bias[np.isfinite(k.bias)]
    return WeightSummary(
        count=st.count,
        mean=st.mean,
        std=st.std,
        min=st.min,
        max=st.max,
        near_zero_share=st.near_zero_share,
        dead_filters=st.dead_filters,
        nonfinite=st.nonfinite,
        bias_min=None if b is None or b.size == 0 else float(b.min()),
        bias_max=None if b is None or b.size == 0 else float(b.max()),
    )


def _top_by_norm(norms: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the ``limit`` largest norms (ties by index), returned in index order."""
    order = np.argsort(-norms, kind="stable")[:limit]
    return np.sort(order)


def _upscale_for(k: int, target: int) -> int:
    return max(1, target // max(1, k))


def _signed_tile(w: np.ndarray, scale: float) -> np.ndarray:
    if scale <= 0:
        return np.full(w.shape, 0.5)
    return np.clip(0.5 + 0.5 * w / scale, 0.0, 1.0)


def _indices(idx: Sequence[int], limit: int = 24) -> str:
    items = [str(int(i)) for i in idx]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"
    return ", ".join(items)


class _Drawing(NamedTuple):
    layout: str
    image: Image | None
    caption: str
    filters: tuple[int, ...]
    channels: tuple[int, ...]


def _kernel_layer(k: ConvKernels, number: int, max_channels: int) -> KernelLayer:
    w = np.nan_to_num(k.weight.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    notes: list[str] = []
    if k.op_type == "ConvTranspose":
        if k.group == 1:
            w = np.swapaxes(w, 0, 1)  # (C_in, C_out, ...) -> (C_out, C_in, ...): rows are output filters
            notes.append("ConvTranspose weight transposed to (output, input)")
        else:
            notes.append("grouped ConvTranspose: rows are input channels, columns output channels in the group")
    if w.ndim == 3:
        w = w[:, :, None, :]  # 1-D conv: a one-row kernel
    elif w.ndim == 5:
        notes.append(f"3-D kernel: the middle depth slice {w.shape[2] // 2} of {w.shape[2]} is shown")
        w = w[:, :, w.shape[2] // 2]
    if k.stats.nonfinite:
        notes.append(f"{k.stats.nonfinite} non-finite weight(s) drawn as 0")
    if k.stats.count and k.stats.std == 0 and k.stats.nonfinite == 0:
        notes.append(f"all weights are equal (w = {k.stats.mean:.4g}), so the image is uniform")
    if w.ndim != 4 or 0 in w.shape:
        notes.append(f"a weight of shape {list(k.weight.shape)} cannot be drawn")
        drawing = _Drawing("none", None, "", (), ())
    elif k.depthwise:
        drawing = _draw_depthwise(w, k.group, max_channels)
    elif k.first_layer and w.shape[1] in (1, 3) and k.group == 1:
        drawing = _draw_first_layer(w)
    elif w.shape[2:] == (1, 1):
        drawing = _draw_matrix(w)
    else:
        drawing = _draw_grid(w, k.group, max_channels)
    return KernelLayer(
        id=f"kernel-{number}",
        node=k.node,
        op_type=k.op_type,
        weight_shape=_shape_str(k.weight.shape),
        group=k.group,
        first_layer=k.first_layer,
        layout=drawing.layout,
        image=drawing.image,
        caption="; ".join(p for p in [drawing.caption, *notes] if p),
        filters_shown=drawing.filters,
        filters_total=int(w.shape[0]) if w.ndim else 0,
        channels_shown=drawing.channels,
        channels_total=int(w.shape[1]) if w.ndim > 1 else 0,
        stats=_summary_of(k),
        source=k.source,
        quantization=k.quantization,
    )


def _filter_norms(w: np.ndarray) -> np.ndarray:
    return np.sqrt((w**2).reshape(w.shape[0], -1).sum(axis=1))


def _draw_depthwise(w: np.ndarray, group: int, max_channels: int) -> _Drawing:
    o, _, kh, kw = w.shape
    filters = _top_by_norm(_filter_norms(w), max_channels)
    f = _upscale_for(max(kh, kw), FIRST_LAYER_TILE_PX)
    tiles = [imaging.upscale_nearest(_signed_tile(w[i, 0], float(np.abs(w[i, 0]).max())), f) for i in filters]
    caption = (
        f"depthwise ({group} groups): {_shown(len(filters), o, 'filters')}"
        f"{', chosen by L2 norm, in index order' if len(filters) < o else ''}; one tile per channel, each on "
        "its own scale (mid-grey = 0, white = +max |w|, black = -max |w|)"
    )
    image = imaging.tile_grid(tiles, ncols=len(tiles), pad=2)
    return _Drawing("depthwise", image, caption, tuple(int(i) for i in filters), ())


def _draw_first_layer(w: np.ndarray) -> _Drawing:
    o, c, kh, kw = w.shape
    filters = np.arange(min(o, FIRST_LAYER_MAX_FILTERS))
    f = _upscale_for(max(kh, kw), FIRST_LAYER_TILE_PX)
    tiles = [imaging.upscale_nearest(t, f) for t in imaging.kernel_images(w[filters], per_filter=True)]
    if c == 3:
        what = ("colour filters: the 3 input channels as R, G, B in the model's channel order "
                "(a BGR model shows swapped colours)")
    else:
        what = "grey filters of the 1-channel input"
    caption = (
        f"first layer, {what}; {_shown(len(filters), o, 'filters')}; each filter on its own "
        "scale: mid-grey = 0, bright = positive, dark = negative"
    )
    image = imaging.tile_grid(tiles, pad=2)
    return _Drawing("color" if c == 3 else "grey", image, caption, tuple(int(i) for i in filters), tuple(range(c)))


def _draw_matrix(w: np.ndarray) -> _Drawing:
    o, c = w.shape[:2]
    filters = _top_by_norm(_filter_norms(w), MATRIX_CHANNELS)
    sub = w[filters, :, 0, 0]
    channels = _top_by_norm(np.sqrt((sub**2).sum(axis=0)), MATRIX_CHANNELS)
    m = sub[:, channels]
    peak = float(np.abs(m).max())
    scaled = np.full(m.shape, 0.5) if peak == 0 else 0.5 + 0.5 * m / peak
    cell = min(16, max(4, MATRIX_PX // max(m.shape)))
    image = imaging.upscale_nearest(imaging.get_colormap("bwr")(scaled), cell)
    caption = (
        f"1x1 convolution as its weight matrix: {_rows_cols(len(filters), o, len(channels), c)}; "
        f"blue = negative, white = 0, red = positive, on one scale (max |w| = {peak:.3g})"
    )
    return _Drawing("matrix", image, caption, tuple(int(i) for i in filters), tuple(int(i) for i in channels))


def _draw_grid(w: np.ndarray, group: int, max_channels: int) -> _Drawing:
    o, c, kh, kw = w.shape
    filters = _top_by_norm(_filter_norms(w), max_channels)
    sub = w[filters]
    channels = _top_by_norm(np.sqrt((sub**2).sum(axis=(0, 2, 3))), max_channels)
    f = _upscale_for(max(kh, kw), KERNEL_TILE_PX)
    tiles: list[np.ndarray] = []
    for row in sub[:, channels]:
        peak = float(np.abs(row).max())
        tiles.extend(imaging.upscale_nearest(_signed_tile(t, peak), f) for t in row)
    caption = (
        f"{_rows_cols(len(filters), o, len(channels), c)}"
        f"{f' (input channels within each of the {group} groups)' if group > 1 else ''}; one tile per "
        "filter and input channel, each row on its own scale: mid-grey = 0, white = +max |w|, black = -max |w|"
    )
    image = imaging.tile_grid(tiles, ncols=len(channels), pad=2)
    return _Drawing("grid", image, caption, tuple(int(i) for i in filters), tuple(int(i) for i in channels))


def _rows_cols(n_rows: int, rows: int, n_cols: int, cols: int) -> str:
    """'showing 16 of 256 filters (rows) and 16 of 64 input channels (columns), chosen by L2 norm'."""
    if n_rows >= rows and n_cols >= cols:
        return f"all {rows} filters (rows) x all {cols} input channels (columns)"
    r = f"all {rows}" if n_rows >= rows else f"{n_rows} of {rows}"
    c = f"all {cols}" if n_cols >= cols else f"{n_cols} of {cols}"
    return f"showing {r} filters (rows) and {c} input channels (columns), chosen by L2 norm, in index order"


def _shown(n: int, total: int, what: str) -> str:
    return f"all {total} {what}" if n >= total else f"showing {n} of {total} {what}"


def _kernels_section(kernels: list[ConvKernels], max_channels: int) -> KernelsSection:
    layers = tuple(_kernel_layer(k, i, max_channels) for i, k in enumerate(kernels))
    if layers:
        note = (
            f"{len(layers)} convolution(s) with constant weights, in graph order. Deeper layers show "
            f"at most {max_channels} filters x {max_channels} input channels (1x1 layers: "
            f"{MATRIX_CHANNELS} x {MATRIX_CHANNELS}), the ones with the largest L2 norm. Near zero "
            "means |w| < 1% of the layer's largest |w|; a dead filter has all weights exactly 0."
        )
    else:
        note = "This model has no convolution with constant weights."
    return KernelsSection(id="kernels", title="Kernels", layers=layers, note=note)


# ------------------------------------------------------------------------------------------
# feature maps


@dataclass
class _Merged:
    """A feature-map summary over the whole batch plus the maps of the shown inputs."""

    fm: FeatureMap
    channel_means: np.ndarray
    top: tuple[int, ...]
    maps: np.ndarray  # (shown inputs, len(top), H, W)
    shape: tuple[int, ...]
    minimum: float
    maximum: float
    mean: float
    zero_share: float
    nonfinite: int


def _collect_feature_maps(
    model: Model, feeds: Mapping[str, np.ndarray], tensors: list[str] | None, top_k: int
) -> list[_Merged]:
    return [
        _Merged(
            fm=fm,
            channel_means=fm.channel_means,
            top=fm.top_channels,
            maps=fm.top_maps[:MAX_SHOWN_INPUTS],
            shape=fm.shape,
            minimum=fm.minimum,
            maximum=fm.maximum,
            mean=fm.mean,
            zero_share=fm.zero_share,
            nonfinite=fm.nonfinite,
        )
        for fm in feature_maps(model, feeds, tensors, top_k=top_k)
    ]


def _feature_grid(maps: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """One input's top-channel maps ``(k, H, W)`` in a near-square grid, each channel on its range."""
    h, w = maps.shape[1:]
    f = _upscale_for(max(h, w), FEATURE_TILE_PX)
    tiles = []
    for m, a, b in zip(maps, lo, hi):
        tile = np.zeros(m.shape) if b <= a else np.clip((m - a) / (b - a), 0.0, 1.0)
        tiles.append(imaging.upscale_nearest(tile, f) if f > 1 else tile)
    return imaging.tile_grid(tiles, pad=2)


def _ranking(means: np.ndarray, top: Sequence[int]) -> tuple[ChannelRank, ...]:
    values = [float(means[c]) for c in top]
    finite = [abs(v) for v in values if math.isfinite(v)]
    peak = max(finite, default=0.0)
    return tuple(
        ChannelRank(int(c), v, abs(v) / peak if peak > 0 and math.isfinite(v) else 0.0)
        for c, v in zip(top, values)
    )


def _feature_maps_section(
    model: Model,
    feeds: Mapping[str, np.ndarray],
    tensors: list[str] | None,
    top_k: int,
    labels: list[str],
) -> FeatureMapsSection:
    names = default_feature_tensors(model.graph) if tensors is None else list(tensors)
    collected = _collect_feature_maps(model, feeds, names, top_k) if names else []
    views: list[FeatureMapView] = []
    for i, m in enumerate(collected):
        maps = np.nan_to_num(m.maps.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        # One range per channel over the shown inputs, so inputs compare within a channel.
        lo = maps.min(axis=(0, 2, 3))
        hi = maps.max(axis=(0, 2, 3))
        grids = tuple(
            FeatureMapGrid(label=labels[j], image=_feature_grid(maps[j], lo, hi)) for j in range(maps.shape[0])
        )
        views.append(
            FeatureMapView(
                id=f"fmap-{i}",
                tensor=m.fm.tensor,
                node=m.fm.node,
                op_type=m.fm.op_type,
                shape=_shape_str(m.shape),
                minimum=m.minimum,
                maximum=m.maximum,
                mean=m.mean,
                zero_share=m.zero_share,
                nonfinite=m.nonfinite,
                channels_total=int(m.channel_means.size),
                silent_channels=int(np.count_nonzero(m.channel_means == 0)),
                ranking=_ranking(m.channel_means, m.top),
                grids=grids,
            )
        )
    skipped = len(names) - len(collected)
    note = (
        f"{len(views)} tensor(s). Channels are ranked by their mean activation over the batch and "
        f"space; the top {top_k} are drawn for each of the first {min(len(labels), MAX_SHOWN_INPUTS)} "
        "input(s), each channel scaled to its own range over the shown inputs (black = its minimum, "
        "white = its maximum). A silent channel has a mean of exactly 0 (e.g. never active after a ReLU)."
    )
    if skipped:
        note += f" {skipped} requested tensor(s) are not rank-4 float tensors and are not shown."
    return FeatureMapsSection(id="feature-maps", title="Feature maps", maps=tuple(views), note=note)


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
