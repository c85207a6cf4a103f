"""``onnxviz`` command line: ``main(argv) -> int``; one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from ..errors import OnnxvizError
from . import audit, demo, diff, dream, explain, inspect, report, topk, visualize

__all__ = ["main", "build_parser"]

#: Subcommands in help order; each module has ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, ModuleType] = {
    "inspect": inspect,
    "report": report,
    "explain": explain,
    "visualize": visualize,
    "dream": dream,
    "topk": topk,
    "audit": audit,
    "diff": diff,
    "demo": demo,
}

DESCRIPTION = """\
See what a CNN exported to ONNX has learned and why it decides as it does.

Start with:
  onnxviz demo                                   report on the bundled demo model
  onnxviz inspect model.onnx                     layers, shapes, parameters, compute
  onnxviz report model.onnx --input cat.png -o report.html
  onnxviz explain model.onnx --input cat.png --method gradcam -o cam.png
  onnxviz visualize model.onnx --layer TENSOR --channels 0-15 -o gallery.png
  onnxviz dream model.onnx photo.jpg -o dream.png
  onnxviz topk model.onnx --layer TENSOR --images photos/ -o topk.png
  onnxviz audit model.onnx --fail-on error   (exit status 1 when a finding is that severe)
  onnxviz diff fp32.onnx int8.onnx --input cat.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxviz", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"onnxviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else name
        p = sub.add_parser(
            name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.run(args))
    except OnnxvizError as e:
        if args.debug:
            raise
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
