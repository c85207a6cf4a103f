"""Feature visualization: images that maximally excite channels of a layer (a labelled gallery).

Optimizes one image per channel in one batch (Lucid's render_vis: Adam, FFT parametrization with
decorrelated colour, standard transforms, redirected ReLU early on), or per class for the class
objective (Simonyan et al. 2013: class score minus an L2 penalty, pixel parametrization).

Examples:
  onnxviz visualize model.onnx --layer relu3 --channels 0-15 -o gallery.png
  onnxviz visualize model.onnx --layer relu3 --channels 3,5,9 --steps 256 --save-npy x.npy --json vis.json
  onnxviz visualize model.onnx --objective class --classes 0-4 --l2 1.0 -o classes.png
  onnxviz visualize model.onnx --layer conv5 --channels all --batch 16 -o all.png
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, TargetError
from ..files import atomic_write, npy_bytes
from ..imaging import save_png, tile_grid, upscale_nearest
from ..model import Model, load
from ..report.featurevis import check_image_model, check_layer
from .common import Progress, parse_shape, write_json

__all__ = ["add_arguments", "add_preprocess_arguments", "model_preprocess", "parse_units", "run"]

OBJECTIVES = ("channel", "neuron", "layer_l2", "class")
#: Gallery tiles are upscaled (nearest) to at least this edge so small inputs stay visible.
GALLERY_TILE_PX = 96
_LABEL_PX = 14


def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset/--mean/--std/--layout`` as in :func:`onnxviz.cli.common.add_input_arguments`."""
    g = parser.add_argument_group("model input")
    g.add_argument(
        "--preset",
        default=None,
        choices=["imagenet", "0-1", "-1-1", "0-255"],
        help="value range and normalisation of the model's image input (default: imagenet)",
    )
    g.add_argument("--mean", type=float, nargs="+", help="per-channel mean subtracted after the range scaling")
    g.add_argument("--std", type=float, nargs="+", help="per-channel std divided after the mean")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], help="override the detected image layout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument("--layer", help="tensor to visualize (for --objective class: the scores, default the output)")
    parser.add_argument(
        "--objective", default="channel", choices=OBJECTIVES,
        help="channel: mean of each channel (default); neuron: its centre unit; layer_l2: DeepDream's "
        "mean square of the whole layer (one image); class: Simonyan class model",
    )
    parser.add_argument("--channels", help="channels: 0-15, 3,5,9, 0-3,8 or all (default: 0-7)")
    parser.add_argument("--classes", help="with --objective class: class indices, e.g. 0-4 (default: 0)")
    parser.add_argument(
        "--l2", type=float, default=1.0, metavar="LAMBDA",
        help="with --objective class: weight of the penalty mean (x - 0.5)^2 over the [0, 1] image (default 1.0)",
    )
    parser.add_argument("--steps", type=int, default=512, help="optimization steps (default 512, Lucid's)")
    parser.add_argument(
        "--size", type=parse_shape, metavar="S",
        help="image size S or HxW (default: the model's fixed size, else 128); a model exported at a fixed size "
        "renders another size natively when the layer comes from its fully convolutional part",
    )
    parser.add_argument("--param", default=None, choices=["fft", "pixel"],
                        help="parametrization (default: fft; pixel for --objective class)")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial images and the transforms")
    parser.add_argument("--batch", type=int, metavar="N", help="optimize at most N images at a time (bounds memory)")
    parser.add_argument(
        "--axis", type=int, default=1,
        help="channel axis of the layer (default 1, NCHW as every Conv produces; -1 for NHWC tensors)",
    )
    add_preprocess_arguments(parser)
    parser.add_argument("-o", "--out", default="gallery.png", help="gallery image to write (PNG)")
    parser.add_argument(
        "--save-npy", metavar="FILE",
        help="save the optimized inputs exactly as fed to the model: (units, *input shape[1:])",
    )
    parser.add_argument("--json", metavar="FILE", help="write the settings, final activations and history summary")


# ------------------------------------------------------------------------------------------
# parsing


def parse_units(text: str | None, total: int | None, what: str = "channel") -> list[int]:
    """``0-15``, ``3,5,9``, ``0-3,8`` or ``all`` -> sorted-as-given unique indices, range-checked."""
    if text is None:
        raise InputError(f"no {what}s given")
    text = text.strip()
    if text == "all":
        if total is None:
            raise InputError(f"the number of {what}s is unknown; 'all' cannot be used", hint=f"list the {what}s")
        return list(range(total))
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(-?\d+)(?:\s*-\s*(-?\d+))?", part)
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise InputError(f"bad {what} list {text!r}", hint=f"write {what}s like 0-15, 3,5,9 or all")
        lo = int(m.group(1))
        out.extend(range(lo, int(m.group(2)) + 1) if m.group(2) is not None else [lo])
    if not out:
        raise InputError(f"bad {what} list {text!r}", hint=f"write {what}s like 0-15, 3,5,9 or all")
    out = list(dict.fromkeys(out))
    if total is not None:
        bad = [c for c in out if c < 0 or c >= total]
        if bad:
            raise TargetError(
                f"{what} {bad[0]} is out of range: the layer has {total} {what}s",
                hint=f"use {what}s 0..{total - 1}",
            )
    return out


def model_preprocess(model: Model, args: argparse.Namespace) -> Any:
    """The :class:`~onnxviz.inputs.Preprocess` of the model's image input from the CLI flags."""
    from ..inputs import Preprocess

    info = check_image_model(model, "feature visualization")
    return Preprocess.from_model(info, preset=args.preset or "imagenet", mean=args.mean, std=args.std, layout=args.layout)


def _size(args: argparse.Namespace) -> tuple[int, int] | None:
    if args.size is None:
        return None
    if len(args.size) == 1:
        return (args.size[0], args.size[0])
    if len(args.size) == 2:
        return (args.size[0], args.size[1])
    raise InputError(f"bad --size {'x'.join(map(str, args.size))}", hint="write --size 128 or --size 128x96")


def _probe(model: Model, pre: Any, hw: tuple[int, int], tensor: str) -> np.ndarray:
    """The tensor's value on one mid-grey image (onnxruntime): its shape and the channel count."""
    from ..maximize.param import ModelInput

    img = np.full((1, hw[0], hw[1], pre.channels), 0.5, dtype=np.float32)
    return model.run(ModelInput(pre).forward(img), taps=[tensor])[tensor]


def _probe_at_size(model: Model, pre: Any, size: tuple[int, int] | None, tensor: str) -> tuple[tuple[int, int], np.ndarray]:
    """The image size visualize will render ``tensor`` at (the same rules: a fixed-size model
    asked for another size runs its fully convolutional part natively) and the tensor's value
    on one mid-grey image of that size."""
    from ..maximize import channel
    from ..maximize.optimize import image_input, model_at_size

    sized, sized_pre = model_at_size(model, channel(tensor, 0), None, pre, size)
    _, _, hw, _ = image_input(sized, None, sized_pre, size)
    return hw, _probe(sized, pre, hw, tensor)


def _class_tensor(model: Model, layer: str | None) -> str:
    if layer is not None:
        return check_layer(model, layer)
    out = model.outputs[0].name
    node = model.graph.producer.get(out)
    if node is not None and node.op_type == "Softmax":  # Simonyan: the unnormalised score
        return node.inputs[0]
    return out


# ------------------------------------------------------------------------------------------
# gallery


def label_strip(text: str, width: int) -> np.ndarray:
    from ..report.panels import label_strip as label

    return label(text, width)[:_LABEL_PX, :width]


def gallery(images: np.ndarray, labels: list[str]) -> np.ndarray:
    """One tile per image (``N x H x W x C`` in [0, 1]), each with its label underneath."""
    tiles = []
    f = max(1, math.ceil(GALLERY_TILE_PX / max(images.shape[1:3])))
    for img, text in zip(images, labels):
        a = np.asarray(img, dtype=np.float64)
        a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]
        a = upscale_nearest(a, f) if f > 1 else a
        tiles.append(np.vstack([a, label_strip(text, a.shape[1])]))
    return tile_grid(tiles, ncols=min(len(tiles), 8), pad=4)



# ------------------------------------------------------------------------------------------
# run


def run(args: argparse.Namespace) -> int:
    from ..maximize import (
        channel,
        class_logit,
        evaluate,
        l2,
        layer_l2,
        neuron,
        visualize,
    )
    from ..maximize.optimize import split_rng
    from ..maximize.param import make_param

    progress = Progress(args.quiet)
    model = load(args.model)
    pre = model_preprocess(model, args)
    size = _size(args)
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if args.batch is not None and args.batch < 1:
        raise InputError(f"--batch must be at least 1, got {args.batch}")
    kind = args.objective
    if kind == "class":
        if args.channels:
            raise InputError("--channels does not apply to --objective class", hint="use --classes")
        tensor = _class_tensor(model, args.layer)
        hw, value = _probe_at_size(model, pre, size, tensor)
        units = parse_units(args.classes or "0", int(np.prod(value.shape[1:])), "class")
    else:
        if args.classes:
            raise InputError("--classes applies to --objective class only", hint="use --channels")
        if not args.layer:
            raise InputError("--layer is required", hint="`onnxviz inspect MODEL` lists the tensor names")
        tensor = check_layer(model, args.layer)
        hw, value = _probe_at_size(model, pre, size, tensor)
        if value.ndim < 2:
            raise TargetError(f"layer {tensor!r} has shape {list(value.shape)}: it has no channel axis")
        axis = args.axis % value.ndim
        if axis == 0:
            raise TargetError("--axis 0 is the batch axis", hint="use 1 (NCHW) or -1 (NHWC)")
        if kind == "layer_l2":
            if args.channels:
                raise InputError("--channels does not apply to --objective layer_l2 (one image for the whole layer)")
            units = [-1]
        else:
            units = parse_units(args.channels or "0-7", int(value.shape[axis]), "channel")
    param = args.param or ("pixel" if kind == "class" else "fft")
    transforms: str | None = None if kind == "class" else "standard"

    def objective(chunk: list[int]) -> Any:
        if kind == "channel":
            return channel(tensor, chunk, axis=args.axis)
        if kind == "neuron":
            return neuron(tensor, chunk, axis=args.axis)
        if kind == "layer_l2":
            return layer_l2(tensor)
        return class_logit(tensor, chunk) - args.l2 * l2()

    def measure(chunk: list[int]) -> Any:  # the activation alone (no penalty), per image
        return class_logit(tensor, chunk) if kind == "class" else objective(chunk)

    # One init for the whole gallery, split into chunks: chunked runs equal the one-batch run
    # (image i starts from block i, and the transforms draw once per step for the whole batch).
    _, init_seed, _ = split_rng(args.seed)
    n = len(units)
    init = make_param(param, hw[0], hw[1], pre.channels).init(n, np.random.default_rng(init_seed))
    step = args.batch or n
    chunks = [list(range(i, min(n, i + step))) for i in range(0, n, step)]
    every = max(1, args.steps // 10)
    images, inputs, finals, histories, settings = [], [], [], [], None
    what = "classes" if kind == "class" else ("layer" if kind == "layer_l2" else "channels")
    progress(f"{kind} objective on {tensor!r}: {n} image(s) at {hw[0]}x{hw[1]}, {args.steps} steps, "
             f"{len(chunks)} batch(es)")
    for b, idx in enumerate(chunks):
        chunk_units = [units[i] for i in idx]

        def report(s: int, vals: np.ndarray, b: int = b, idx: list[int] = idx) -> None:
            if (s + 1) % every == 0 or s + 1 == args.steps:
                progress(f"batch {b + 1}/{len(chunks)} ({what} {_span(units, idx)}): step {s + 1}/{args.steps}, "
                         f"mean objective {float(np.mean(vals)):.4g}")

        vis = visualize(
            model, objective(chunk_units), rng=args.seed, param=param, size=size, steps=args.steps, lr=args.lr,
            transforms=transforms, preprocess=pre, init=init[idx], progress=report,
            batch=len(idx) if kind == "layer_l2" else None,
        )
        images.append(vis.images)
        inputs.append(vis.inputs)
        finals.append(evaluate(model, measure(chunk_units), vis.inputs) if kind == "class" else vis.final)
        histories.append(vis.history)
        settings = settings or vis.settings
    all_images = np.concatenate(images)
    all_inputs = np.concatenate(inputs)
    final = np.concatenate(finals)
    history = np.concatenate(histories, axis=1)
    label = {"class": "class", "layer_l2": "layer", "channel": "ch", "neuron": "ch"}[kind]
    labels = [tensor[:12] if u < 0 else f"{label} {u}" for u in units]
    save_png(gallery(all_images, labels), Path(args.out))
    progress(f"wrote {args.out}")
    if args.save_npy:
        atomic_write(Path(args.save_npy), npy_bytes(all_inputs), what="array")
        progress(f"wrote {args.save_npy} {list(all_inputs.shape)}")
    if args.json:
        assert settings is not None
        marks = sorted({min(args.steps - 1, round(k * (args.steps - 1) / 10)) for k in range(11)})
        data = {
            "model": str(args.model),
            "layer": tensor,
            "objective": kind,
            "objective_expression": settings.objective if len(chunks) == 1 else objective(units if kind != "layer_l2" else [-1]).describe(),
            "units": units if kind != "layer_l2" else [],
            "settings": {
                "param": settings.param, "size": list(settings.size), "steps": args.steps, "lr": args.lr,
                "seed": args.seed, "init_seed": settings.init_seed, "transform_seed": settings.transform_seed,
                "transforms": list(settings.transforms), "redirect_relu_steps": settings.redirect_relu_steps,
                "batch": step, "batches": len(chunks), "axis": args.axis, "l2": args.l2 if kind == "class" else None,
                "input_name": settings.input_name, "preprocess": dict(settings.preprocess), "dtype": settings.dtype,
            },
            "results": [
                {
                    "unit": None if u < 0 else u,
                    "activation": float(final[i]),
                    "objective_final": float(history[-1, i]),
                    "objective_first": float(history[0, i]),
                    "objective_best": float(history[:, i].max()),
                    "best_step": int(history[:, i].argmax()),
                }
                for i, u in enumerate(units)
            ],
            "history": {"steps": marks, "mean": [float(history[s].mean()) for s in marks],
                        "min": [float(history[s].min()) for s in marks], "max": [float(history[s].max()) for s in marks]},
            "notes": "activation: the objective without penalties on the saved inputs (no transforms); "
            "objective_*: on each step's transformed image",
        }
        write_json(data, Path(args.json))
        progress(f"wrote {args.json}")
    return 0


def _span(units: list[int], idx: list[int]) -> str:
    lo, hi = units[idx[0]], units[idx[-1]]
    return str(lo) if lo == hi else f"{lo}..{hi}"
