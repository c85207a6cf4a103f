"""Activation checks over a batch: dead ReLU channels, saturated sigmoid/tanh units, the first
node that produces NaN/Inf, activation ranges (for quantization) and float16 overflow.

One unoptimized onnxruntime pass over a copy of the model that also computes small per-tensor
summaries in the graph (:mod:`.summaries`: per-channel max/min/sum, a strided sample,
near-bound counts) feeds all of them (:func:`activation_scan`); a tensor whose summary shows
NaN/Inf, or that cannot be reduced in the graph, is tapped whole in a second, exact pass. The
pass's graph outputs are the runtime checks' unoptimized reference. Without given inputs a
seeded probe set of random images in the model's value range stands in, and every finding
says which was used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..backends.onnxruntime import OrtBackend, make_session
from ..graph import TensorInfo
from ..inputs import probe_inputs as make_probe
from ..model import Model
from .findings import Finding
from .runner import AuditContext, AuditSettings, Check
from .summaries import Reduced, read_probe, summary_model

__all__ = [
    "CHECKS",
    "SATURATION_EPS",
    "SATURATION_SHARE",
    "ActivationScan",
    "TensorSummary",
    "activation_scan",
    "probe_inputs",
    "reference_backend",
    "tap_plan",
]

#: A unit is saturated when more than this share of its values lie within SATURATION_EPS of a bound.
SATURATION_SHARE = 0.99
SATURATION_EPS = 1e-3
#: Bounds of the saturating activations.
_SATURATING = {"Sigmoid": (0.0, 1.0), "HardSigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}
_FLOAT16_MAX = 65504.0
_PERCENTILE_SAMPLE = 1 << 14
_MAX_LISTED = 32
#: Tensor bytes one scan pass covers: ResNet-50 (143 MB a sample) runs one sample a pass, which
#: costs less than eight at once (a big first run pays for growing onnxruntime's arena).
_SCAN_BYTES = 64 * 2**20

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- inputs
def probe_inputs(model: Model, settings: AuditSettings) -> tuple[dict[str, np.ndarray], str]:
    """The audit's probe set (:func:`onnxviz.inputs.probe_inputs`: ``probe_samples`` images of
    16-pixel blobs and noise seeded by ``seed``, spatial dims ``probe_size`` where open)."""
    return make_probe(model.inputs, settings.probe_samples, seed=settings.seed, size=settings.probe_size, blob=16)


# ------------------------------------------------------------------------------------ tapping
def _shapes(ctx: AuditContext) -> Mapping[str, TensorInfo]:
    """Inferred shapes of every tensor for the first batch (shared)."""
    first = ctx.batches[0]
    return ctx.shared("shapes", lambda: ctx.model.infer_shapes({k: v.shape for k, v in first.items()}))


def _tap_sizes(ctx: AuditContext, names: Sequence[str]) -> list[int]:
    """Bytes of each tensor in ``names`` for the first batch (a 32nd of the budget when unknown)."""
    infos = _shapes(ctx)
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

    ``p999`` is the 99.9th percentile of ``|x|`` (from a strided sample of about 2^14 values
    over all samples on big tensors); ``channel_max`` is the max over batch and space per
    channel (axis 1) for ReLU outputs; ``saturated_share`` the share of values within 1e-3 of a
    bound per channel for saturating activations.
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
    """The summaries in topological order, and the graph outputs of each batch from the same
    pass (onnxruntime without graph optimizations), which the runtime checks take as their
    reference instead of running the model again."""

    summaries: tuple[TensorSummary, ...]
    reference: tuple[dict[str, np.ndarray], ...]
    #: Tensors the second, exact pass read whole: NaN/Inf in their summary, whole taps beyond
    #: the budget, or every tensor when the summary model cannot run.
    exact: tuple[str, ...] = ()


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
        #: A reduced summary showed NaN/Inf (or a sum that overflowed): read the exact values.
        self.suspect = False

    def add(self, v: np.ndarray) -> None:
        """Add one batch of the tensor's values."""
        lo, hi = float(v.min()), float(v.max())  # NaN propagates into both, +-inf shows
        finite: np.ndarray | bool = True
        if math.isfinite(lo) and math.isfinite(hi):
            vf = flat = v  # the common case: two passes, no mask
        else:  # min, max and the sample over the finite values; NaN/Inf counted
            finite = np.isfinite(v)
            self.nonfinite += int(v.size - np.count_nonzero(finite))
            self.nan += int(np.count_nonzero(np.isnan(v)))
            flat = v[finite]
            lo, hi = (float(flat.min()), float(flat.max())) if flat.size else (math.inf, -math.inf)
            vf = np.where(finite, v, 0)
        flat = flat.reshape(-1)
        limit = self.sample * (int(v.shape[0]) if v.ndim else 1)  # ``sample`` values a sample
        if flat.size > limit:
            flat = flat[:: flat.size // limit + 1]
        near = None
        if self.kind == "saturating" and v.ndim >= 2:
            lo_b, hi_b = self.bounds  # type: ignore[misc]
            close = (np.abs(vf - lo_b) <= SATURATION_EPS) | (np.abs(vf - hi_b) <= SATURATION_EPS)
            near = (close & finite).sum(axis=_channel_axes(v.ndim))
        cmax = vf.max(axis=_channel_axes(v.ndim)) if self.kind == "relu" and v.ndim >= 2 else None
        self._merge(tuple(int(d) for d in v.shape), lo, hi, flat, cmax, near)

    def add_reduced(self, r: Reduced, shape: tuple[int, ...]) -> None:
        """Add one batch's in-graph summary (``shape`` is the batch's full tensor shape)."""
        if not r.finite:
            self.suspect = True
            return
        cmax = r.channel_max if self.kind == "relu" else None
        near = r.near if self.kind == "saturating" else None
        self._merge(shape, float(r.channel_min.min()), float(r.channel_max.max()), r.sample.reshape(-1), cmax, near)

    def _merge(
        self, shape: tuple[int, ...], lo: float, hi: float, sample: np.ndarray, cmax: np.ndarray | None, near: np.ndarray | None
    ) -> None:
        self.minimum = min(self.minimum, lo)
        self.maximum = max(self.maximum, hi)
        self.batch += shape[0] if shape else 1
        self.shape = shape
        self.samples.append(np.abs(sample))
        if cmax is not None:
            same = self.channel_max is not None and self.channel_max.shape == cmax.shape
            self.channel_max = np.maximum(self.channel_max, cmax) if same else cmax  # type: ignore[arg-type]
        if near is not None:
            same = self.near is not None and self.near.shape == near.shape
            self.near = self.near + near if same else near  # type: ignore[operator]
            self.count += int(np.prod(shape, dtype=np.int64)) // max(1, shape[1])

    def summary(self) -> TensorSummary:
        sample = np.concatenate(self.samples) if self.samples else np.zeros(0, np.float32)
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


def _channel_axes(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))


def reference_backend(ctx: AuditContext) -> OrtBackend:
    """onnxruntime without graph optimizations on the audited model (shared; sessions are made
    on first use, one per set of taps)."""
    return ctx.shared("ort-reference", lambda: OrtBackend(ctx.model.proto, ctx.model.graph, optimize=False))


def activation_scan(ctx: AuditContext) -> ActivationScan:
    """Summaries of every input-dependent float tensor over all batches, and the unoptimized
    graph outputs of each batch (a shared pass: it runs once per audit)."""

    def scan() -> ActivationScan:
        ctx.require_ort()
        g = ctx.model.graph
        shapes = _shapes(ctx)
        names = [
            n for n in g.tensor_names()
            if n not in g.input_names and (n not in shapes or shapes[n].dtype.kind == "f")
        ]
        total = sum(_samples(b) for b in ctx.batches)
        per_sample = max(1, sum(_tap_sizes(ctx, names)) // max(1, _samples(ctx.batches[0])))
        step = max(1, _SCAN_BYTES // per_sample)
        pieces = [(i, part) for i, b in enumerate(ctx.batches) for part in _cut(b, step)]
        keep = max(256, _PERCENTILE_SAMPLE // max(1, total))
        acc = {n: _accumulator(ctx, n, keep) for n in names}
        outputs, exact = _summary_pass(ctx, names, pieces, acc, keep)
        if exact or outputs is None:
            for n in exact:
                acc[n] = _accumulator(ctx, n, keep)
            outputs = _exact_pass(ctx, exact, pieces, acc)
        reference: list[dict[str, np.ndarray]] = []
        for i in range(len(ctx.batches)):  # the graph outputs again per audit batch
            parts = [o for (j, _), o in zip(pieces, outputs) if j == i]
            reference.append(parts[0] if len(parts) == 1 else {k: _join([p[k] for p in parts]) for k in parts[0]})
        return ActivationScan(tuple(acc[n].summary() for n in names if acc[n].batch), tuple(reference), tuple(exact))

    return ctx.shared("activation-scan", scan)


def _accumulator(ctx: AuditContext, name: str, keep: int) -> _Accumulator:
    node = ctx.model.graph.producer.get(name)
    op = "" if node is None else node.op_type
    first_out = node is not None and node.outputs[0] == name
    kind = ("relu" if op == "Relu" else "saturating" if op in _SATURATING else None) if first_out else None
    return _Accumulator(name, op, "" if node is None else node.label, kind, _SATURATING.get(op), keep)


def _summary_pass(
    ctx: AuditContext,
    names: Sequence[str],
    pieces: Sequence[tuple[int, dict[str, np.ndarray]]],
    acc: Mapping[str, _Accumulator],
    keep: int,
) -> tuple[list[dict[str, np.ndarray]] | None, list[str]]:
    """Run the summary model (unoptimized) on every piece and fill ``acc``; returns the graph
    outputs of each piece (``None`` when the summary model cannot run) and the names the exact
    pass must read: those whose summary showed NaN/Inf and whole taps too big for the budget
    (every name when the summary model cannot run)."""
    g = ctx.model.graph
    bounds = {n: acc[n].bounds for n in names if acc[n].kind == "saturating" and acc[n].bounds is not None}
    try:
        proto, probes = summary_model(
            ctx.model.proto, g, _shapes(ctx), names, sample=keep, bounds=bounds, eps=SATURATION_EPS  # type: ignore[arg-type]
        )
        whole = [n for n, p in probes.items() if p.whole]
        biggest = max((_samples(p) for _, p in pieces), default=1)
        if sum(_tap_sizes(ctx, whole)) * biggest // max(1, _samples(ctx.batches[0])) > ctx.settings.budget_bytes:
            drop = set(whole) - set(g.output_names)
            kept = [o for o in proto.graph.output if o.name not in drop]
            del proto.graph.output[:]
            proto.graph.output.extend(kept)
        else:
            drop = set()
        wanted = [o.name for o in proto.graph.output]
        session = make_session(proto, optimize=False)
        outputs: list[dict[str, np.ndarray]] = []
        for _, piece in pieces:
            values = dict(zip(wanted, session.run(wanted, {k: piece[k] for k in g.input_names})))
            outputs.append({n: values[n] for n in g.output_names})
            for name, probe in probes.items():
                if probe.whole:
                    v = np.asarray(values.get(name, ()))
                    if name in values and v.dtype.kind == "f" and v.size:
                        acc[name].add(v)
                    continue
                r = read_probe(probe, probes, values)
                acc[name].add_reduced(r, (r.batch,) + probe.shape)
            del values
    except Exception as e:  # onnxruntime raises its own types; the exact pass names the failure
        log.info("in-graph activation summaries unavailable, tapping every tensor: %s", str(e).strip()[:300])
        return None, list(names)
    return outputs, [n for n in names if acc[n].suspect or n in drop]


def _exact_pass(
    ctx: AuditContext,
    names: Sequence[str],
    pieces: Sequence[tuple[int, dict[str, np.ndarray]]],
    acc: Mapping[str, _Accumulator],
) -> list[dict[str, np.ndarray]]:
    """Tap ``names`` whole (unoptimized onnxruntime, in chunks under the budget) on every piece
    and fill their accumulators; returns the graph outputs of each piece."""
    g = ctx.model.graph
    backend = reference_backend(ctx)
    outputs: list[dict[str, np.ndarray]] = []
    for _, piece in pieces:
        outs: dict[str, np.ndarray] = {}
        for chunk in tap_plan(ctx, names, _samples(piece)) or [[]]:
            values = backend.run(piece, chunk)
            for name in g.output_names:
                outs.setdefault(name, values[name])
            for name in chunk:
                v = np.asarray(values[name])
                if v.dtype.kind == "f" and v.size:
                    acc[name].add(v)
            del values
        outputs.append(outs)
    return outputs


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
