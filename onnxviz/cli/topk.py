"""Top-k images per channel of a layer, with receptive-field crops and deconvnet/guided projections.

Writes one gallery image: a row per channel with the k best crops, then their deconvnet
projections, then their guided-backprop projections (Zeiler & Fergus 2014, fig. 2).

Examples:
  onnxviz topk model.onnx --layer relu3 --images photos/ -o topk.png
  onnxviz topk model.onnx --layer relu3 --images photos/ --channels 3,5,9 -k 6 --json > topk.json
  onnxviz topk model.onnx --layer conv5 --images photos/ --channels all --preset -1-1 -o all.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..model import load
from .common import Progress, parse_shape

__all__ = ["IMAGE_SUFFIXES", "add_arguments", "list_images", "parse_channels", "run"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_CHANNELS = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument("--layer", required=True, metavar="TENSOR", help="tensor to rank (a conv/ReLU/pool output)")
    parser.add_argument(
        "--images", required=True, nargs="+", metavar="DIR",
        help="a folder of images (PNG, JPEG, ...; not recursive) or image files",
    )
    parser.add_argument(
        "--channels", metavar="LIST",
        help=f"channels: '0-15', '3,5,9', '0-3,8' or 'all' (default: the first {DEFAULT_CHANNELS})",
    )
    parser.add_argument("-k", type=int, default=9, help="images per channel (default: 9)")
    parser.add_argument("-o", "--output", default="topk.png", help="gallery PNG to write (default: topk.png)")
    parser.add_argument("--json", action="store_true", help="print the winners (images, positions, boxes) as JSON")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward/backward pass (default: 16)")
    parser.add_argument("--max-cell", type=int, default=96, help="largest gallery cell in pixels (default: 96)")
    g = parser.add_argument_group("preprocessing")
    g.add_argument(
        "--preset", default="imagenet", choices=["imagenet", "0-1", "-1-1", "0-255"],
        help="value range and normalisation of the images (default: imagenet)",
    )
    g.add_argument("--mean", type=float, nargs="+", help="per-channel mean subtracted after the range scaling")
    g.add_argument("--std", type=float, nargs="+", help="per-channel std divided after the mean")
    g.add_argument("--size", type=parse_shape, help="image size HxW for models with dynamic spatial dims")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], help="override the detected image layout")


def parse_channels(text: str, count: int) -> list[int]:
    """``"0-15"``, ``"3,5,9"``, ``"0-3,8"`` or ``"all"`` -> channel indices (in the given order)."""
    text = text.strip()
    if text.lower() == "all":
        return list(range(count))
    hint = "write channels like 0-15, 3,5,9 or all"
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
                if a > b:
                    raise InputError(f"channel range {part!r} runs backwards", hint=hint)
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError as e:
            raise InputError(f"bad channel list {text!r}", hint=hint) from e
    return out


def list_images(sources: list[str]) -> list[Path]:
    """Image files of the given folders (sorted by name, not recursive) and files, in order."""
    files: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(
                    f"no image files in {str(p)!r}", hint="the folder must hold " + ", ".join(IMAGE_SUFFIXES) + " files"
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{str(p)!r} does not exist", hint="give a folder of images or image files")
    return files


def run(args: argparse.Namespace) -> int:
    from ..imaging import save_png
    from ..topk import top_activations, topk_gallery

    progress = Progress(args.quiet)
    progress(f"loading {args.model}")
    model = load(args.model)
    files = list_images(args.images)
    progress(f"{len(files)} image(s)")
    channels = None
    if args.channels is None or args.channels.strip().lower() != "all":
        count = _channel_count(model, args, files[0])
        if args.channels is None:
            channels = list(range(min(DEFAULT_CHANNELS, count)))
        else:
            channels = parse_channels(args.channels, count)
    result = top_activations(
        model,
        files,
        args.layer,
        channels,
        args.k,
        preset=args.preset,
        mean=args.mean,
        std=args.std,
        size=args.size,
        layout=args.layout,
        batch_size=args.batch_size,
        progress=progress,
    )
    out = Path(args.output)
    save_png(topk_gallery(result, max_cell=args.max_cell), out)
    rf = result.receptive_field
    field = "whole image" if rf.is_full else f"{rf.size[0]}x{rf.size[1]} at stride {rf.stride[0]}x{rf.stride[1]}"
    progress(f"wrote {out} ({len(result.channels)} channels x {result.k}; field {field}{'' if rf.exact else ', approximate'})")
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


def _channel_count(model: object, args: argparse.Namespace, first: Path) -> int:
    """Channels of the layer, from one forward pass of the first image (shape inference cannot
    see through every model)."""
    import numpy as np

    from ..inputs import Preprocess, image_to_array, load_image
    from ..topk import channel_axis_of, image_input_of, layer_field

    info = image_input_of(model)  # type: ignore[arg-type]
    img = load_image(first)
    pre = Preprocess.from_model(info, preset=args.preset, mean=args.mean, std=args.std, size=args.size, layout=args.layout)
    if pre.size is None:
        pre = Preprocess.from_model(info, preset=args.preset, mean=args.mean, std=args.std, size=img.shape[:2], layout=args.layout)
    x = image_to_array(img, pre)[None]
    hw = pre.size or img.shape[:2]
    _, axes = layer_field(model, args.layer, (int(hw[0]), int(hw[1])))  # type: ignore[arg-type]
    act = np.asarray(model.run(x, [args.layer])[args.layer])  # type: ignore[attr-defined]
    return int(act.shape[1] if axes is None else act.shape[channel_axis_of(act.ndim, axes)])
