"""One family of errors for everything onnxviz refuses to do.

Every error carries a message that names the file, node, tensor or shape it concerns, and an
optional *hint* that tells the user what to do next. The CLI prints ``error:`` and ``hint:``
lines for these and nothing else; any other exception is a bug.
"""

from __future__ import annotations

__all__ = [
    "OnnxvizError",
    "ModelLoadError",
    "UnsupportedOpError",
    "InputError",
    "TargetError",
    "BackendUnavailableError",
    "ReportError",
    "ExecutionError",
]


class OnnxvizError(Exception):
    """Base class: a user-facing failure with a message and an optional hint."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class ModelLoadError(OnnxvizError):
    """The file is not a loadable, valid ONNX model (or its external data is missing/unsafe)."""


class UnsupportedOpError(OnnxvizError):
    """An op (at the model's opset) that the numpy engine cannot run or differentiate."""

    def __init__(
        self,
        op_type: str,
        node: str,
        opset: int,
        *,
        reason: str = "is not supported by the numpy gradient engine",
        hint: str | None = None,
    ) -> None:
        self.op_type = op_type
        self.node = node
        self.opset = opset
        message = f"op {op_type!r} (opset {opset}) at node {node!r} {reason}"
        if hint is None:
            hint = (
                "forward-only features (kernels, feature maps, occlusion, RISE) still work "
                "through onnxruntime; gradient-based methods need every op on the path"
            )
        super().__init__(message, hint=hint)


class InputError(OnnxvizError):
    """An input (image, array, shape, value) that does not fit the model."""


class TargetError(OnnxvizError):
    """A target (class index, output, tensor name) that does not exist or does not fit."""


class BackendUnavailableError(OnnxvizError):
    """An optional backend (e.g. PyTorch) that is not installed or cannot run this model."""


class ReportError(OnnxvizError):
    """A report that cannot be rendered or written."""


class ExecutionError(OnnxvizError):
    """A runtime (onnxruntime or the numpy engine) failed to run the model on the given inputs."""
