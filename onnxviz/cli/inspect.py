"""Show what is inside a model: inputs, outputs, layers, shapes, parameters and compute.

Examples:
  onnxviz inspect model.onnx
  onnxviz inspect model.onnx --input-shape 1x3x224x224      (models with dynamic dims)
  onnxviz inspect model.onnx --json > model.json
"""

from __future__ import annotations

import argparse
import json
import sys

from ..graph import Dim
from ..layers import ModelSummary, summarize
from ..model import load
from .common import parse_input_shapes

__all__ = ["add_arguments", "run", "format_summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument(
        "--input-shape",
        action="append",
        metavar="[NAME=]SHAPE",
        help="concrete input shape, e.g. 1x3x224x224, to resolve dynamic dimensions",
    )
    parser.add_argument("--json", action="store_true", help="print the same data as JSON")


def run(args: argparse.Namespace) -> int:
    model = load(args.model)
    shapes = parse_input_shapes(args.input_shape, [t.name for t in model.inputs])
    summary = summarize(model, shapes)
    if args.json:
        json.dump(summary.to_json(), sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_summary(summary))
    return 0


def _shape(shape: tuple[Dim, ...] | None) -> str:
    if shape is None:
        return "?"
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _clean(text: str, width: int | None = None) -> str:
    """Untrusted model strings: control characters shown escaped so they cannot move the terminal."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if width is not None and len(out) > width:
        out = out[: width - 1] + "…"
    return out


def format_summary(s: ModelSummary) -> str:
    lines = [
        f"model      {_clean(s.name)}" + (f"  ({s.file_size / 1e6:.2f} MB)" if s.file_size is not None else ""),
        f"producer   {_clean(s.producer) or '-'}",
        f"IR {s.ir_version}, opsets " + ", ".join(f"{_clean(k)} {v}" for k, v in s.opsets.items()),
    ]
    for key, value in s.metadata.items():
        lines.append(f"metadata   {_clean(key)} = {_clean(value, 100)}")
    for t in s.inputs:
        used = s.input_shapes_used.get(t.name)
        extra = f"  (using {_shape(used)})" if used and tuple(used) != t.shape else ""
        lines.append(f"input      {_clean(t.name)}  {_shape(t.shape)}  {t.dtype}{extra}")
    for t in s.outputs:
        lines.append(f"output     {_clean(t.name)}  {_shape(t.shape)}  {t.dtype}")
    lines.append(
        f"totals     {len(s.layers)} layers ({s.folded_nodes} constant nodes folded), "
        f"{_count(s.total_params)} parameters, {_count(s.total_macs)} MACs / {_count(s.total_flops)} FLOPs per sample"
    )
    if s.unknown_macs:
        lines.append(f"           (compute unknown for {len(s.unknown_macs)} layers with dynamic shapes; use --input-shape)")
    lines.append("ops        " + ", ".join(f"{_clean(k)} {v}" for k, v in s.op_histogram.items()))
    lines.append("")
    rows = [("#", "layer", "op", "inputs", "outputs", "params", "MACs")]
    for layer in s.layers:
        rows.append(
            (
                str(layer.index),
                _clean(layer.label, 40),
                _clean(layer.op_type),
                " ".join(_shape(x) for x in layer.input_shapes[:1]),
                " ".join(_shape(x) for x in layer.output_shapes[:1]),
                _count(layer.params) if layer.params else "",
                _count(layer.macs) if layer.macs else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i in (1, 2, 3, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(lines) + "\n"
