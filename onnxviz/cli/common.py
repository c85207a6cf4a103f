"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..files import atomic_write

if TYPE_CHECKING:
    from ..inputs import PreparedInputs
    from ..model import Model

__all__ = [
    "parse_shape",
    "parse_input_shapes",
    "Progress",
    "command_line",
    "add_input_arguments",
    "prepare_cli_inputs",
    "write_json",
]


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x3x224x224`` (or comma-separated) -> (1, 3, 224, 224)."""
    parts = text.replace(",", "x").lower().split("x")
    try:
        dims = tuple(int(p) for p in parts if p.strip())
    except ValueError as e:
        raise InputError(f"bad shape {text!r}", hint="write shapes like 1x3x224x224") from e
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"bad shape {text!r}", hint="write shapes like 1x3x224x224 (positive sizes)")
    return dims


def parse_input_shapes(values: Sequence[str] | None, input_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``--input-shape 1x3x224x224`` (single-input models) or ``--input-shape name=1x3x224x224``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values or ():
        if "=" in value:
            name, _, shape = value.rpartition("=")
            if name not in input_names:
                raise InputError(
                    f"--input-shape names {name!r}, but the model's inputs are {list(input_names)}",
                    hint="use NAME=SHAPE with one of those names",
                )
        else:
            if len(input_names) != 1:
                raise InputError(
                    f"the model has {len(input_names)} inputs; say which one: --input-shape NAME=SHAPE",
                    hint=f"inputs: {list(input_names)}",
                )
            name, shape = input_names[0], value
        shapes[name] = parse_shape(shape)
    return shapes


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("inputs")
    g.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="FILE",
        help="an image (PNG, JPEG, ...) or .npy array; repeat for a batch. Models with several inputs: NAME=FILE.npy",
    )
    g.add_argument(
        "--preset",
        default=None,
        choices=["imagenet", "0-1", "-1-1", "0-255"],
        help="value range and normalisation of image inputs (default: from the model's metadata, else imagenet)",
    )
    g.add_argument("--mean", type=float, nargs="+", help="per-channel mean subtracted after the range scaling")
    g.add_argument("--std", type=float, nargs="+", help="per-channel std divided after the mean")
    g.add_argument("--size", type=parse_shape, help="image size HxW for models with dynamic spatial dims")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], help="override the detected image layout")


def command_line(argv: Sequence[str] | None = None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return "onnxviz " + " ".join(shlex.quote(a) for a in args)


class Progress:
    """Progress lines on stderr (library code never prints; only the CLI does)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def prepare_cli_inputs(model: Model, args: argparse.Namespace) -> PreparedInputs | None:
    """The ``--input`` files as a :class:`onnxviz.inputs.PreparedInputs`, or None without inputs."""
    from ..inputs import prepare_inputs

    if not args.input:
        return None
    return prepare_inputs(
        model.inputs,
        args.input,
        preset=args.preset or "imagenet",
        mean=args.mean,
        std=args.std,
        size=args.size,
        layout=args.layout,
    )


def write_json(data: object, path: Path) -> None:
    """Write JSON atomically (temp file + rename), so no half-written file is ever left."""
    text = json.dumps(data, indent=1, default=_json_default, allow_nan=False)
    atomic_write(path, (text + "\n").encode("utf-8"), what="JSON")


def _json_default(value: object) -> object:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)
