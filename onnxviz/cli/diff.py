"""Compare two versions of a model (FP32 vs FP16/INT8, a re-export, another optimization level).

Prints output agreement first, then the first layer whose relative L2 drift exceeds the
threshold, the per-layer kernel (quantization) error, and whether the attribution maps still
point at the same evidence. Without --input a seeded probe set of random images is used.

Examples:
  onnxviz diff model.onnx model.int8.onnx
  onnxviz diff model.onnx model.fp16.onnx --input cat.png --input dog.png --json diff.json
  onnxviz diff a.onnx b.onnx --threshold 0.01 --methods saliency
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from ..diff import DEFAULT_MIN_SPEARMAN, DEFAULT_THRESHOLD, DiffResult, diff
from ..errors import InputError
from ..model import load
from .common import Progress, add_input_arguments, prepare_cli_inputs, write_json
from .inspect import _clean

__all__ = ["add_arguments", "format_result", "run"]

_MAX_TENSOR_ROWS = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_a", metavar="A", help="the reference model (.onnx)")
    parser.add_argument("model_b", metavar="B", help="the model to compare with it (.onnx)")
    parser.add_argument("--json", metavar="FILE", help="also write every number as JSON")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"relative L2 drift above which a layer has diverged (default: {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--min-spearman",
        type=float,
        default=DEFAULT_MIN_SPEARMAN,
        help=f"mean rank correlation of attribution maps below which B looks elsewhere (default: {DEFAULT_MIN_SPEARMAN})",
    )
    parser.add_argument(
        "--methods",
        default="saliency,gradcam",
        help="comma-separated attribution methods to compare (default: saliency,gradcam)",
    )
    parser.add_argument("--no-attention", action="store_true", help="skip the attribution comparison")
    parser.add_argument(
        "--samples",
        type=int,
        default=8,
        help="probe inputs generated without --input (default: 8)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the probe set and of random methods (default: 0)",
    )
    add_input_arguments(parser)


def run(args: argparse.Namespace) -> int:
    progress = Progress(args.quiet)
    if not args.threshold > 0 or not math.isfinite(args.threshold):
        raise InputError(
            f"--threshold must be a positive number, got {args.threshold}",
            hint="e.g. --threshold 0.05",
        )
    if args.samples < 1:
        raise InputError(f"--samples must be at least 1, got {args.samples}")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    progress(f"loading {args.model_a} and {args.model_b}")
    a, b = load(args.model_a), load(args.model_b)
    prepared = prepare_cli_inputs(a, args)
    if prepared is None:
        feeds, described = None, None
        progress(f"no --input given: generating a seeded probe set of {args.samples} inputs")
    else:
        feeds = prepared.feeds
        described = f"{prepared.batch_size} given input(s): " + ", ".join(prepared.sources)
    progress("comparing tensors, weights" + ("" if args.no_attention else " and attribution maps"))
    result = diff(
        a,
        b,
        feeds,
        threshold=args.threshold,
        min_spearman=args.min_spearman,
        methods=methods,
        attention=not args.no_attention,
        samples=args.samples,
        seed=args.seed,
        preset=args.preset or "imagenet",
        inputs_description=described,
    )
    sys.stdout.write(format_result(result, given=prepared is not None))
    if args.json:
        write_json(result.to_json(), Path(args.json))
        progress(f"wrote {args.json}")
    return 0


def _num(x: float | None, fmt: str = ".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, fmt)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _table(rows: Sequence[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]


def format_result(r: DiffResult, *, given: bool = True) -> str:
    """The readable summary: outputs first, then the first diverging layer, weights, attention."""
    lines = [
        f"A       {_clean(r.model_a)}",
        f"B       {_clean(r.model_b)}",
        f"inputs  {_clean(r.inputs)}" + ("" if given else "  (no --input given)"),
        "",
        "outputs",
    ]
    if r.outputs:
        rows = [("A", "B", "top-1", "top-5", "max abs", "rel L2", "cosine")]
        for o in r.outputs:
            rows.append(
                (
                    _clean(o.drift.a, 30),
                    _clean(o.drift.b, 30),
                    _pct(o.top1),
                    _pct(o.top5),
                    _num(o.drift.max_abs),
                    _num(o.drift.rel_l2),
                    _num(o.drift.cosine, ".6f"),
                )
            )
        lines += _table(rows, {2, 3, 4, 5, 6})
    else:
        lines.append("  no output of A has a comparable float counterpart in B")
    lines.append("")
    f = r.first_divergence
    if f is None:
        lines.append(f"first diverging layer: none (every compared tensor within relative L2 {r.threshold:g})")
    else:
        lines.append(
            f"first diverging layer: {_clean(f.node, 40)} ({_clean(f.op_type)}), tensor {_clean(f.a, 40)!s} "
            f"(B: {_clean(f.b, 40)}): relative L2 {_num(f.rel_l2)} > {r.threshold:g}"
        )
    by_name = sum(1 for t in r.tensors if t.matched_by == "name")
    un_a = len(r.matching.unmatched_in("A"))
    un_b = len(r.matching.unmatched_in("B"))
    lines.append(
        f"tensors: {len(r.tensors)} compared ({by_name} by name, {len(r.tensors) - by_name} by position); "
        f"unmatched: {un_a} in A, {un_b} in B"
    )
    rows = [("A tensor", "B tensor", "op", "max abs", "rel L2", "cosine", "")]
    for t in r.tensors[:_MAX_TENSOR_ROWS]:
        mark = "<-- first" if f is not None and t.a == f.a else ("!" if t.rel_l2 > r.threshold else "")
        rows.append(
            (
                _clean(t.a, 36),
                _clean(t.b, 36),
                _clean(t.op_type, 18),
                _num(t.max_abs),
                _num(t.rel_l2),
                _num(t.cosine, ".6f"),
                mark,
            )
        )
    if len(rows) > 1:
        lines += _table(rows, {3, 4, 5})
    if len(r.tensors) > _MAX_TENSOR_ROWS:
        lines.append(f"  ... {len(r.tensors) - _MAX_TENSOR_ROWS} more in the JSON")
    for u in r.unmatched[:10]:
        lines.append(f"  unmatched in {u.model}: {_clean(u.tensor, 40)}: {_clean(u.reason, 120)}")
    if len(r.unmatched) > 10:
        lines.append(f"  ... {len(r.unmatched) - 10} more unmatched in the JSON")
    lines += ["", "weights (conv kernels, B - A)"]
    if r.weights:
        rows = [("A node", "B node", "B op", "shape", "max abs", "rel L2", "SNR dB")]
        for w in r.weights:
            rows.append(
                (
                    _clean(w.node_a, 30),
                    _clean(w.node_b, 30),
                    _clean(w.op_b),
                    "x".join(str(d) for d in w.shape),
                    _num(w.max_abs),
                    _num(w.rel_l2),
                    _num(w.snr_db, ".1f"),
                )
            )
        lines += _table(rows, {4, 5, 6})
        notes = sorted({w.note for w in r.weights if w.note and "ConvInteger" in w.note})
        lines += [f"  note: {_clean(n)}" for n in notes]
    else:
        lines.append("  no matched convolutions with constant kernels")
    lines += ["", f"attention ({_clean(r.attention_note)})"]
    for m in r.attention:
        flag = "  <-- looks elsewhere" if math.isfinite(m.mean) and m.mean < r.min_spearman else ""
        layer = f"  layers {_clean(m.layer_a or '', 30)} / {_clean(m.layer_b or '', 30)}" if m.layer_a else ""
        lines.append(
            f"  {m.method:<12} mean Spearman {_num(m.mean, '.3f')}  min {_num(m.min, '.3f')}"
            f"  over {len(m.spearman)} input(s){layer}{flag}"
        )
    lines += ["", "findings" if r.findings else "findings: none"]
    for fi in r.findings:
        lines.append(f"  {fi.severity:<7} {fi.check}: {_clean(fi.message, 220)}")
        if fi.hint:
            lines.append(f"          hint: {_clean(fi.hint, 200)}")
    return "\n".join(lines) + "\n"
