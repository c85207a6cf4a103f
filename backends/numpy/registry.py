"""The op registry of the numpy engine: forward functions and vector-Jacobian rules.

An op family module registers both directions side by side::

    @forward("Relu", since=6)
    def relu(X: np.ndarray) -> np.ndarray:
        return np.maximum(X, 0)

    @vjp("Relu")
    def relu_vjp(call: Call, gY: np.ndarray | None) -> Grads:
        return (gY * (call.outputs[0] > 0),)

Forward functions take the ONNX inputs positionally under the spec's names (a missing optional
input is ``None``) and the attributes keyword-only with the spec's defaults, so dispatch is
``fn(*inputs, **attrs)``. They return one array, or a tuple with one array per ONNX output.

A VJP gets the recorded :class:`Call` and one cotangent per ONNX output (``None`` for an output
whose cotangent is zero; at least one is not ``None``) and returns one gradient per ONNX input:
``None`` where there is none (shapes, indices, axes) or where ``call.needs[i]`` is false.

Lookup is by op type and the model's opset: the registration with the largest ``since`` that is
not above the opset wins, so opset-specific semantics (e.g. Softmax-1 vs Softmax-13) are separate
functions. A VJP registered with ``since=k`` serves every forward version from ``k`` on.

Ops whose outputs carry no gradient (comparisons, shapes, indices) are listed in
:data:`NON_DIFFERENTIABLE`; an op that is neither there nor has a VJP cannot be differentiated
through, and the engine says so instead of silently returning zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

__all__ = [
    "Call",
    "Grads",
    "ForwardFn",
    "VjpFn",
    "Registry",
    "REGISTRY",
    "forward",
    "vjp",
    "NON_DIFFERENTIABLE",
    "VALUE_BLOCKING",
    "unbroadcast",
]

Array = np.ndarray
Grads = tuple[Optional[Array], ...]
ForwardFn = Callable[..., Union[Array, tuple[Array, ...]]]


@dataclass(frozen=True)
class Call:
    """One recorded application of an op: what a VJP rule may look at.

    ``needs[i]`` says whether the gradient w.r.t. input ``i`` is wanted; a rule may skip the work
    for inputs that are not needed (e.g. the weight gradient of a Conv when only the input
    gradient is asked for) and return ``None`` there.
    """

    op_type: str
    inputs: tuple[Optional[Array], ...]
    outputs: tuple[Array, ...]
    attrs: Mapping[str, Any]
    needs: tuple[bool, ...]
    node: str = ""
    opset: int = 0


VjpFn = Callable[..., Grads]

#: Ops whose outputs are never differentiable (integers, booleans, shapes, indices, random).
NON_DIFFERENTIABLE: frozenset[str] = frozenset(
    {
        "Shape",
        "Size",
        "Equal",
        "Greater",
        "GreaterOrEqual",
        "Less",
        "LessOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "ConstantOfShape",
        "Constant",
        "ArgMax",
        "ArgMin",
        "NonZero",
        "Range",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "EyeLike",
        "IsNaN",
        "IsInf",
        "Sign",
        "Floor",
        "Ceil",
        "Round",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "ConvInteger",
        "QLinearConv",
        "MatMulInteger",
        "QLinearMatMul",
    }
)


#: Non-differentiable ops whose outputs still carry the input's values (quantized, rounded or
#: selected): a zero gradient through them would be silently wrong, so the engine refuses to
#: differentiate along a path that crosses one. (Comparisons and shape ops are not here: their
#: zero gradient is the true one almost everywhere.)
VALUE_BLOCKING: frozenset[str] = frozenset(
    {
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "ConvInteger",
        "QLinearConv",
        "MatMulInteger",
        "QLinearMatMul",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "ArgMax",
        "ArgMin",
    }
)


@dataclass
class _Versions:
    entries: list[tuple[int, Callable[..., Any]]] = field(default_factory=list)

    def add(self, since: int, fn: Callable[..., Any], what: str) -> None:
        if any(s == since for s, _ in self.entries):
            raise ValueError(f"{what} registered twice for since={since}")
        self.entries.append((since, fn))
        self.entries.sort(key=lambda e: e[0])

    def get(self, opset: int) -> Callable[..., Any] | None:
        best = None
        for since, fn in self.entries:
            if since <= opset:
                best = fn
        return best


class Registry:
    """Forward functions and VJP rules by op type and opset version."""

    def __init__(self) -> None:
        self._forward: dict[str, _Versions] = {}
        self._vjp: dict[str, _Versions] = {}

    def add_forward(self, op_type: str, since: int, fn: ForwardFn) -> None:
        self._forward.setdefault(op_type, _Versions()).add(since, fn, f"forward {op_type!r}")

    def add_vjp(self, op_type: str, since: int, fn: VjpFn) -> None:
        if op_type in NON_DIFFERENTIABLE:
            raise ValueError(f"{op_type!r} is NON_DIFFERENTIABLE and cannot have a VJP")
        self._vjp.setdefault(op_type, _Versions()).add(since, fn, f"vjp {op_type!r}")

    def get_forward(self, op_type: str, opset: int) -> ForwardFn | None:
        versions = self._forward.get(op_type)
        return versions.get(opset) if versions else None

    def get_vjp(self, op_type: str, opset: int) -> VjpFn | None:
        versions = self._vjp.get(op_type)
        return versions.get(opset) if versions else None

    def forward_ops(self) -> frozenset[str]:
        return frozenset(self._forward)

    def vjp_ops(self) -> frozenset[str]:
        return frozenset(self._vjp)

    def forward_versions(self, op_type: str) -> tuple[int, ...]:
        versions = self._forward.get(op_type)
        return tuple(s for s, _ in versions.entries) if versions else ()


#: The engine's registry, filled when :mod:`onnxviz.backends.numpy.ops` is imported and read-only
#: afterwards.
REGISTRY = Registry()


def forward(op_type: str, *, since: int = 1) -> Callable[[ForwardFn], ForwardFn]:
    """Register ``fn`` as the forward of ``op_type`` for opsets ``>= since``."""

    def register(fn: ForwardFn) -> ForwardFn:
        REGISTRY.add_forward(op_type, since, fn)
        return fn

    return register


def vjp(op_type: str, *, since: int = 1) -> Callable[[VjpFn], VjpFn]:
    """Register ``fn`` as the VJP rule of ``op_type`` for opsets ``>= since``."""

    def register(fn: VjpFn) -> VjpFn:
        REGISTRY.add_vjp(op_type, since, fn)
        return fn

    return register


def unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``g`` over the axes that numpy broadcasting added or stretched to reach ``g.shape``."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)
