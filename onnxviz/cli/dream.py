"""DeepDream: amplify what layers of the model see in an image, and write the dreamed image.

The Caffe notebook's algorithm: octaves (each 1/--octave-scale of the next), --steps gradient
steps per octave of --step-size / mean|g| (in 8-bit pixel units) on the mean square of the
--layers (or, with --channels, the mean of those channels), a random roll by up to --jitter
pixels per step, and the detail carried from octave to octave. The output has the input's size.

Examples:
  onnxviz dream model.onnx cat.jpg --layers relu3 -o dream.png
  onnxviz dream model.onnx cat.jpg --layers relu3,relu4 --octaves 5 --steps 20 -o dream.png
  onnxviz dream model.onnx cat.jpg --layers relu4 --channels 3,7 -o dream.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imaging import save_png
from ..inputs import load_image
from ..model import load
from ..report.featurevis import check_layer, default_layers
from .common import Progress
from .visualize import add_preprocess_arguments, model_preprocess, parse_units

__all__ = ["add_arguments", "run"]

# ITU-R BT.601 luma, as the input pipeline converts RGB images for grey models.
_LUMA = np.array([0.299, 0.587, 0.114])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument("image", help="the image to dream on (PNG, JPEG, ...)")
    parser.add_argument("--layers", help="comma-separated tensors (default: the middle conv/activation output)")
    parser.add_argument(
        "--channels", help="maximize these channels of the layers (mean over space) instead of the whole layer: 3,7 or 0-15"
    )
    parser.add_argument("--octaves", type=int, default=4, help="number of octaves (default 4)")
    parser.add_argument("--octave-scale", type=float, default=1.4, help="size ratio between octaves (default 1.4)")
    parser.add_argument("--steps", type=int, default=10, help="steps per octave (default 10)")
    parser.add_argument("--step-size", type=float, default=1.5, help="step size in 8-bit pixel units (default 1.5)")
    parser.add_argument("--jitter", type=int, default=32, help="random roll of up to this many pixels (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random rolls")
    add_preprocess_arguments(parser)
    parser.add_argument("-o", "--out", default="dream.png", help="image to write (PNG)")


def _to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    if img.shape[2] == channels:
        return img
    if channels == 1:
        return (img[..., :3] @ _LUMA)[..., None].astype(np.float32)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def run(args: argparse.Namespace) -> int:
    from ..maximize import Objective, channel, dream, layer_l2

    progress = Progress(args.quiet)
    model = load(args.model)
    pre = model_preprocess(model, args)
    if args.octaves < 1 or args.steps < 1:
        raise InputError(f"--octaves and --steps must be at least 1, got {args.octaves} and {args.steps}")
    if args.octave_scale <= 1.0:
        raise InputError(f"--octave-scale must be above 1, got {args.octave_scale}", hint="the Caffe default is 1.4")
    if args.jitter < 0 or args.step_size <= 0:
        raise InputError("--jitter must be >= 0 and --step-size > 0")
    if args.layers:
        layers = [check_layer(model, t.strip()) for t in args.layers.split(",") if t.strip()]
    else:
        layers = default_layers(model.graph, 1)
        if not layers:
            raise InputError("the model has no convolution output to dream on", hint="name tensors with --layers")
    image = _to_channels(load_image(args.image), pre.channels)
    if args.channels:
        from ..maximize.param import ModelInput

        x = ModelInput(pre).forward(np.full((1,) + _probe_hw(pre, image) + (pre.channels,), 0.5, dtype=np.float32))
        values = model.run(x, taps=layers)
        terms: list[Objective] = []
        for name in layers:
            units = parse_units(args.channels, int(values[name].shape[1]) if values[name].ndim >= 2 else None)
            terms.extend(channel(name, c) for c in units)
        objective = sum(terms, Objective())
        what = f"channels {args.channels} of {', '.join(repr(t) for t in layers)}"
    else:
        objective = sum((layer_l2(name) for name in layers), Objective())
        what = "the mean square of " + ", ".join(repr(t) for t in layers)
    h, w = image.shape[:2]
    progress(f"dreaming on {what}: {h}x{w}, {args.octaves} octave(s) x {args.steps} steps")
    out = dream(
        model, image, rng=args.seed, objective=objective, octaves=args.octaves, octave_scale=args.octave_scale,
        steps_per_octave=args.steps, step_size=args.step_size, jitter=args.jitter, preprocess=pre,
    )
    save_png(out, Path(args.out))
    progress(f"wrote {args.out} ({out.shape[0]}x{out.shape[1]})")
    return 0


def _probe_hw(pre: object, image: np.ndarray) -> tuple[int, int]:
    size = getattr(pre, "size", None)
    return (int(size[0]), int(size[1])) if size is not None else (int(image.shape[0]), int(image.shape[1]))
