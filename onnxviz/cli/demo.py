"""Run the main job on the bundled demo model and images, and write a report.

The demo model is a small CNN trained by scripts/train_demo.py on a synthetic data set of
shapes and stripes (see onnxviz/data/demo/README.md); it needs nothing but onnxviz.

Example:
  onnxviz demo -o demo.html
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from ..errors import ModelLoadError
from . import report

__all__ = ["add_arguments", "run", "demo_dir"]


def demo_dir() -> Path:
    """The folder of the bundled demo model (installed as package data of onnxviz)."""
    return Path(str(resources.files("onnxviz.data") / "demo"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="onnxviz-demo.html", help="HTML file to write")
    parser.add_argument("--json", metavar="FILE", help="also write the report's numbers as JSON")


def run(args: argparse.Namespace) -> int:
    folder = demo_dir()
    model_path = folder / "model.onnx"
    if not model_path.is_file():
        raise ModelLoadError(
            f"the bundled demo model is missing ({model_path})",
            hint="reinstall onnxviz; in a checkout, run scripts/train_demo.py --out onnxviz/data/demo",
        )
    info = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    images = sorted(str(p) for p in folder.glob("*.png"))
    preprocess = info.get("input", {})
    report_args = argparse.Namespace(
        model=str(model_path),
        output=args.output,
        json=args.json,
        input=images,
        preset=preprocess.get("preset", "imagenet"),
        mean=None,
        std=None,
        size=None,
        layout=None,
        tensors=None,
        top_k=16,
        quiet=args.quiet,
        debug=args.debug,
    )
    return report.run(report_args, command="onnxviz demo -o " + str(args.output))
