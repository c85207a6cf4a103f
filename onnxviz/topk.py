"""Top-k activations per channel over a set of images, with their receptive-field crops and their
deconvnet and guided-backprop projections (Zeiler & Fergus 2014, fig. 2).

Two passes, both memory-bounded by ``batch_size`` images:

1. *Scan*: the images go through onnxruntime ``batch_size`` at a time with a tap on ``layer``;
   for each channel the activation of an image is its maximum over space (first position on
   ties), and a running top-k per channel keeps the ``k`` best images (ties: the earlier image).
   One image counts once per channel, as in the paper's figures.
2. *Project*: every winner of every channel is one row; the rows go through the numpy engine
   ``batch_size`` at a time, one call per chunk and rule, with the seed one-hot at the winning
   unit (every other activation of the layer zeroed) and the ReLU rule replaced by the
   deconvnet rule ``relu(g)`` or the guided rule ``relu(g) * (X > 0)`` (max-pool gradients use
   the forward's switches: the paper's unpooling). Only the winners' images are loaded again.

Crops are the unit's receptive field (:mod:`onnxviz.receptive`) clipped to the image, of the
input as the model saw it (mapped back to [0, 1] by the preprocessing). Projections are the raw
input gradients in the same box; :meth:`TopKEntry.deconv_image` and
:meth:`TopKEntry.guided_image` scale them symmetrically around 0 per patch (0 is mid-grey), as
the paper's figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError, TargetError
from .inputs import Preprocess, array_to_image, image_to_array, load_image
from .model import Model
from .receptive import ReceptiveField, ReceptiveFields, field_box, receptive_fields

__all__ = [
    "PROJECTIONS",
    "TopK",
    "TopKEntry",
    "project_units",
    "scale_symmetric",
    "top_activations",
    "top_activations_arrays",
    "topk_gallery",
]

#: The projection rules: name -> the ReLU VJP that replaces the true one.
PROJECTIONS = ("deconv", "guided")
Unit = tuple[int, int, int]  # (channel, y, x) in the layer


def _relu_rules() -> dict[str, Any]:
    from .methods.gradient import deconv_relu_vjp, guided_relu_vjp

    return {"deconv": deconv_relu_vjp, "guided": guided_relu_vjp}


def scale_symmetric(p: np.ndarray) -> np.ndarray:
    """``p / (2 max|p|) + 0.5``: zero is mid-grey, the sign is kept; an all-zero patch is grey."""
    p = np.asarray(p, dtype=np.float64)
    m = float(np.max(np.abs(p))) if p.size else 0.0
    if m == 0.0 or not np.isfinite(m):
        return np.full(p.shape, 0.5, dtype=np.float32)
    return (p / (2.0 * m) + 0.5).astype(np.float32)


@dataclass(frozen=True)
class TopKEntry:
    """One winner: image ``image`` (``source``) is the ``rank``-th best for ``channel``.

    ``position`` is the unit ``(y, x)`` in the layer (``(0, 0)`` for non-spatial layers), ``box``
    its field ``(y0, y1, x0, x1)`` in the input (half-open, clipped). ``crop`` is the input in
    that box as an ``H x W x C`` image in [0, 1]; ``deconv`` and ``guided`` are the raw signed
    input gradients in the box (``H x W x C``, model input channels).
    """

    channel: int
    rank: int
    image: int
    source: str
    activation: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    crop: np.ndarray
    deconv: np.ndarray
    guided: np.ndarray

    def deconv_image(self) -> np.ndarray:
        return scale_symmetric(self.deconv)

    def guided_image(self) -> np.ndarray:
        return scale_symmetric(self.guided)

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "rank": self.rank,
            "image": self.image,
            "source": self.source,
            "activation": self.activation,
            "position": list(self.position),
            "box": list(self.box),
        }


@dataclass(frozen=True)
class TopK:
    """The top-k winners of each channel of ``layer`` (``rows[i]`` belongs to ``channels[i]``,
    best first; fewer than ``k`` when there are fewer images)."""

    layer: str
    channels: tuple[int, ...]
    k: int
    receptive_field: ReceptiveField
    input_size: tuple[int, int]
    sources: tuple[str, ...]
    rows: tuple[tuple[TopKEntry, ...], ...]
    variant: str

    def to_json(self) -> dict[str, Any]:
        rf = self.receptive_field
        return {
            "layer": self.layer,
            "k": self.k,
            "images": len(self.sources),
            "input_size": list(self.input_size),
            "receptive_field": {
                "size": list(rf.size),
                "stride": list(rf.stride),
                "offset": list(rf.offset),
                "exact": rf.exact,
                "note": rf.note,
            },
            "variant": self.variant,
            "channels": [
                {"channel": c, "top": [e.to_json() for e in row]} for c, row in zip(self.channels, self.rows)
            ],
        }


VARIANT = (
    "activation = max over space; deconvnet: ReLU backward relu(g); guided: relu(g) * (X > 0); "
    "max-pool switches from the forward; seed one-hot at the winning unit"
)


# --------------------------------------------------------------------------------------------
# Public entry points


def top_activations(
    model: Model,
    images: Sequence[str | os.PathLike[str]],
    layer: str,
    channels: Sequence[int] | None = None,
    k: int = 9,
    *,
    preset: str = "imagenet",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: tuple[int, int] | None = None,
    layout: str | None = None,
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
) -> TopK:
    """Top-``k`` images per channel of ``layer`` over image files (see the module docstring).

    Images are read and preprocessed per batch (:class:`~onnxviz.inputs.Preprocess` from the
    model input and ``preset``/``mean``/``std``/``size``/``layout``); images of another size
    are resized to the model's. ``channels=None`` means every channel.
    """
    paths = [os.fspath(p) for p in images]
    if not paths:
        raise InputError("no images given", hint="give a folder with PNG or JPEG files")
    info = image_input_of(model)
    pre = Preprocess.from_model(info, preset=preset, mean=mean, std=std, size=size, layout=layout)  # type: ignore[arg-type]
    if pre.size is None:
        first = load_image(paths[0])
        pre = Preprocess.from_model(
            info, preset=preset, mean=mean, std=std, size=first.shape[:2], layout=layout  # type: ignore[arg-type]
        )

    def load(idx: Sequence[int]) -> np.ndarray:
        return np.stack([image_to_array(load_image(paths[i]), pre) for i in idx])

    return _run(model, load, len(paths), paths, layer, channels, k, lambda x: array_to_image(x, pre),
                pre.layout, batch_size, progress)


def top_activations_arrays(
    model: Model,
    x: np.ndarray,
    layer: str,
    channels: Sequence[int] | None = None,
    k: int = 9,
    *,
    preprocess: Preprocess | None = None,
    batch_size: int = 16,
    sources: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TopK:
    """:func:`top_activations` on a batch of model inputs ``x`` (N x model layout).

    Crops are mapped back to [0, 1] with ``preprocess`` (its layout is the input's); without it
    each image is min-max scaled for display and the layout is the model's detected one.
    """
    x = np.asarray(x)
    info = image_input_of(model)
    if x.ndim != 4:
        raise InputError(f"expected a batch of images (rank 4), got shape {x.shape}")
    if preprocess is not None:
        layout = preprocess.layout

        def show(a: np.ndarray) -> np.ndarray:
            return array_to_image(a, preprocess)

    else:
        from .inputs import detect_layout

        layout = detect_layout(info) or "NCHW"

        def show(a: np.ndarray) -> np.ndarray:
            hwc = np.asarray(a, np.float64).transpose(1, 2, 0) if layout == "NCHW" else np.asarray(a, np.float64)
            lo, hi = float(hwc.min()), float(hwc.max())
            return ((hwc - lo) / (hi - lo) if hi > lo else np.full(hwc.shape, 0.5)).astype(np.float32)

    names = list(sources) if sources is not None else [f"array[{i}]" for i in range(len(x))]
    if len(names) != len(x):
        raise InputError(f"{len(names)} source names for {len(x)} arrays")
    return _run(model, lambda idx: x[np.asarray(idx, dtype=np.intp)], len(x), names, layer, channels, k,
                show, layout, batch_size, progress)


def project_units(
    model: Model,
    x: np.ndarray,
    layer: str,
    units: Sequence[Unit],
    rule: str = "deconv",
    *,
    spatial_axes: tuple[int, int] | None = (2, 3),
) -> np.ndarray:
    """Input gradients of single units, one row per unit: row ``r`` is the gradient of
    ``layer[r, c, y, x]`` (``units[r] = (c, y, x)``) w.r.t. ``x[r]``, with the ReLU rule of
    ``rule`` (``"deconv"``, ``"guided"``, or ``"gradient"`` for the true one). One engine call.

    ``spatial_axes`` are the layer's (h, w) axes (``None`` for a non-spatial ``(N, C)`` layer);
    the channel axis is the other non-batch axis.
    """
    if rule not in PROJECTIONS + ("gradient",):
        raise InputError(f"unknown projection rule {rule!r}", hint=f"use one of {list(PROJECTIONS)} or 'gradient'")
    x = np.asarray(x)
    if len(units) != len(x):
        raise InputError(f"{len(units)} units for {len(x)} input rows: give one unit per row")
    rules = None if rule == "gradient" else {"Relu": _relu_rules()[rule]}
    unit_arr = np.asarray(units, dtype=np.intp).reshape(len(units), 3)

    def seed(value: np.ndarray) -> np.ndarray:
        s = np.zeros_like(value)
        rows = np.arange(value.shape[0])
        idx: list[Any] = [rows]
        if spatial_axes is None:
            idx.append(unit_arr[:, 0])
        else:
            ch = channel_axis_of(value.ndim, spatial_axes)
            idx = [rows] + [None] * (value.ndim - 1)
            idx[ch] = unit_arr[:, 0]
            idx[spatial_axes[0]] = unit_arr[:, 1]
            idx[spatial_axes[1]] = unit_arr[:, 2]
        s[tuple(idx)] = 1
        return s

    name = model.inputs[0].name
    return np.asarray(model.value_and_grad(x, {layer: seed}, (name,), rules=rules, independent_rows=True).grads[name])


# --------------------------------------------------------------------------------------------
# The two passes


def image_input_of(model: Model) -> Any:
    if len(model.inputs) != 1:
        raise InputError(
            f"top activations need a single-input model; this one takes {[t.name for t in model.inputs]}",
            hint="export the model with the image as its only input",
        )
    return model.inputs[0]


def channel_axis_of(rank: int, spatial: tuple[int, int]) -> int:
    rest = [a for a in range(1, rank) if a not in spatial]
    if len(rest) != 1:
        raise TargetError(f"cannot tell the channel axis of a rank-{rank} tensor with spatial axes {spatial}")
    return rest[0]


def layer_field(model: Model, layer: str, hw: tuple[int, int]) -> tuple[ReceptiveField, tuple[int, int] | None]:
    if layer not in model.graph.dynamic:
        raise TargetError(
            f"model has no intermediate tensor {layer!r}",
            hint="list the tensors with `onnxviz inspect MODEL`; give a conv or ReLU output name",
        )
    fields: ReceptiveFields = receptive_fields(model, input_size=hw)
    rf = fields[layer]  # raises with the reason when the layer has no fixed field
    return rf, fields.spatial_axes.get(layer)


def _to_ncs(act: np.ndarray, axes: tuple[int, int] | None, layer: str) -> np.ndarray:
    """Activations as (N, C, H, W) whatever the layer's layout."""
    if axes is None:
        if act.ndim != 2:
            raise TargetError(
                f"layer {layer!r} has shape {list(act.shape)} and no spatial axes; top activations "
                "need an (N, C, H, W) / (N, H, W, C) feature map or an (N, C) vector",
                hint="pick a conv, ReLU or pooling output",
            )
        return act[:, :, None, None]
    if act.ndim != 4:
        raise TargetError(f"layer {layer!r} has rank {act.ndim}; expected a rank-4 feature map")
    ch = channel_axis_of(4, axes)
    return np.transpose(act, (0, ch, axes[0], axes[1]))


def _run(
    model: Model,
    load: Callable[[Sequence[int]], np.ndarray],
    n: int,
    sources: Sequence[str],
    layer: str,
    channels: Sequence[int] | None,
    k: int,
    show: Callable[[np.ndarray], np.ndarray],
    layout: str,
    batch_size: int,
    progress: Callable[[str], None] | None,
) -> TopK:
    if int(k) < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    k, batch_size = int(k), int(batch_size)
    say = progress or (lambda message: None)
    first = load([0])
    hw = (first.shape[2], first.shape[3]) if layout == "NCHW" else (first.shape[1], first.shape[2])
    rf, axes = layer_field(model, layer, (int(hw[0]), int(hw[1])))

    # ---- pass 1: scan
    best_v: np.ndarray | None = None  # (C, m) values, best first
    best_i = best_y = best_x = np.zeros((0, 0), dtype=np.intp)
    chans: np.ndarray | None = None
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        xb = first if start == 0 and len(idx) == 1 else load(idx)
        act = _to_ncs(np.asarray(model.run(xb, [layer])[layer]), axes, layer)
        if chans is None:
            chans = _check_channels(channels, act.shape[1], layer)
        a = act[:, chans].reshape(len(idx), len(chans), -1).astype(np.float64)
        flat = np.argmax(a, axis=2)  # first maximum on ties
        val = np.take_along_axis(a, flat[..., None], axis=2)[..., 0].T  # (C, b)
        ys, xs = np.divmod(flat.T, act.shape[3])
        img = np.broadcast_to(np.asarray(idx, dtype=np.intp), val.shape)
        if best_v is None:
            cand = (val, img, ys, xs)
        else:
            cand = tuple(np.concatenate(p, axis=1) for p in ((best_v, val), (best_i, img), (best_y, ys), (best_x, xs)))
        order = np.lexsort((cand[1], -cand[0]), axis=1)[:, :k]  # by value desc, then image index
        best_v, best_i, best_y, best_x = (np.take_along_axis(c, order, axis=1) for c in cand)
        say(f"scanned {idx[-1] + 1}/{n} images")
    assert best_v is not None and chans is not None  # n >= 1

    # ---- pass 2: projections, rows = winners, sorted by image so chunks reuse loaded images
    winners = [
        (int(best_i[c, r]), c, r) for c in range(len(chans)) for r in range(best_v.shape[1])
    ]
    winners.sort()
    proj = {name: {} for name in PROJECTIONS}  # type: dict[str, dict[tuple[int, int], np.ndarray]]
    crops: dict[tuple[int, int], np.ndarray] = {}
    boxes: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for start in range(0, len(winners), batch_size):
        chunk = winners[start : start + batch_size]
        images = sorted({w[0] for w in chunk})
        loaded = load(images)
        pos = {im: j for j, im in enumerate(images)}
        xb = loaded[[pos[w[0]] for w in chunk]]
        units = [(int(chans[c]), int(best_y[c, r]), int(best_x[c, r])) for _, c, r in chunk]
        for name in PROJECTIONS:
            g = project_units(model, xb, layer, units, name, spatial_axes=axes)
            for row, (im, c, r) in enumerate(chunk):
                box = field_box(rf, units[row][1], units[row][2], hw)
                boxes[c, r] = box
                proj[name][c, r] = _crop(_hwc(g[row], layout), box)
        for row, (im, c, r) in enumerate(chunk):
            crops[c, r] = _crop(show(xb[row]), boxes[c, r])
        say(f"projected {min(start + batch_size, len(winners))}/{len(winners)} units")

    rows = []
    for c in range(len(chans)):
        entries = []
        for r in range(best_v.shape[1]):
            im = int(best_i[c, r])
            entries.append(
                TopKEntry(
                    channel=int(chans[c]),
                    rank=r,
                    image=im,
                    source=str(sources[im]),
                    activation=float(best_v[c, r]),
                    position=(int(best_y[c, r]), int(best_x[c, r])),
                    box=boxes[c, r],
                    crop=crops[c, r],
                    deconv=proj["deconv"][c, r],
                    guided=proj["guided"][c, r],
                )
            )
        rows.append(tuple(entries))
    return TopK(
        layer=layer,
        channels=tuple(int(c) for c in chans),
        k=k,
        receptive_field=rf,
        input_size=(int(hw[0]), int(hw[1])),
        sources=tuple(str(s) for s in sources),
        rows=tuple(rows),
        variant=VARIANT,
    )


def _check_channels(channels: Sequence[int] | None, count: int, layer: str) -> np.ndarray:
    if channels is None:
        return np.arange(count)
    chans = [int(c) for c in channels]
    if not chans:
        raise TargetError("no channels selected", hint="give channels like 0-15, 3,5,9 or all")
    bad = [c for c in chans if not 0 <= c < count]
    if bad:
        raise TargetError(
            f"layer {layer!r} has {count} channels (0..{count - 1}); {bad} out of range",
            hint=f"choose channels between 0 and {count - 1}",
        )
    if len(set(chans)) != len(chans):
        raise TargetError(f"channels {chans} repeat a channel")
    return np.asarray(chans, dtype=np.intp)


def _hwc(a: np.ndarray, layout: str) -> np.ndarray:
    return np.transpose(a, (1, 2, 0)) if layout == "NCHW" else a


def _crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    return np.ascontiguousarray(img[y0:y1, x0:x1], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Gallery


def topk_gallery(topk: TopK, *, max_cell: int = 96, gap: int = 1, group_gap: int = 4) -> np.ndarray:
    """One image: a row per channel with its k crops, then their deconvnet projections, then
    their guided projections; ``gap`` white pixels between cells and rows, ``group_gap`` between
    the three groups. A cell is the field size (at most the image, at most ``max_cell`` pixels;
    larger fields are shrunk with an antialiasing filter); a crop clipped by the image border
    sits against the side the field continues past."""
    rf = topk.receptive_field
    H, W = topk.input_size
    fh = H if rf.is_full else min(rf.size[0], H)
    fw = W if rf.is_full else min(rf.size[1], W)
    scale = min(1.0, max_cell / max(fh, fw))
    ch, cw = max(1, round(fh * scale)), max(1, round(fw * scale))
    k = topk.k
    width = 3 * (k * cw + (k - 1) * gap) + 2 * group_gap
    height = len(topk.rows) * ch + max(len(topk.rows) - 1, 0) * gap
    out = np.ones((max(height, 1), width, 3), dtype=np.float32)
    for i, row in enumerate(topk.rows):
        y = i * (ch + gap)
        for j, e in enumerate(row):
            start = _field_start(rf, e.position)
            for g, img in enumerate((e.crop, e.deconv_image(), e.guided_image())):
                x = g * (k * cw + (k - 1) * gap + group_gap) + j * (cw + gap)
                cell = _place(img, e.box, start, (fh, fw), (ch, cw), scale)
                out[y : y + ch, x : x + cw] = cell
    return out


def _field_start(rf: ReceptiveField, pos: tuple[int, int]) -> tuple[int, int]:
    if rf.is_full:
        return 0, 0
    return rf.offset[0] + pos[0] * rf.stride[0], rf.offset[1] + pos[1] * rf.stride[1]


def _place(
    img: np.ndarray,
    box: tuple[int, int, int, int],
    start: tuple[int, int],
    field: tuple[int, int],
    cell: tuple[int, int],
    scale: float,
) -> np.ndarray:
    """The crop in a field-sized grey canvas (clipped parts stay grey), resized to the cell."""
    canvas = np.full((field[0], field[1], img.shape[2] if img.ndim == 3 else 1), 0.5, dtype=np.float32)
    h, w = img.shape[:2]
    # the crop starts where the field starts unless the image border clipped it there
    dy = min(max(box[0] - start[0], 0), field[0] - h)
    dx = min(max(box[2] - start[1], 0), field[1] - w)
    canvas[dy : dy + h, dx : dx + w] = img.reshape(h, w, -1)
    if scale < 1.0:
        canvas = _shrink(canvas, cell)
    if canvas.shape[2] == 1:
        canvas = np.repeat(canvas, 3, axis=2)
    return canvas[..., :3]


def _shrink(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c])).resize((size[1], size[0]), Image.Resampling.BOX))
        for c in range(a.shape[2])
    ]
    return np.clip(np.stack(planes, axis=2), 0.0, 1.0).astype(np.float32)

