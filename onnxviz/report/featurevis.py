"""The report's feature-visualization section: what single channels of a few layers respond to.

For each chosen layer (default: three conv/activation outputs spread across the depth), a
gallery of channel visualizations (Lucid's ``render_vis``: :func:`onnxviz.maximize.visualize`
with the channel objective), each tile next to

* the channel's filter, when the layer is a convolution's output or an activation/norm chain
  on it (the ``C_in x kh x kw`` weight of that output channel, from :func:`conv_kernels`);
* its top-activating patch among the report's inputs: the position of the largest activation
  of that channel over the batch and space, cropped to the unit's receptive field
  (:mod:`onnxviz.receptive`, imported lazily) or, when no field is known, a fixed-size crop
  around the position (said so in the section);

and, with inputs, class-model visualizations (Simonyan et al. 2013) of the inputs' top classes.
Every tile records the activation reached and its ratio to the best activation among the
inputs. Runs are seeded (``FeatureVisOptions.seed``), so the section is deterministic.

Also home of the checks the ``visualize`` and ``dream`` commands share with the section: an
image input (:func:`check_image_model`), an existing layer (:func:`check_layer`) and the
default layers (:func:`default_layers`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import imaging
from ..errors import InputError, OnnxvizError, TargetError
from ..graph import Graph
from ..kernels import ConvKernels, conv_kernels
from ..maximize import channel, class_logit, l2, visualize
from .kernels import filter_norms, top_by_norm
from .sections import Image, Section, TocEntry, shape_str, upscale_for

if TYPE_CHECKING:
    from ..inputs import Preprocess
    from ..model import Model

__all__ = [
    "FeatureVisLayer",
    "FeatureVisOptions",
    "FeatureVisSection",
    "FeatureVisTile",
    "check_image_model",
    "check_layer",
    "default_layers",
    "estimated_gmacs",
    "featurevis_section",
]

#: Tiles are drawn (nearest-neighbour upscaled) to at least this edge.
TILE_PX = 96
#: Kernel tiles are upscaled to about this edge.
KERNEL_PX = 48
#: A filter with more input channels shows only this many (largest L2 norm).
KERNEL_MAX_INPUTS = 16
#: Fallback crop (no receptive field): this fraction of the input's longer side.
FALLBACK_CROP_FRACTION = 0.25
_ACTIVATIONS = frozenset(
    {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip",
     "Gelu", "Mish", "Softplus", "BatchNormalization", "InstanceNormalization", "Identity", "Dropout"}
)
_CONVS = frozenset({"Conv", "QLinearConv", "ConvInteger"})


# ------------------------------------------------------------------------------------------
# shared checks


def check_image_model(model: Model, what: str = "feature visualization") -> Any:
    """The model's single image input (rank 4, 1 or 3 channels), or a clear InputError."""
    from ..inputs import detect_layout

    if len(model.inputs) != 1:
        raise InputError(
            f"{what} needs a single image input; the model has {len(model.inputs)} inputs "
            f"{[t.name for t in model.inputs]}",
            hint="export the image branch as its own model",
        )
    info = model.inputs[0]
    layout = detect_layout(info)
    if layout is None or info.dtype.kind != "f":
        raise InputError(
            f"{what} needs an image input, but input {info.name!r} has shape {info.shape_str()} "
            f"and dtype {info.dtype}",
            hint="it works on CNNs with one float NCHW or NHWC image input (rank 4, 1 or 3 channels)",
        )
    shape = info.shape or ()
    c = shape[1] if layout == "NCHW" else shape[3]
    if isinstance(c, int) and c not in (1, 3):
        raise InputError(
            f"{what} needs a grey or RGB image input, but input {info.name!r} has {c} channels",
            hint="use a model with a 1- or 3-channel image input",
        )
    return info


def check_layer(model: Model, name: str) -> str:
    """``name`` if it is a tensor computed from the input; else a TargetError with candidates."""
    graph = model.graph
    if name in graph.dynamic and name not in graph.input_names:
        return name
    names = [t for t in graph.tensor_names() if t not in graph.input_names]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    candidates = list(dict.fromkeys(close + default_layers(graph, 5)))[:6]
    what = "a model input, not a layer" if name in graph.input_names else "not a tensor computed from the input"
    raise TargetError(
        f"layer {name!r} is {what}",
        hint="candidates: " + ", ".join(repr(c) for c in candidates) + " (`onnxviz inspect MODEL` lists them all)",
    )


def conv_outputs(graph: Graph) -> list[str]:
    """Each convolution's output, taken after a single-consumer chain of norms/activations."""
    out: list[str] = []
    for n in graph.nodes:
        if n.op_type not in _CONVS or not n.outputs or n.outputs[0] not in graph.dynamic:
            continue
        name = n.outputs[0]
        while True:
            users = graph.consumers.get(name, ())
            if len(users) == 1 and users[0].op_type in _ACTIVATIONS and users[0].inputs[0] == name:
                name = users[0].outputs[0]
            else:
                break
        if name not in out:
            out.append(name)
    return out


def default_layers(graph: Graph, count: int = 3) -> list[str]:
    """``count`` conv/activation outputs spread across the depth (at the 1/6, 1/2, 5/6 points
    for three), skipping the very first and last when there are enough layers."""
    names = conv_outputs(graph)
    if not names:
        return []
    idx = [min(len(names) - 1, int((k + 0.5) / count * len(names))) for k in range(count)]
    return [names[i] for i in dict.fromkeys(idx)]


def _conv_of(graph: Graph, layer: str, kernels: Sequence[ConvKernels]) -> ConvKernels | None:
    """The convolution whose output ``layer`` is (directly or through activations/norms)."""
    by_output = {k.output_tensor: k for k in kernels}
    name = layer
    for _ in range(8):
        if name in by_output:
            return by_output[name]
        node = graph.producer.get(name)
        if node is None or node.op_type not in _ACTIVATIONS:
            return None
        name = node.inputs[0]
    return None


# ------------------------------------------------------------------------------------------
# view models


@dataclass(frozen=True)
class FeatureVisOptions:
    """Settings of the section; the defaults keep a report quick (seconds on small CNNs; see
    ``max_gmacs`` for large ones).

    ``layers``: tensor names, or ``None`` for :func:`default_layers`. ``size``: used for models
    with dynamic spatial dims (a fixed-size model is optimized at its own size).
    """

    layers: tuple[str, ...] | None = None
    #: Skip the optimizations (the section says so and how to force them) when their estimated
    #: compute exceeds this many GMACs; ``None``: no limit. The estimate comes from the graph's
    #: shapes (deterministic): MACs up to each layer x images x steps x 3 (forward + backward).
    max_gmacs: float | None = None
    channels: int = 8
    steps: int = 128
    size: int = 64
    param: str = "fft"
    lr: float = 0.05
    seed: int = 0
    classes: int = 3
    class_l2: float = 1.0


@dataclass(frozen=True)
class FeatureVisTile:
    label: str
    unit: int
    image: Image
    kernel: Image | None
    patch: Image | None
    patch_caption: str
    activation: float
    best_input: float | None
    ratio: float | None


@dataclass(frozen=True)
class FeatureVisLayer:
    id: str
    tensor: str
    op_type: str
    shape: str
    objective: str
    channels_total: int
    tiles: tuple[FeatureVisTile, ...]
    kernel_note: str
    patch_note: str
    error: str


@dataclass(frozen=True)
class FeatureVisSection(Section):
    kind: ClassVar[str] = "featurevis"
    id: str
    title: str
    settings: tuple[tuple[str, str], ...]
    layers: tuple[FeatureVisLayer, ...]
    class_models: FeatureVisLayer | None
    note: str

    @property
    def toc(self) -> tuple[TocEntry, ...]:
        entries = [TocEntry(p.id, p.tensor) for p in self.layers]
        if self.class_models is not None:
            entries.append(TocEntry(self.class_models.id, "class models"))
        return tuple(entries)


# ------------------------------------------------------------------------------------------
# drawing


def _display(img: np.ndarray) -> np.ndarray:
    """``H x W x C`` (C = 1 or 3) in [0, 1], upscaled (nearest) to at least TILE_PX."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    f = max(1, math.ceil(TILE_PX / max(a.shape[:2])))
    return imaging.upscale_nearest(a, f) if f > 1 else a


def _kernel_tile(k: ConvKernels, c: int) -> tuple[Image | None, str]:
    w = np.nan_to_num(np.asarray(k.weight[c], dtype=np.float64))  # (C_in/group, kh, kw)
    if w.ndim != 3 or 0 in w.shape:
        return None, ""
    note = ""
    if w.shape[0] > KERNEL_MAX_INPUTS:
        w = w[top_by_norm(filter_norms(w), KERNEL_MAX_INPUTS)]
        note = f"the {KERNEL_MAX_INPUTS} input channels with the largest L2 norm"
    img = imaging.kernel_image(w)
    return imaging.upscale_nearest(img, upscale_for(max(img.shape[:2]), KERNEL_PX)), note


# ------------------------------------------------------------------------------------------
# inputs: activations, top patches


@dataclass(frozen=True)
class _InputsView:
    feeds: Mapping[str, np.ndarray]
    images: list[np.ndarray]  # display images (H, W, 3) in [0, 1]
    labels: Sequence[str]


def _field_boxes(model: Model, layer: str, input_hw: tuple[int, int]) -> tuple[Any, str]:
    """``(receptive field or None, note)``; the module is optional (imported lazily)."""
    try:
        from ..receptive import receptive_fields
    except ImportError:
        return None, "receptive fields are unavailable in this installation"
    try:
        return receptive_fields(model, input_size=input_hw)[layer], ""
    except OnnxvizError as e:
        return None, f"no receptive field for this layer ({e.message})"


def _top_patches(
    model: Model, layer: str, act: np.ndarray, channels: Sequence[int], view: _InputsView
) -> tuple[list[tuple[Image | None, str]], str]:
    """Per channel the crop of the input with the largest activation, and a section note."""
    h_in, w_in = view.images[0].shape[:2]
    rf, why = _field_boxes(model, layer, (h_in, w_in))
    out: list[tuple[Image | None, str]] = []
    hl, wl = act.shape[2], act.shape[3]
    for c in channels:
        a = np.nan_to_num(act[:, c], nan=-np.inf)
        n, y, x = np.unravel_index(int(np.argmax(a)), a.shape)
        peak = float(act[n, c, y, x])
        if rf is not None:
            from ..receptive import field_box

            y0, y1, x0, x1 = field_box(rf, int(y), int(x), (h_in, w_in))
            how = "full image" if rf.is_full else f"receptive field {rf.size[0]}x{rf.size[1]}"
        else:
            side = max(4, round(FALLBACK_CROP_FRACTION * max(h_in, w_in)))
            cy, cx = (y + 0.5) * h_in / hl, (x + 0.5) * w_in / wl
            y0 = int(np.clip(round(cy - side / 2), 0, max(0, h_in - side)))
            x0 = int(np.clip(round(cx - side / 2), 0, max(0, w_in - side)))
            y1, x1 = min(h_in, y0 + side), min(w_in, x0 + side)
            how = f"fixed {side}px crop"
        crop = view.images[n][y0:y1, x0:x1]
        caption = f"{view.labels[n]} at ({int(y)}, {int(x)}): {peak:.3g}; {how}"
        out.append((_display(crop) if crop.size else None, caption))
    if rf is not None:
        note = "Patches are the receptive field of the most active unit (onnxviz.receptive)."
    else:
        note = (
            f"Patches are a fixed crop of {int(FALLBACK_CROP_FRACTION * 100)}% of the input's longer side around "
            f"the most active unit (scaled to input coordinates), not its receptive field: {why}."
        )
    return out, note


# ------------------------------------------------------------------------------------------
# building


def _size_for(info: Any, opts: FeatureVisOptions, pre: Preprocess) -> tuple[tuple[int, int] | None, str]:
    """``(size to ask visualize for, description)``: a fixed-size model is optimized at its size."""
    shape = info.shape or ()
    dims = shape[2:4] if pre.layout == "NCHW" else shape[1:3]
    if len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims):
        return None, f"{dims[0]}x{dims[1]} (the model's input size)"
    return (opts.size, opts.size), f"{opts.size}x{opts.size} (the model's spatial dims are dynamic)"


def _logits_tensor(model: Model) -> tuple[str, str]:
    """The first output, or the input of the Softmax producing it (Simonyan: unnormalised scores)."""
    out = model.outputs[0].name
    node = model.graph.producer.get(out)
    if node is not None and node.op_type == "Softmax":
        return node.inputs[0], f"pre-softmax scores (input of Softmax node {node.label!r})"
    return out, f"output {out!r}"


def featurevis_section(
    model: Model,
    options: FeatureVisOptions | None = None,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    preprocess: Preprocess | None = None,
    labels: Sequence[str] = (),
) -> FeatureVisSection:
    """Build the section (see the module docstring). ``feeds``/``preprocess``/``labels``: the
    report's inputs (optional): they give the channel choice, the top patches, the ratios and
    the classes of the class models."""
    from ..inputs import Preprocess as _Pre
    from .panels import display_images

    opts = options or FeatureVisOptions()
    title = "Feature visualization"
    try:
        info = check_image_model(model)
    except InputError as e:
        return FeatureVisSection("featurevis", title, (), (), None, f"Not available for this model: {e.message}.")
    pre = preprocess if preprocess is not None else _Pre.from_model(info)
    size, size_note = _size_for(info, opts, pre)
    layers = list(opts.layers) if opts.layers is not None else default_layers(model.graph)
    for name in layers:
        check_layer(model, name)
    view: _InputsView | None = None
    if feeds is not None:
        x = feeds[info.name]
        axis = 1 if pre.layout == "NCHW" else 3
        # Inputs given as arrays (no preprocessing record) are shown min-max scaled.
        shown = display_images(x, preprocess, axis)
        view = _InputsView(feeds, shown, list(labels) or [f"input {i}" for i in range(len(x))])
    n_classes = opts.classes if view is not None else 0
    gmacs = estimated_gmacs(model, layers, pre, size or pre.size or (opts.size, opts.size), opts, n_classes)
    if opts.max_gmacs is not None and gmacs > opts.max_gmacs:
        note = (
            f"Skipped: the optimizations would take about {gmacs:,.0f} GMACs ({len(layers)} layer(s) x "
            f"{opts.channels} channels{f' and {n_classes} class models' if n_classes else ''} x {opts.steps} steps, "
            f"forward + backward), more than the automatic limit of {opts.max_gmacs:,.0f} GMACs "
            f"(about {gmacs / 50 / 60:,.1f} to {gmacs / 5 / 60:,.0f} min: the numpy engine does 5-50 GMAC/s on two "
            "cores, depthwise convolutions at the low end). Force them with --featurevis on, or reduce "
            "--featurevis-steps / --featurevis-channels / --featurevis-layers; `onnxviz visualize` renders one layer."
        )
        return FeatureVisSection("featurevis", title, (), (), None, note)
    acts: dict[str, np.ndarray] = {}
    notes: list[str] = []
    if view is not None and layers:
        try:
            acts = model.run(view.feeds, taps=layers)
        except OnnxvizError as e:
            notes.append(f"The inputs could not be run ({e.message}): no patches or ratios.")
            view = None
    kernels = conv_kernels(model)
    transforms = "Lucid's standard transforms (pad 12, jitter 8, scale 0.9-1.1, rotate ±10°, jitter 4)"
    settings = (
        ("objective", "channel: mean over space of one channel (Lucid)"),
        ("parametrization", f"{opts.param} (decorrelated colour, sigmoid)" if opts.param == "fft" else opts.param),
        ("transforms", transforms),
        ("optimizer", f"Adam, lr {opts.lr:g}, {opts.steps} steps, redirected ReLU for the first 16"),
        ("image size", size_note),
        ("seed", str(opts.seed)),
        ("channels per layer", str(opts.channels)),
        ("model input", f"{pre.layout}, {pre.channels} channel(s), {pre.formula()}"),
    )
    panels: list[FeatureVisLayer] = []
    for i, layer in enumerate(layers):
        panels.append(_layer_panel(model, i, layer, opts, pre, size, kernels, view, acts.get(layer)))
    class_panel = None
    notes[:0] = [
        (
            "Each tile is an image optimized to excite one channel (its mean activation over space); "
            "the ratio compares the activation it reaches with the best among the report's inputs "
            "(the same mean over space)."
        )
    ]
    if view is not None:
        class_panel = _class_panel(model, opts, pre, size, view)
    else:
        notes.append("Without inputs there are no top patches, ratios or class models (give --input).")
    return FeatureVisSection("featurevis", title, settings, tuple(panels), class_panel, " ".join(notes))


def _layer_panel(
    model: Model,
    index: int,
    layer: str,
    opts: FeatureVisOptions,
    pre: Preprocess,
    size: tuple[int, int] | None,
    kernels: Sequence[ConvKernels],
    view: _InputsView | None,
    act: np.ndarray | None,
) -> FeatureVisLayer:
    node = model.graph.producer.get(layer)
    op = "" if node is None else node.op_type
    pid = f"featurevis-{index}"
    try:
        if act is None:
            act = _probe(model, layer, pre, size)
        if act.ndim != 4:
            raise TargetError(f"layer {layer!r} has shape {shape_str(act.shape)}; channel galleries need a rank-4 tensor")
        n_ch = int(act.shape[1])
        if view is not None:
            means = np.nan_to_num(act.mean(axis=(2, 3)), nan=-np.inf)  # (N, C)
            order = np.argsort(-means.max(axis=0), kind="stable")[: opts.channels]
            chans = sorted(int(c) for c in order)
        else:
            chans = list(range(min(opts.channels, n_ch)))
        vis = visualize(
            model, channel(layer, chans), rng=opts.seed, param=opts.param, size=size, steps=opts.steps,
            lr=opts.lr, preprocess=pre,
        )
    except OnnxvizError as e:
        hint = f" ({e.hint})" if e.hint else ""
        return FeatureVisLayer(pid, layer, op, "?", "", 0, (), "", "", e.message + hint)
    conv = _conv_of(model.graph, layer, kernels)
    kernel_note = ""
    if conv is None:
        kernel_note = "not a convolution's output: no filters shown"
    elif conv.op_type == "ConvTranspose":
        conv = None
        kernel_note = "ConvTranspose output: filters not shown"
    else:
        kernel_note = f"filters of {conv.op_type} node {conv.node!r}, each on its own scale (mid-grey = 0)"
    patches: list[tuple[Image | None, str]] = [(None, "")] * len(chans)
    patch_note = ""
    best: list[float | None] = [None] * len(chans)
    if view is not None and act is not None:
        patches, patch_note = _top_patches(model, layer, act, chans, view)
        means = act.mean(axis=(2, 3))
        best = [float(np.nanmax(means[:, c])) for c in chans]
    tiles = []
    for j, c in enumerate(chans):
        kimg, knote = _kernel_tile(conv, c) if conv is not None else (None, "")
        if knote and knote not in kernel_note:
            kernel_note += f"; inputs with more than {KERNEL_MAX_INPUTS} channels show {knote}"
        a = float(vis.final[j])
        b = best[j]
        tiles.append(
            FeatureVisTile(
                label=f"channel {c}", unit=c, image=_display(vis.images[j]), kernel=kimg,
                patch=patches[j][0], patch_caption=patches[j][1], activation=a, best_input=b,
                ratio=(a / b) if b is not None and b > 0 else None,
            )
        )
    return FeatureVisLayer(
        id=pid, tensor=layer, op_type=op, shape=shape_str(act.shape[1:]), objective=vis.settings.objective,
        channels_total=n_ch, tiles=tuple(tiles), kernel_note=kernel_note, patch_note=patch_note,
        error="",
    )


def estimated_gmacs(
    model: Model, layers: Sequence[str], pre: Preprocess, hw: tuple[int, int], opts: FeatureVisOptions, classes: int
) -> float:
    """Compute of the section's optimizations in GMACs, from the layer table at size ``hw``."""
    from ..layers import summarize

    shape = (1, pre.channels, *hw) if pre.layout == "NCHW" else (1, *hw, pre.channels)
    try:
        summary = summarize(model, {model.inputs[0].name: shape})
    except OnnxvizError:
        return 0.0
    macs = {layer.label: layer.macs or 0 for layer in summary.layers}

    def upto(names: set[str]) -> int:
        return sum(macs.get(n.label, 0) for n in model.graph.ancestors(names))

    total = sum(upto({name}) for name in layers) * opts.channels
    total += upto(set(model.graph.output_names)) * classes
    return 3.0 * opts.steps * total / 1e9


def _probe(model: Model, layer: str, pre: Preprocess, size: tuple[int, int] | None) -> np.ndarray:
    """The layer's value on one mid-grey image (for its shape)."""
    from ..maximize.param import ModelInput

    hw = pre.size or size or (64, 64)
    img = np.full((1, hw[0], hw[1], pre.channels), 0.5, dtype=np.float32)
    return model.run(ModelInput(pre).forward(img), taps=[layer])[layer]


def _class_panel(
    model: Model,
    opts: FeatureVisOptions,
    pre: Preprocess,
    size: tuple[int, int] | None,
    view: _InputsView,
) -> FeatureVisLayer:
    pid = "featurevis-classes"
    tensor, what = _logits_tensor(model)
    try:
        scores = model.run(view.feeds, taps=[tensor])[tensor]
        if scores.ndim < 2:
            raise TargetError(f"{tensor!r} has shape {shape_str(scores.shape)}; class scores need (N, K)")
        flat = scores.reshape(scores.shape[0], -1)
        order = np.argsort(-np.nan_to_num(flat, nan=-np.inf), axis=1, kind="stable")
        classes: list[int] = []
        for rank in range(min(flat.shape[1], opts.classes)):  # every input's best class, then 2nd best...
            for k in order[:, rank]:
                if int(k) not in classes and len(classes) < opts.classes:
                    classes.append(int(k))
        objective = class_logit(tensor, classes) - opts.class_l2 * l2()
        vis = visualize(
            model, objective, rng=opts.seed, param="pixel", transforms=None, size=size, steps=opts.steps,
            lr=opts.lr, preprocess=pre,
        )
        reached = model.run(vis.inputs, taps=[tensor])[tensor].reshape(len(classes), -1)
    except OnnxvizError as e:
        hint = f" ({e.hint})" if e.hint else ""
        return FeatureVisLayer(pid, tensor, "", "?", "", 0, (), "", "", e.message + hint)
    tiles = []
    for j, k in enumerate(classes):
        a = float(reached[j, k])
        b = float(np.nanmax(flat[:, k]))
        tiles.append(
            FeatureVisTile(
                label=f"class {k}", unit=k, image=_display(vis.images[j]), kernel=None, patch=None, patch_caption="",
                activation=a, best_input=b, ratio=(a / b) if b > 0 else None,
            )
        )
    note = (
        f"Simonyan et al. 2013 class model: maximize the unnormalised class score S_c ({what}) minus "
        f"{opts.class_l2:g} x mean (x - 0.5)^2 over the image in [0, 1] (the paper's L2 penalty, as a mean), "
        "from a mid-grey image (the mean image), pixel parametrization, no transforms; "
        f"the top classes of the inputs (up to {opts.classes}). Activation = the class score reached."
    )
    return FeatureVisLayer(
        id=pid, tensor=tensor, op_type="class model", shape=shape_str(scores.shape[1:]),
        objective=vis.settings.objective, channels_total=int(flat.shape[1]), tiles=tuple(tiles),
        kernel_note="", patch_note=note, error="",
    )
