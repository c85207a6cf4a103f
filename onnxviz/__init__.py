"""onnxviz: see what a CNN exported to ONNX has learned and why it decides as it does."""

from __future__ import annotations

from .errors import (
    BackendUnavailableError,
    ExecutionError,
    InputError,
    ModelLoadError,
    OnnxvizError,
    ReportError,
    TargetError,
    UnsupportedOpError,
)
from .maximize import visualize
from .methods.registry import explain
from .model import Model, load

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load",
    "explain",
    "visualize",
    "Model",
    "OnnxvizError",
    "ModelLoadError",
    "UnsupportedOpError",
    "InputError",
    "TargetError",
    "BackendUnavailableError",
    "ReportError",
    "ExecutionError",
]
