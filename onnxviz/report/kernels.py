"""The report's kernels section: the learned filters of every convolution with constant weights.

One panel per convolution, in graph order, with its weight drawn as an image in the layout that
suits it, a caption saying what is shown and how it is scaled, and the weight statistics:

* the first layer's filters in colour (RGB input) or grey (1-channel input), all of them;
* a 1x1 convolution as a heatmap of its output x input weight matrix;
* a depthwise convolution as one row of per-channel filters;
* any other convolution as a grid, one row per output filter and one tile per input channel.

Deeper layers show only the filters and input channels with the largest L2 norm (at most
``max_channels`` of each), in index order. The kernels themselves are read from the graph by
:func:`onnxviz.kernels.conv_kernels`; this module only turns them into view models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple

import numpy as np

from .. import imaging
from ..kernels import ConvKernels, WeightStats
from .sections import Image, Section, TocEntry, shape_str, upscale_for

__all__ = ["KernelLayer", "KernelsSection", "WeightSummary", "filter_norms", "kernels_section", "top_by_norm"]

#: A 1x1 convolution's weight matrix is shown for at most this many outputs and inputs.
MATRIX_CHANNELS = 64
#: First-layer filters shown (all of them in every common CNN: 64 or 96).
FIRST_LAYER_MAX_FILTERS = 256
#: Target edge, in image pixels, of one upscaled kernel tile (first layer / deeper grids).
FIRST_LAYER_TILE_PX = 48
KERNEL_TILE_PX = 24
#: A 1x1 weight-matrix heatmap is drawn about this wide, with cells of 4 to 16 pixels.
MATRIX_PX = 256


# ------------------------------------------------------------------------------------------
# view models


@dataclass(frozen=True)
class WeightSummary(WeightStats):
    """The layer's weight statistics (:class:`onnxviz.kernels.WeightStats`) and its bias range."""

    bias_min: float | None = None
    bias_max: float | None = None


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


# ------------------------------------------------------------------------------------------
# drawing


def _summary_of(k: ConvKernels) -> WeightSummary:
    b = None if k.bias is None or k.bias.size == 0 else k.bias[np.isfinite(k.bias)]
    return WeightSummary(
        **{f.name: getattr(k.stats, f.name) for f in fields(WeightStats)},
        bias_min=None if b is None or b.size == 0 else float(b.min()),
        bias_max=None if b is None or b.size == 0 else float(b.max()),
    )


def top_by_norm(norms: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the ``limit`` largest norms (ties by index), returned in index order."""
    order = np.argsort(-norms, kind="stable")[:limit]
    return np.sort(order)


def _signed_tile(w: np.ndarray, scale: float) -> np.ndarray:
    if scale <= 0:
        return np.full(w.shape, 0.5)
    return np.clip(0.5 + 0.5 * w / scale, 0.0, 1.0)


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
        weight_shape=shape_str(k.weight.shape),
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


def filter_norms(w: np.ndarray) -> np.ndarray:
    return np.sqrt((w**2).reshape(w.shape[0], -1).sum(axis=1))


def _draw_depthwise(w: np.ndarray, group: int, max_channels: int) -> _Drawing:
    o, _, kh, kw = w.shape
    filters = top_by_norm(filter_norms(w), max_channels)
    f = upscale_for(max(kh, kw), FIRST_LAYER_TILE_PX)
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
    f = upscale_for(max(kh, kw), FIRST_LAYER_TILE_PX)
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
    filters = top_by_norm(filter_norms(w), MATRIX_CHANNELS)
    sub = w[filters, :, 0, 0]
    channels = top_by_norm(np.sqrt((sub**2).sum(axis=0)), MATRIX_CHANNELS)
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
    filters = top_by_norm(filter_norms(w), max_channels)
    sub = w[filters]
    channels = top_by_norm(np.sqrt((sub**2).sum(axis=(0, 2, 3))), max_channels)
    f = upscale_for(max(kh, kw), KERNEL_TILE_PX)
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


def kernels_section(
    kernels: Sequence[ConvKernels], *, max_channels: int = 16
) -> KernelsSection:
    """The section for ``kernels`` (from :func:`onnxviz.kernels.conv_kernels`, in graph order).

    Deeper layers show at most ``max_channels`` (at least 1) filters and input channels, the ones
    with the largest L2 norm; 1x1 layers up to :data:`MATRIX_CHANNELS` of each.
    """
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
