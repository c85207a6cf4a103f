"""The shared interface of attribution methods: one class per method, results as data.

A method is configured once (its parameters are constructor arguments with the defaults the
reference libraries' users know, see ``shared/METHODS.md``) and applied with
:meth:`Method.explain`, which returns a frozen :class:`Explanation`. Randomness comes from an
explicit ``rng`` argument only.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError, TargetError
from ..imaging import resize
from ..inputs import Layout, detect_layout
from ..model import Model
from ..targets import Target, resolve_classes

__all__ = [
    "is_probability",
    "Explanation",
    "Method",
    "TargetSpec",
    "resolve_target",
    "channel_axis",
    "reduce_channels",
    "upsample_maps",
    "chunks",
    # helpers of the CAM and perturbation families
    "scale_maps",
    "bilinear_matrix",
    "image_size",
    "take_rows",
    "fixed_batch",
    "run_output",
]


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target: the output tensor, each sample's class (or -1) and a seed builder.

    ``cotangent`` is set for explicit targets (an element or region of an output, e.g. one box's
    score or a mask region); otherwise ``classes`` holds one index per sample.
    """

    output: str
    classes: np.ndarray
    cotangent: np.ndarray | None = None
    #: The output's shape without the batch axis (known once the target is resolved), so that
    #: seeds can be built as arrays without evaluating the output first.
    sample_shape: tuple[int, ...] | None = None
    #: The output's values on the original inputs, as onnxruntime computed them when the target
    #: was resolved (float32 methods take their scores from it instead of another forward pass).
    values: np.ndarray | None = field(default=None, repr=False, compare=False)

    def seed_array(self, rows: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray | None:
        """The seed for a batch made of the original samples ``rows``, or None if the shape is unknown."""
        if self.sample_shape is None:
            return None
        return self.seed(np.zeros((len(rows), *self.sample_shape), dtype=dtype), rows)

    def seed(self, value: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The cotangent for ``value`` (a batch whose sample ``i`` belongs to original sample ``rows[i]``)."""
        rows = np.arange(value.shape[0]) if rows is None else rows
        if self.cotangent is not None:
            return self.cotangent[rows].astype(value.dtype, copy=False)
        seed = np.zeros(value.shape, dtype=value.dtype)
        seed[np.arange(value.shape[0]), self.classes[rows]] = 1
        return seed

    def probability(self, value: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The softmax probability of each sample's class (logits summed over any spatial axes)."""
        rows = np.arange(value.shape[0]) if rows is None else rows
        logits = value.reshape(value.shape[0], value.shape[1], -1).sum(axis=2).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True))[np.arange(len(rows)), self.classes[rows]]

    def score(self, value: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The target score of each sample of ``value`` (the objective per sample)."""
        s = self.seed(value, rows) * value
        return s.reshape(value.shape[0], -1).sum(axis=1)


def resolve_target(
    model: Model, feeds: Mapping[str, np.ndarray], target: Target, output: str | None = None
) -> tuple[TargetSpec, np.ndarray]:
    """Resolve ``target`` on the original inputs; returns the spec and the output values."""
    out = output or model.outputs[0].name
    if out not in model.graph.dynamic:
        raise TargetError(
            f"no output or tensor named {out!r}",
            hint=f"the model's outputs are {list(model.graph.output_names)}",
        )
    value = model.run(feeds, [out])[out]
    if isinstance(target, np.ndarray) and target.ndim == value.ndim and target.ndim > 1:
        if target.shape != value.shape:
            raise TargetError(
                f"target cotangent shape {list(target.shape)} does not match output {out!r} {list(value.shape)}",
                hint="give an array of the output's shape (zeros except the element or region to explain)",
            )
        return (
            TargetSpec(out, np.full(value.shape[0], -1, np.int64), target.astype(np.float64), value.shape[1:], value),
            value,
        )
    return TargetSpec(out, resolve_classes(value, target, name=out), None, value.shape[1:], value), value


def is_probability(value: np.ndarray) -> bool:
    """Whether an output already holds class probabilities (non-negative, rows summing to 1)."""
    flat = value.reshape(value.shape[0], value.shape[1], -1).sum(axis=2)
    return bool(np.all(flat >= 0) and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3))


def channel_axis(model: Model, input_name: str | None = None) -> int:
    """The channel axis of an image input (1 for NCHW, 3 for NHWC); 1 when not an image."""
    layout: Layout | None = detect_layout(model.input(input_name))
    return 3 if layout == "NHWC" else 1


def reduce_channels(attr: np.ndarray, axis: int, how: str) -> np.ndarray:
    """(N, C, H, W) or (N, H, W, C) attributions -> (N, H, W) maps.

    ``how``: ``"max_abs"`` (Simonyan saliency), ``"sum"`` (signed, Captum's default for display),
    ``"sum_abs"``, ``"mean"``.
    """
    if attr.ndim != 4:
        raise InputError(f"expected a 4-D image attribution, got shape {list(attr.shape)}")
    if how == "max_abs":
        return np.abs(attr).max(axis=axis)
    if how == "sum":
        return attr.sum(axis=axis)
    if how == "sum_abs":
        return np.abs(attr).sum(axis=axis)
    if how == "mean":
        return attr.mean(axis=axis)
    raise InputError(f"unknown channel reduction {how!r}", hint="use max_abs, sum, sum_abs or mean")


def upsample_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) maps -> (N, H, W) by bilinear interpolation (align-corners false, as cv2/PIL)."""
    if maps.shape[1:] == tuple(size):
        return maps
    return np.stack([resize(m.astype(np.float64), size, method="bilinear") for m in maps]).astype(maps.dtype)


def chunks(n: int, size: int, *, balanced: bool = False) -> Iterator[slice]:
    """Slices covering ``range(n)`` in pieces of at most ``size`` (bounds memory of batched work).

    ``balanced``: pieces of sizes differing by at most one (50 rows by 16 not as 16, 16, 16, 2,
    whose small last pass runs at a poor rate per row), and all of one size when up to half as
    many pieces again as the fewest allow it (50 rows by 16: five of 10 rather than 13, 13, 12,
    12): every batch size is a compiled backward of its own (1.5 s to build for ResNet-50),
    while the rate per row hardly changes between batches of 8 and 16."""
    size = max(1, int(size))
    if balanced and n > size:
        fewest = -(-n // size)
        count = next((k for k in range(fewest, fewest + max(2, fewest // 2) + 1) if n % k == 0), fewest)
        base, extra = divmod(n, count)
        start = 0
        for i in range(count):
            stop = start + base + (i < extra)
            yield slice(start, stop)
            start = stop
        return
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def scale_maps(maps: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Min-max scale each ``(H, W)`` map of a batch to [0, 1] (pytorch-grad-cam's
    ``scale_cam_image``: ``(m - min) / (max - min + eps)``); a constant map becomes 0."""
    flat = maps.reshape(maps.shape[0], -1)
    shifted = flat - flat.min(axis=1, keepdims=True)
    return (shifted / (shifted.max(axis=1, keepdims=True) + eps)).reshape(maps.shape)


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of 1-D bilinear interpolation used by :func:`upsample_maps`
    (half-pixel centres, clamped borders), so that a batch of maps can be upsampled at once as
    ``R_h @ m @ R_w.T``."""
    return resize(np.eye(n_in), (n_out, n_in), method="bilinear")


def image_size(model: Model, feeds: Mapping[str, np.ndarray], input_name: str) -> tuple[int, int]:
    """(H, W) of an image input, read with the input's layout (NCHW or NHWC)."""
    x = feeds[input_name]
    if x.ndim != 4:
        raise InputError(
            f"input {input_name!r} has shape {list(x.shape)}; image methods need a rank-4 image input",
            hint="choose the image input with input_name=..., or use a method for non-image inputs",
        )
    axis = channel_axis(model, input_name)
    return (int(x.shape[1]), int(x.shape[2])) if axis == 3 else (int(x.shape[2]), int(x.shape[3]))


def take_rows(feeds: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every input's samples ``rows`` (with repetition): the other inputs of a perturbed batch."""
    return {k: np.take(v, rows, axis=0) for k, v in feeds.items()}


def fixed_batch(model: Model) -> int | None:
    """The batch size a model's passes must be split into (e.g. 1 in old model-zoo exports whose
    batch axis could not be freed, :attr:`Model.batch_limit`), else ``None``."""
    return model.batch_limit


def run_output(model: Model, feeds: Mapping[str, np.ndarray], output: str) -> np.ndarray:
    """``output`` for a stacked batch, in onnxruntime; a model with a fixed batch size is run in
    pieces of that size (the last one padded by repeating its last sample)."""
    n = next(iter(feeds.values())).shape[0]
    k = fixed_batch(model)
    if k is None or k == n:
        return model.run(feeds, [output])[output]
    parts = []
    for s in chunks(n, k):
        rows = np.arange(s.start, s.start + k).clip(max=s.stop - 1)
        parts.append(model.run(take_rows(feeds, rows), [output])[output][: s.stop - s.start])
    return np.concatenate(parts)


@dataclass(frozen=True)
class Explanation:
    """The result of one attribution method on a batch.

    ``attributions`` has the input's shape for pixel methods, or ``(N, h, w)`` at the layer's
    resolution for CAMs (before upsampling); ``maps`` is always ``(N, H, W)`` at the input's
    spatial size, ready to display. ``variant`` names the exact formula implemented. ``trust``
    holds the method's own figures (e.g. the IG completeness error) and any evaluation added
    later (deletion/insertion AUC, randomization test).
    """

    method: str
    variant: str
    attributions: np.ndarray
    maps: np.ndarray
    signed: bool
    output: str
    targets: np.ndarray
    scores: np.ndarray
    input_name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    layer: str | None = None
    trust: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Everything but the arrays (those go to .npy files)."""
        return {
            "method": self.method,
            "variant": self.variant,
            "signed": self.signed,
            "output": self.output,
            "targets": [int(t) for t in self.targets],
            "scores": [float(s) for s in self.scores],
            "input": self.input_name,
            "layer": self.layer,
            "params": {k: _plain(v) for k, v in self.params.items()},
            "trust": {k: _plain(v) for k, v in self.trust.items()},
            "attribution_shape": list(self.attributions.shape),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Method(abc.ABC):
    """One attribution method. Subclasses set ``name``, ``needs_gradients`` and implement
    :meth:`_explain`; the base resolves inputs and the target once."""

    name: ClassVar[str]
    needs_gradients: ClassVar[bool] = True

    @property
    def params(self) -> dict[str, Any]:
        """The method's parameters as given to the constructor (recorded in every result)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def explain(
        self,
        model: Model,
        inputs: np.ndarray | Mapping[str, np.ndarray],
        target: Target = None,
        *,
        output: str | None = None,
        input_name: str | None = None,
        rng: np.random.Generator | None = None,
    ) -> Explanation:
        """Explain ``target`` (default: each sample's top class) of ``output`` for a batch.

        ``inputs`` is never modified. ``rng`` drives every random choice (noise, masks); without
        it a fixed seed of 0 is used so results are reproducible.
        """
        feeds = model.feeds(inputs)
        name = input_name or model.inputs[0].name
        if name not in feeds:
            raise InputError(f"model has no input {name!r}", hint=f"inputs: {list(feeds)}")
        spec, _ = resolve_target(model, feeds, target, output)
        return self._explain(model, feeds, name, spec, rng if rng is not None else np.random.default_rng(0))

    @abc.abstractmethod
    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation: ...


GradFn = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]
