"""Explain a decision with one attribution method and write a panel image (and raw arrays).

Methods: gradient, saliency, gradient_x_input, smoothgrad, integrated_gradients, guided_backprop,
deconvnet (pixel gradients); gradcam, gradcam++, xgradcam, layercam, hirescam, eigencam, scorecam,
ablationcam, guided_gradcam (CAMs, on --layer or the last spatial feature map); occlusion, rise
(forward only: they work on any model onnxruntime runs).

Examples:
  onnxviz explain model.onnx --input cat.png --method gradcam -o cam.png
  onnxviz explain model.onnx --input cat.png --method integrated_gradients --param steps=64 \\
      --save-npy ig.npy --json ig.json
  onnxviz explain model.onnx --input cat.png --method saliency --top-k 3 -o top3.png
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import atomic_write, npy_bytes
from ..imaging import save_png
from ..methods.base import Explanation, channel_axis, resolve_target
from ..methods.evaluation import deletion_insertion, randomization_test
from ..methods.registry import METHODS, get_method
from ..model import load
from ..targets import region_target
from ..report.panels import display_images, explanation_panel
from .common import Progress, add_input_arguments, prepare_cli_inputs, write_json

__all__ = ["add_arguments", "run", "parse_params"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    add_input_arguments(parser)
    parser.add_argument("--method", "-m", default="saliency", choices=sorted(METHODS), help="attribution method")
    parser.add_argument(
        "--target",
        help="class index to explain (default: each input's top class), or one index per input: 3,7",
    )
    parser.add_argument(
        "--target-region",
        metavar="INDEX",
        help="explain an element or region of the output instead of a class, indexing the axes after the batch: "
        "'0,4' (one box's score), '1,10:20,5:15' (the sum of a mask region)",
    )
    parser.add_argument("--top-k", type=int, help="explain each input's top K classes (one panel row set per class)")
    parser.add_argument("--output", dest="output_tensor", help="output tensor to explain (default: the first output)")
    parser.add_argument("--layer", help="tensor for CAM methods (default: the last spatial feature map)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter, e.g. steps=64"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random generator (noise, masks)")
    parser.add_argument("-o", "--out", default="explanation.png", help="panel image to write (PNG)")
    parser.add_argument("--save-npy", metavar="FILE", help="save the raw attributions as .npy")
    parser.add_argument(
        "--upsampled",
        action="store_true",
        help="with --save-npy: save the (N, H, W) maps at input resolution instead of the raw attributions",
    )
    parser.add_argument("--json", metavar="FILE", help="write the method, variant, targets, scores and trust figures")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="also compute deletion/insertion AUC (20 steps, zero baseline) and the top-layer randomization check",
    )


def parse_params(items: list[str]) -> dict[str, Any]:
    """``steps=64`` -> {"steps": 64}; ints, floats, true/false and none are recognised."""
    params: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise InputError(f"bad --param {item!r}", hint="write --param NAME=VALUE, e.g. --param steps=64")
        value: Any = text
        lowered = text.lower()
        if lowered in ("true", "false"):
            value = lowered == "true"
        elif lowered == "none":
            value = None
        else:
            for cast in (int, float):
                try:
                    value = cast(text)
                    break
                except ValueError:
                    continue
        params[name] = value
    return params


def _targets(args: argparse.Namespace, model: Any, feeds: dict[str, np.ndarray]) -> list[Any]:
    if args.target_region is not None:
        if args.target or args.top_k:
            raise InputError("use one of --target, --top-k and --target-region")
        out = args.output_tensor or model.outputs[0].name
        value = model.run(feeds, [out])[out]
        return [region_target(value.shape, args.target_region)]
    if args.top_k:
        if args.target:
            raise InputError("use either --target or --top-k", hint="--top-k K explains each input's K best classes")
        spec, value = resolve_target(model, feeds, None, args.output_tensor)
        scores = value.reshape(value.shape[0], value.shape[1], -1).sum(axis=2)
        order = np.argsort(-scores, axis=1, kind="stable")
        return [list(order[:, k]) for k in range(min(args.top_k, scores.shape[1]))]
    if args.target is None:
        return [None]
    try:
        parts = [int(t) for t in args.target.split(",")]
    except ValueError as e:
        raise InputError(f"bad --target {args.target!r}", hint="give a class index or one per input: 3,7") from e
    return [parts[0] if len(parts) == 1 else parts]


def run(args: argparse.Namespace) -> int:
    progress = Progress(args.quiet)
    model = load(args.model)
    if not args.input:
        raise InputError("explain needs at least one --input", hint="give an image or a .npy array")
    prepared = prepare_cli_inputs(model, args)
    assert prepared is not None
    feeds = prepared.feeds
    cls = get_method(args.method)
    params = parse_params(args.param)
    if args.layer:
        params["layer"] = args.layer
    try:
        method = cls(**params)
    except TypeError as e:
        raise InputError(f"bad parameters for {args.method}: {e}", hint="see the method's parameters in the docs") from e
    input_name = getattr(prepared, "image_input", None) or model.inputs[0].name
    explanations: list[Explanation] = []
    for target in _targets(args, model, feeds):
        progress(f"{args.method}: explaining target {target if target is not None else 'top class'}")
        explanation = method.explain(
            model, feeds, target, output=args.output_tensor, input_name=input_name,
            rng=np.random.default_rng(args.seed),
        )
        if args.trust:
            progress("trust figures: deletion/insertion AUC and the randomization check")
            extra = deletion_insertion(model, feeds, explanation).as_trust()
            extra.update(
                randomization_test(
                    model, feeds, method, target=target, output=args.output_tensor, input_name=input_name,
                    top=1, rng=np.random.default_rng(args.seed),
                ).as_trust()
            )
            explanation = dataclasses.replace(explanation, trust={**explanation.trust, **extra})
        explanations.append(explanation)
    images = display_images(feeds[input_name], prepared.preprocess, channel_axis(model, input_name))
    panel = explanation_panel(images, explanations)
    save_png(panel, Path(args.out))
    progress(f"wrote {args.out}")
    if args.save_npy:
        arrays = [e.maps if args.upsampled else e.attributions for e in explanations]
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        atomic_write(Path(args.save_npy), npy_bytes(data), what="array")
        progress(f"wrote {args.save_npy} {list(data.shape)}")
    if args.json:
        write_json({"model": str(args.model), "explanations": [e.to_json() for e in explanations]}, Path(args.json))
        progress(f"wrote {args.json}")
    return 0

