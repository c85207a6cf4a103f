"""Activation checks over a batch: dead ReLU channels, saturated sigmoid/tanh units, the first
node that produces NaN/Inf, activation ranges (for quantization) and float16 overflow.

One tapped onnxruntime pass over every input-dependent tensor, in topological order and in
chunks that stay under the memory budget, feeds all of them (:func:`activation_scan`); only
small per-tensor summaries are kept. Without given inputs a seeded probe set of random images
in the model's value range stands in, and every finding says which was used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..inputs import probe_inputs as make_probe
from ..model import Model
from .findings import Finding
from .runner import AuditContext, AuditSettings, Check

__all__ = [
    "CHECKS",
    "TensorSummary",
    "probe_inputs",
    "activation_scan",
    "tap_plan",
    "ActivationScan",
    "SATURATION_SHARE",
    "SATURATION_EPS",
]

#: A unit is saturated when more than this share of its values lie within SATURATION_EPS of a bound.
SATURATION_SHARE = 0.99
SATURATION_EPS = 1e-3
#: Bounds of the saturating activations.
_SATURATING = {"Sigmoid": (0.0, 1.0), "HardSigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}
_FLOAT16_MAX = 65504.0
_PERCENTILE_SAMPLE = 1 << 16
_MAX_LISTED = 32


# ------------------------------------------------------------------------------------- inputs
def probe_inputs(model: Model, settings: AuditSettings) -> tuple[dict[str, np.ndarray], str]:
    """The audit's probe set (:func:`onnxviz.inputs.probe_inputs`: ``probe_samples`` images of
    16-pixel blobs and noise seeded by ``seed``, spatial dims ``probe_size`` where open)."""
    return make_probe(model.inputs, settings.probe_samples, seed=settings.seed, size=settings.probe_size, blob=16)


# ------------------------------------------------------------------------------------ tapping
def _tap_sizes(ctx: AuditContext, names: Sequence[str]) -> list[int]:
    """Bytes of each tensor in ``names`` for the first batch (a 32nd of the budget when unknown)."""
    model = ctx.model
    first = ctx.batches[0]
    infos = ctx.shared("shapes", lambda: model.infer_shapes({k: v.shape for k, v in first.items()}))
    unknown = max(1, ctx.settings.budget_bytes // 32)
    sizes = []
    for name in names:
        info = infos.get(name)
        if info is not None and info.shape is not None and all(isinstance(d, int) for d in info.shape):
            sizes.append(int(np.prod(info.shape, dtype=np.int64)) * max(1, info.dtype.itemsize))
        else:
            sizes.append(unknown)
    return sizes


def tap_plan(ctx: AuditContext, names: Sequence[str], samples: int | None = None) -> list[list[str]]:
    """``names`` in chunks whose tapped size for one batch (of ``samples`` samples when given)
    stays under the memory budget."""
    sizes = _tap_sizes(ctx, names)
    if samples is not None:
        sizes = [s * samples // max(1, _samples(ctx.batches[0])) for s in sizes]
    chunks: list[list[str]] = [[]]
    used = 0
    for name, size in zip(names, sizes):
        if chunks[-1] and used + size > ctx.settings.budget_bytes:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += size
    return [c for c in chunks if c]


def _samples(batch: Mapping[str, np.ndarray]) -> int:
    first = next(iter(batch.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _cut(batch: Mapping[str, np.ndarray], step: int) -> list[dict[str, np.ndarray]]:
    """``batch`` in pieces of at most ``step`` samples (whole when any input has no batch axis)."""
    n = _samples(batch)
    if n <= step or any(v.ndim == 0 or v.shape[0] != n for v in batch.values()):
        return [dict(batch)]
    return [{k: v[i : i + step] for k, v in batch.items()} for i in range(0, n, step)]


def _join(values: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(values) if values[0].ndim else values[0]


Runner = Callable[[Mapping[str, np.ndarray], Sequence[str]], Mapping[str, np.ndarray]]


# -------------------------------------------------------------------------------------- scan
@dataclass(frozen=True)
class TensorSummary:
    """What the activation checks keep of one float tensor over all the batches.

    ``p999`` is the 99.9th percentile of ``|x|`` (from a strided sample of at most 2^16 values
    on big tensors); ``channel_max`` is the max over batch and space per channel (axis 1) for
    ReLU outputs; ``saturated_share`` the share of values within 1e-3 of a bound per channel for
    saturating activations.
    """

    name: str
    node: str
    op_type: str
    shape: tuple[int, ...]
    minimum: float
    maximum: float
    p999: float
    nonfinite: int
    nan: int
    channel_max: np.ndarray | None
    saturated_share: np.ndarray | None


@dataclass(frozen=True)
class ActivationScan:
    """The summaries in topological order, and the graph outputs of each batch (optimized
    onnxruntime), which the runtime checks reuse instead of running the model again."""

    summaries: tuple[TensorSummary, ...]
    outputs: tuple[dict[str, np.ndarray], ...]


class _Accumulator:
    """Running summary of one tensor over batches (only small arrays are kept)."""

    def __init__(self, name: str, op: str, node: str, kind: str | None, bounds: tuple[float, float] | None, sample: int) -> None:
        self.name, self.op, self.node, self.kind, self.bounds, self.sample = name, op, node, kind, bounds, sample
        self.minimum, self.maximum = np.inf, -np.inf
        self.nonfinite = self.nan = 0
        self.batch = 0
        self.shape: tuple[int, ...] = ()
        self.samples: list[np.ndarray] = []
        self.channel_max: np.ndarray | None = None
        self.near: np.ndarray | None = None
        self.count = 0

    def add(self, v: np.ndarray) -> None:
        lo, hi = float(v.min()), float(v.max())  # NaN propagates into both, +-inf shows
        if math.isfinite(lo) and math.isfinite(hi):
            vf = v  # the common case: two passes, no mask
        else:
            finite = np.isfinite(v)
            bad = int(v.size - np.count_nonzero(finite))
            vf = np.where(finite, v, 0)
            self.nonfinite += bad
            self.nan += int(np.count_nonzero(np.isnan(v)))
            lo, hi = float(vf.min()), float(vf.max())
        self.minimum = min(self.minimum, lo)
        self.maximum = max(self.maximum, hi)
        self.batch += int(v.shape[0]) if v.ndim else 1
        self.shape = tuple(int(d) for d in v.shape)
        flat = vf.reshape(-1)
        if flat.size > self.sample:
            flat = flat[:: flat.size // self.sample + 1]
        self.samples.append(np.abs(flat))
        if self.kind is None or v.ndim < 2:
            return
        axes = (0,) + tuple(range(2, v.ndim))
        if self.kind == "relu":
            m = vf.max(axis=axes)
            self.channel_max = m if self.channel_max is None or self.channel_max.shape != m.shape else np.maximum(self.channel_max, m)
        else:
            lo, hi = self.bounds  # type: ignore[misc]
            near = ((np.abs(vf - lo) <= SATURATION_EPS) | (np.abs(vf - hi) <= SATURATION_EPS)).sum(axis=axes)
            self.near = near if self.near is None or self.near.shape != near.shape else self.near + near
            self.count += int(v.size // v.shape[1])

    def summary(self) -> TensorSummary:
        sample = np.concatenate(self.samples)
        shape = ((self.batch,) + self.shape[1:]) if self.shape else ()
        return TensorSummary(
            name=self.name,
            node=self.node,
            op_type=self.op,
            shape=shape,
            minimum=self.minimum,
            maximum=self.maximum,
            p999=float(np.percentile(sample, 99.9)) if sample.size else 0.0,
            nonfinite=self.nonfinite,
            nan=self.nan,
            channel_max=self.channel_max,
            saturated_share=None if self.near is None else self.near / max(1, self.count),
        )


def activation_scan(ctx: AuditContext) -> ActivationScan:
    """Summaries of every input-dependent float tensor, batch by batch and chunk by chunk
    (a shared pass: it runs once per audit)."""

    def scan() -> ActivationScan:
        ctx.require_ort()
        g = ctx.model.graph
        names = [n for n in g.tensor_names() if n not in g.input_names]
        # Every tensor of a pass is tapped at once when the budget allows: each extra chunk
        # costs a whole forward, so batches are cut to the samples whose tensors fit in one.
        per_sample = sum(_tap_sizes(ctx, names)) // max(1, _samples(ctx.batches[0]))
        step = max(1, ctx.settings.budget_bytes // max(1, per_sample))
        batches = [part for b in ctx.batches for part in _cut(b, step)]
        per_batch_sample = max(1024, _PERCENTILE_SAMPLE // len(batches))
        acc: dict[str, _Accumulator] = {}
        parts: list[dict[str, np.ndarray]] = []
        for batch in batches:
            outs: dict[str, np.ndarray] = {}
            for chunk in tap_plan(ctx, names, _samples(batch)):
                values = ctx.runnable.ort.run(batch, chunk)
                for name in g.output_names:
                    outs.setdefault(name, values[name])
                for name in chunk:
                    v = np.asarray(values[name])
                    if v.dtype.kind != "f" or v.size == 0:
                        continue
                    if name not in acc:
                        node = g.producer.get(name)
                        op = "" if node is None else node.op_type
                        first_out = node is not None and node.outputs[0] == name
                        kind = ("relu" if op == "Relu" else "saturating" if op in _SATURATING else None) if first_out else None
                        acc[name] = _Accumulator(name, op, "" if node is None else node.label, kind, _SATURATING.get(op), per_batch_sample)
                    acc[name].add(v)
                del values
            parts.append(outs)
        outputs: list[dict[str, np.ndarray]] = []
        for b in ctx.batches:  # the graph outputs again per audit batch, as the runtime checks split them
            pieces = [parts.pop(0) for _ in _cut(b, step)]
            outputs.append(pieces[0] if len(pieces) == 1 else {k: _join([p[k] for p in pieces]) for k in pieces[0]})
        return ActivationScan(tuple(acc[n].summary() for n in names if n in acc), tuple(outputs))

    return ctx.shared("activation-scan", scan)


def _with_inputs(ctx: AuditContext, evidence: dict[str, object]) -> dict[str, object]:
    evidence["inputs"] = ctx.inputs_description
    return evidence


# ------------------------------------------------------------------------------------ checks
class DeadChannelsCheck(Check):
    """ReLU output channels that never activate: max over the batch and space is 0 (warning).

    A dead channel contributes nothing downstream for these inputs; many of them mean dying
    ReLUs in training or channels pruned by hand (a bias far below the pre-activation range).
    """

    id = "activations.dead-channels"
    needs_inputs = True

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        g = ctx.model.graph
        for s in activation_scan(ctx).summaries:
            if s.channel_max is None:
                continue
            dead = np.flatnonzero(s.channel_max <= 0)
            if dead.size == 0:
                continue
            node = g.producer[s.name]
            before = g.producer.get(node.inputs[0])
            found.append(
                self.finding(
                    "warning",
                    f"{dead.size} of {s.channel_max.size} channels of Relu {s.node!r} never activate on "
                    f"{ctx.inputs_description}: {dead[:_MAX_LISTED].tolist()}",
                    node=s.node,
                    tensor=s.name,
                    evidence=_with_inputs(
                        ctx,
                        {
                            "channels": dead[:64].tolist(),
                            "count": int(dead.size),
                            "total": int(s.channel_max.size),
                            "after": None if before is None else before.label,
                        },
                    ),
                    hint="check the filters and biases feeding these channels (weights.dead-filters), "
                    "or audit with representative inputs",
                )
            )
        return found


class SaturationCheck(Check):
    """Sigmoid / Tanh / HardSigmoid channels with more than 99% of their values within 1e-3 of
    a bound (warning).

    Saturated units pass almost no gradient and carry almost no information: a sign of
    exploding pre-activations or of a wrong input range.
    """

    id = "activations.saturated"
    needs_inputs = True

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        for s in activation_scan(ctx).summaries:
            if s.saturated_share is None:
                continue
            units = np.flatnonzero(s.saturated_share > SATURATION_SHARE)
            if units.size == 0:
                continue
            found.append(
                self.finding(
                    "warning",
                    f"{units.size} of {s.saturated_share.size} channels of {s.op_type} {s.node!r} are saturated "
                    f"(> {SATURATION_SHARE:.0%} of values within {SATURATION_EPS:g} of the bounds) on {ctx.inputs_description}",
                    node=s.node,
                    tensor=s.name,
                    evidence=_with_inputs(
                        ctx,
                        {
                            "channels": units[:64].tolist(),
                            "count": int(units.size),
                            "total": int(s.saturated_share.size),
                            "bounds": list(_SATURATING[s.op_type]),
                            "max_share": float(s.saturated_share.max()),
                        },
                    ),
                    hint="check the input range/normalisation; saturated units learn nothing",
                )
            )
        return found


class NonFiniteActivationsCheck(Check):
    """The first node, in topological order, whose output holds NaN or Inf for finite inputs
    (error): the origin of a numerical failure, not the many tensors it spreads to."""

    id = "activations.nonfinite"
    needs_inputs = True

    def run(self, ctx: AuditContext) -> list[Finding]:
        scan = activation_scan(ctx).summaries
        bad = [s for s in scan if s.nonfinite]
        if not bad:
            return []
        first = bad[0]
        node = ctx.model.graph.producer.get(first.name)
        return [
            self.finding(
                "error",
                f"node {first.node!r} ({first.op_type}) is the first to produce NaN/Inf "
                f"({first.nonfinite} value(s) in {first.name!r}) on {ctx.inputs_description}",
                node=first.node,
                tensor=first.name,
                evidence=_with_inputs(
                    ctx,
                    {
                        "nonfinite": first.nonfinite,
                        "nan": first.nan,
                        "size": int(np.prod(first.shape)),
                        "node_inputs": [] if node is None else [i for i in node.inputs if i][:4],
                        "tensors_affected": len(bad),
                    },
                ),
                hint="look at this node's inputs and weights (overflow, log/sqrt/div of a non-positive value)",
            )
        ]


class RangesCheck(Check):
    """Activation ranges of every tensor (info): min, max and 99.9th percentile of |x|, in
    topological order; the numbers a quantization calibration needs, and where outliers are."""

    id = "activations.ranges"
    needs_inputs = True

    def run(self, ctx: AuditContext) -> list[Finding]:
        scan = [s for s in activation_scan(ctx).summaries if not s.nonfinite]
        if not scan:
            return []
        widest = max(scan, key=lambda s: max(abs(s.minimum), abs(s.maximum)))
        ratio = [(s.name, max(abs(s.minimum), abs(s.maximum)) / s.p999) for s in scan if s.p999 > 0]
        outlier = max(ratio, key=lambda t: t[1]) if ratio else None
        message = (
            f"activation ranges of {len(scan)} tensors on {ctx.inputs_description}; widest {widest.name!r} "
            f"[{widest.minimum:.4g}, {widest.maximum:.4g}]"
        )
        if outlier is not None:
            message += f"; largest max/p99.9 ratio {outlier[1]:.3g} at {outlier[0]!r}"
        return [
            self.finding(
                "info",
                message,
                node=widest.node,
                tensor=widest.name,
                evidence=_with_inputs(
                    ctx,
                    {
                        "tensors": {s.name: [round(s.minimum, 6), round(s.maximum, 6), round(s.p999, 6)] for s in scan},
                        "columns": ["min", "max", "p99.9 of |x|"],
                    },
                ),
            )
        ]


class Float16ActivationsCheck(Check):
    """Activations beyond the float16 range, |x| > 65504 (warning): a float16 deployment turns
    them into Inf and everything downstream into NaN."""

    id = "activations.float16-overflow"
    needs_inputs = True

    def run(self, ctx: AuditContext) -> list[Finding]:
        over = [s for s in activation_scan(ctx).summaries if max(abs(s.minimum), abs(s.maximum)) > _FLOAT16_MAX]
        if not over:
            return []
        return [
            self.finding(
                "warning",
                f"{len(over)} tensor(s) exceed the float16 range on {ctx.inputs_description}, first {over[0].name!r} "
                f"(max |x| {max(abs(over[0].minimum), abs(over[0].maximum)):.4g})",
                node=over[0].node,
                tensor=over[0].name,
                evidence=_with_inputs(
                    ctx,
                    {
                        "tensors": [s.name for s in over[:16]],
                        "max_abs": [max(abs(s.minimum), abs(s.maximum)) for s in over[:16]],
                        "count": len(over),
                    },
                ),
                hint="keep these layers in float32 when converting to float16, or rescale the weights",
            )
        ]


CHECKS: tuple[type[Check], ...] = (
    DeadChannelsCheck,
    SaturationCheck,
    NonFiniteActivationsCheck,
    RangesCheck,
    Float16ActivationsCheck,
)
