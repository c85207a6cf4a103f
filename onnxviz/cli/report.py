"""Write one self-contained HTML report: overview, layers, kernels and (with inputs) feature maps.

Examples:
  onnxviz report model.onnx -o report.html
  onnxviz report model.onnx --input cat.png --input dog.jpg -o report.html --json report.json
  onnxviz report model.onnx --input x.npy --tensors conv1_out,relu5_out -o report.html
  onnxviz report model.onnx --input cat.png --audit -o report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import load
from .common import (
    Progress,
    add_input_arguments,
    command_line,
    prepare_cli_inputs,
    write_json,
)

if TYPE_CHECKING:
    from ..audit import AuditResult
    from ..inputs import PreparedInputs
    from ..model import Model
    from ..report.featurevis import FeatureVisOptions

__all__ = ["AUTO_MAX_GMACS", "add_arguments", "run"]

#: ``--featurevis auto`` skips the optimizations above this estimated compute (6 s to a minute of
#: the numpy engine on two cores; the defaults on a 224x224 ResNet-50 need about 24,000 GMACs).
AUTO_MAX_GMACS = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    parser.add_argument("--json", metavar="FILE", help="also write the report's numbers as JSON")
    parser.add_argument(
        "--audit", action="store_true",
        help="append the audit (onnxviz audit's checks, on the given inputs or a generated probe set)",
    )
    add_input_arguments(parser)
    fm = parser.add_argument_group("feature maps")
    fm.add_argument(
        "--tensors",
        help="comma-separated tensor names to show, or 'all' for every rank-4 intermediate tensor "
        "(default: every conv/pool stage, after its norm and activation)",
    )
    fm.add_argument("--top-k", type=int, default=16, help="channels shown per feature map (default: 16)")
    at = parser.add_argument_group("attributions")
    at.add_argument(
        "--methods",
        help="comma-separated attribution methods for the report (default: saliency,gradcam,guided_gradcam; "
        "'all' for every method, 'none' to skip)",
    )
    fv = parser.add_argument_group("feature visualization")
    fv.add_argument(
        "--featurevis", choices=["auto", "on", "none"], default="auto",
        help="feature-visualization section: auto (default) runs it when its estimated compute is under "
        f"{AUTO_MAX_GMACS:g} GMACs (small CNNs; the section says when it was skipped), on always, none never",
    )
    fv.add_argument("--featurevis-layers", metavar="A,B", help="tensors to visualize (default: 3 conv/activation outputs spread across depth)")
    fv.add_argument("--featurevis-channels", type=int, default=8, metavar="N", help="channels per layer (default 8)")
    fv.add_argument("--featurevis-steps", type=int, default=128, metavar="N", help="optimization steps (default 128)")
    fv.add_argument("--featurevis-size", type=int, default=64, metavar="S", help="image size for models with dynamic spatial dims (default 64)")


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


def _featurevis(args: argparse.Namespace) -> FeatureVisOptions | None:
    from ..errors import InputError
    from ..report.featurevis import FeatureVisOptions

    if getattr(args, "featurevis", "auto") == "none":
        return None
    layers = getattr(args, "featurevis_layers", None)
    mode = getattr(args, "featurevis", "auto")
    opts = FeatureVisOptions(
        max_gmacs=AUTO_MAX_GMACS if mode == "auto" else None,
        layers=tuple(t.strip() for t in layers.split(",") if t.strip()) if layers else None,
        channels=getattr(args, "featurevis_channels", 8),
        steps=getattr(args, "featurevis_steps", 128),
        size=getattr(args, "featurevis_size", 64),
    )
    if opts.channels < 1 or opts.steps < 1 or opts.size < 8:
        raise InputError("--featurevis-channels and --featurevis-steps must be >= 1, --featurevis-size >= 8")
    return opts


def _audit(
    model: Model, prepared: PreparedInputs | None, args: argparse.Namespace, progress: Progress
) -> AuditResult | None:
    if not getattr(args, "audit", False):
        return None
    from ..audit import audit

    progress("auditing" + (" with the given inputs" if prepared is not None else " with a generated probe set"))
    return audit(model, prepared, raise_errors=bool(getattr(args, "debug", False)))


def run(args: argparse.Namespace, *, command: str | None = None) -> int:
    from ..report.data import build_report
    from ..report.html import write_html

    progress = Progress(args.quiet)
    progress(f"loading {args.model}")
    model = load(args.model)
    prepared = prepare_cli_inputs(model, args)
    if prepared is not None:
        progress(f"prepared {len(prepared.sources)} input(s): batch of {prepared.batch_size}")
    tensors: list[str] | None = None
    if args.tensors == "all":
        tensors = [t for t in model.graph.tensor_names() if t not in model.graph.input_names]
    elif args.tensors:
        tensors = [t.strip() for t in args.tensors.split(",") if t.strip()]
    progress("computing layer table, kernels" + (" and feature maps" if prepared else "")
             + ("" if getattr(args, "featurevis", "auto") == "none" else ", feature visualization"))
    data = build_report(
        model,
        inputs=prepared,
        feature_tensors=tensors,
        top_k=args.top_k,
        command=command or command_line(),
        methods=_methods(getattr(args, "methods", None)),
        featurevis=_featurevis(args),
        audit=_audit(model, prepared, args, progress),
    )
    out = Path(args.output)
    write_html(data, out)
    progress(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    if args.json:
        write_json(data.to_json(), Path(args.json))
        progress(f"wrote {args.json}")
    return 0
