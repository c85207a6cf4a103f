"""Write one self-contained HTML report: overview, layers, kernels and (with inputs) feature maps.

Examples:
  onnxviz report model.onnx -o report.html
  onnxviz report model.onnx --input cat.png --input dog.jpg -o report.html --json report.json
  onnxviz report model.onnx --input x.npy --tensors conv1_out,relu5_out -o report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model import load
from .common import Progress, add_input_arguments, command_line, prepare_cli_inputs, write_json

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    parser.add_argument("--json", metavar="FILE", help="also write the report's numbers as JSON")
    add_input_arguments(parser)
    fm = parser.add_argument_group("feature maps")
    fm.add_argument("--tensors", help="comma-separated tensor names to show (default: every conv/pool stage)")
    fm.add_argument("--top-k", type=int, default=16, help="channels shown per feature map (default: 16)")
    at = parser.add_argument_group("attributions")
    at.add_argument(
        "--methods",
        help="comma-separated attribution methods for the report (default: saliency,gradcam,guided_gradcam; "
        "'all' for every method, 'none' to skip)",
    )


def _methods(text: str | None) -> list[str] | None:
    from ..methods.registry import METHODS, get_method

    if text is None:
        return None
    if text.strip() == "none":
        return []
    if text.strip() == "all":
        return list(METHODS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        get_method(name)  # unknown names fail before any work is done
    return names


def run(args: argparse.Namespace, *, command: str | None = None) -> int:
    from ..report.data import build_report
    from ..report.html import write_html

    progress = Progress(args.quiet)
    progress(f"loading {args.model}")
    model = load(args.model)
    prepared = prepare_cli_inputs(model, args)
    if prepared is not None:
        progress(f"prepared {len(prepared.sources)} input(s): batch of {prepared.batch_size}")
    tensors = [t.strip() for t in args.tensors.split(",") if t.strip()] if args.tensors else None
    progress("computing layer table, kernels" + (" and feature maps" if prepared else ""))
    data = build_report(
        model,
        inputs=prepared,
        feature_tensors=tensors,
        top_k=args.top_k,
        command=command or command_line(),
        methods=_methods(getattr(args, "methods", None)),
    )
    out = Path(args.output)
    write_html(data, out)
    progress(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    if args.json:
        write_json(data.to_json(), Path(args.json))
        progress(f"wrote {args.json}")
    return 0
