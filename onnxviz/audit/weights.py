"""Weight checks: non-finite and denormal values, dead and duplicate filters, batch-norm
variances, extreme magnitudes, float16 range, and how much of the model is near zero.

"Weights" are the float constants that input-dependent nodes read: initializers, ``Constant``
nodes and folded constant subgraphs (so dequantized int8 weights too), as
:attr:`onnxviz.model.Model.constants` gives them. Filters come from
:func:`onnxviz.kernels.conv_kernels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..kernels import NEAR_ZERO_FRACTION, conv_kernels
from .findings import Finding
from .runner import AuditContext, Check

__all__ = [
    "CHECKS",
    "DUPLICATE_COSINE",
    "BN_VARIANCE_MIN",
    "BN_VARIANCE_MAX",
    "EXTREME_MAGNITUDE",
    "FLOAT16_MAX",
    "ParallelPairs",
    "near_parallel",
    "weight_tensors",
]

#: Two filters are near-duplicates above this cosine similarity.
DUPLICATE_COSINE = 0.999
#: Filters with fewer weights than this are not compared (any two 1-weight filters are parallel).
_MIN_FILTER_SIZE = 4
#: BatchNormalization variances below / above these are flagged.
BN_VARIANCE_MIN = 1e-8
BN_VARIANCE_MAX = 1e6
#: Weights of larger magnitude than this are flagged as extreme.
EXTREME_MAGNITUDE = 1e4
#: The largest finite float16.
FLOAT16_MAX = 65504.0

_MAX_LISTED = 16


def weight_tensors(ctx: AuditContext) -> dict[str, np.ndarray]:
    """Float constants read by input-dependent nodes, by name, in graph order."""

    def collect() -> dict[str, np.ndarray]:
        g = ctx.model.graph
        consts = ctx.model.constants
        out: dict[str, np.ndarray] = {}
        for n in g.nodes:
            if not any(o in g.dynamic for o in n.outputs):
                continue
            for name in n.inputs:
                if name and name not in out and name in consts and consts[name].dtype.kind == "f":
                    out[name] = consts[name]
        return out

    return ctx.shared("weights", collect)


@dataclass(frozen=True)
class _Stats:
    size: int
    nan: int
    inf: int
    first_bad: tuple[int, ...] | None
    denormal: int
    max_abs: float
    extreme: int
    float16_over: int
    near_zero: int


def weight_stats_by_tensor(ctx: AuditContext) -> dict[str, _Stats]:
    """One pass of counts over every weight tensor, shared by the value checks (large models
    hold hundreds of millions of weights: each check must not walk them again)."""

    def compute() -> dict[str, _Stats]:
        out: dict[str, _Stats] = {}
        for name, w in weight_tensors(ctx).items():
            a = np.abs(w)
            peak = float(a.max()) if a.size else 0.0
            nan = inf = 0
            first_bad = None
            if not np.isfinite(peak):
                bad = ~np.isfinite(w)
                nan, inf = int(np.isnan(w).sum()), int(np.isinf(w).sum())
                first_bad = tuple(int(i) for i in np.argwhere(bad)[0])
                a = np.where(bad, 0, a)
                peak = float(a.max())
            tiny = np.finfo(w.dtype).tiny
            below = int(np.count_nonzero(a < tiny))
            denormal = below - int(np.count_nonzero(a == 0)) if below else 0
            out[name] = _Stats(
                size=int(w.size),
                nan=nan,
                inf=inf,
                first_bad=first_bad,
                denormal=denormal,
                max_abs=peak,
                extreme=int(np.count_nonzero(a > EXTREME_MAGNITUDE)) if peak > EXTREME_MAGNITUDE else 0,
                float16_over=int(np.count_nonzero(a > FLOAT16_MAX)) if peak > FLOAT16_MAX else 0,
                near_zero=int(np.count_nonzero(a < NEAR_ZERO_FRACTION * peak)) if peak > 0 else int(w.size) - nan - inf,
            )
        return out

    return ctx.shared("weight-stats", compute)


def _consumer(ctx: AuditContext, tensor: str) -> str | None:
    users = [n for n in ctx.model.graph.consumers.get(tensor, ()) if any(o in ctx.model.graph.dynamic for o in n.outputs)]
    return users[0].label if users else None


class NonFiniteWeightsCheck(Check):
    """Weights that are NaN or infinite (error): every output they touch is garbage.

    Usually a diverged training run or a broken conversion (overflowing cast to float16).
    """

    id = "weights.nonfinite"

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        for name, st in weight_stats_by_tensor(ctx).items():
            if not (st.nan or st.inf):
                continue
            found.append(
                self.finding(
                    "error",
                    f"weight {name!r} has {st.nan + st.inf} NaN/Inf value(s) of {st.size}",
                    node=_consumer(ctx, name),
                    tensor=name,
                    evidence={
                        "nan": st.nan,
                        "inf": st.inf,
                        "size": st.size,
                        "first_index": list(st.first_bad or ()),
                        "source": ctx.model.graph.constant_source(name),
                    },
                    hint="re-export from a checkpoint with finite weights; check casts to float16",
                )
            )
        return found


class DenormalWeightsCheck(Check):
    """Subnormal (denormal) float weights (warning): nonzero values below the smallest normal.

    They are numerically meaningless, make CPU arithmetic up to 100x slower on some hardware,
    and are flushed to zero by GPUs and float16 conversion.
    """

    id = "weights.denormal"

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        weights = weight_tensors(ctx)
        for name, st in weight_stats_by_tensor(ctx).items():
            if st.denormal:
                dtype = weights[name].dtype
                tiny = float(np.finfo(dtype).tiny)
                found.append(
                    self.finding(
                        "warning",
                        f"weight {name!r} has {st.denormal} denormal value(s) (0 < |w| < {tiny:.3g}, {dtype})",
                        node=_consumer(ctx, name),
                        tensor=name,
                        evidence={"denormal": st.denormal, "size": st.size, "dtype": str(dtype), "smallest_normal": tiny},
                        hint="flush them to zero (w[np.abs(w) < np.finfo(w.dtype).tiny] = 0) before deploying",
                    )
                )
        return found


class DeadFiltersCheck(Check):
    """Convolution filters whose weights are all exactly zero (warning).

    The output channel is a constant (its bias): compute and parameters for nothing, typically
    left by pruning that did not remove the channel, or by a broken conversion.
    """

    id = "weights.dead-filters"

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        for k in ctx.shared("kernels", lambda: conv_kernels(ctx.model)):
            dead = list(k.stats.dead_filters)
            if not dead:
                continue
            total = k.weight.shape[1 if k.op_type == "ConvTranspose" else 0]
            found.append(
                self.finding(
                    "warning",
                    f"{len(dead)} of {total} filters of {k.op_type} {k.node!r} are all zero: {dead[:_MAX_LISTED]}",
                    node=k.node,
                    tensor=k.output_tensor,
                    evidence={"filters": dead[:64], "count": len(dead), "total": int(total), "source": k.source},
                    hint="prune the channels away (and the next layer's inputs), or check the export",
                )
            )
        return found


#: Orthonormal projection width of the near-parallel screen; filters with at most eight times
#: as many weights are compared exactly (the full Gram matrix is as cheap then: measured on
#: ResNet-50's shapes, the screen takes 0.35x the Gram's time at d = 4608, 0.9x at d = 512).
_SCREEN_DIMS = 64
#: Candidate pairs are checked exactly in chunks of this many.
_PAIR_CHUNK = 4096


@dataclass(frozen=True)
class ParallelPairs:
    """Pairs ``i < j`` of rows with cosine above a threshold: how many, how many rows take part,
    the largest cosine, and the first ``limit`` pairs in row-major order with their cosines."""

    count: int
    involved: int
    max_cosine: float
    pairs: np.ndarray
    cosines: np.ndarray


def near_parallel(unit: np.ndarray, threshold: float, limit: int | None = None) -> ParallelPairs:
    """The pairs of rows of ``unit`` (unit vectors) with ``unit[i] . unit[j] > threshold``
    (all of them listed when ``limit`` is None).

    Identical rows (constant-filled weights, copied filters) are compared once: the distinct
    rows are paired and every pair of rows inherits its rows' distinct pair (identical rows: the
    cosine of the row with itself), so a layer of 2048 equal filters costs no 2-million-pair
    list. Wide distinct rows are screened first: for unit vectors ``|u - v|^2 = 2 - 2 cos``, and
    a projection with orthonormal rows never lengthens a vector, so every pair above the
    threshold has ``|P u - P v| <= sqrt(2 - 2 threshold)``; only pairs within that radius (plus
    a rounding margin) in ``_SCREEN_DIMS`` directions are checked in full. Each direction is a
    random-sign sum over a disjoint random group of the weights, divided by the root of the
    group size (orthonormal rows, a sparse Johnson-Lindenstrauss sketch, no QR needed). No pair
    is missed, and the cost is ``n^2 * 64`` instead of ``n^2 * d`` (ResNet-50's 3x3 layers:
    d = 4608). ``P`` comes from a fixed seed, so results are reproducible.
    """
    reps, group = _identical_groups(unit)
    a, b, cos = _distinct_pairs(unit[reps], threshold)
    size = np.bincount(group, minlength=len(reps)).astype(np.int64)
    self_cos = np.einsum("ij,ij->i", unit[reps], unit[reps])
    twins = (size > 1) & (self_cos > threshold)
    count = int((size * (size - 1) // 2)[twins].sum() + (size[a] * size[b]).sum())
    part = twins.copy()
    part[a] = part[b] = True
    involved = int(size[part].sum())
    tops = [float(cos.max())] if cos.size else []
    if twins.any():
        tops.append(float(self_cos[twins].max()))
    # the cosine between the groups of any two rows (0 where they do not match)
    match = np.zeros((len(reps), len(reps)), dtype=unit.dtype)
    match[a, b] = match[b, a] = cos
    match[np.flatnonzero(twins), np.flatnonzero(twins)] = self_cos[twins]
    listed: list[tuple[int, int]] = []
    values: list[float] = []
    for i in np.flatnonzero(part[group]):
        want = None if limit is None else limit - len(listed)
        if want is not None and want <= 0:
            break
        row = match[group[i], group[i + 1 :]]
        js = np.flatnonzero(row > threshold)[:want]
        listed.extend((int(i), int(i + 1 + j)) for j in js)
        values.extend(float(row[j]) for j in js)
    return ParallelPairs(
        count=count,
        involved=involved,
        max_cosine=max(tops) if tops else float("nan"),
        pairs=np.array(listed, dtype=np.int64).reshape(-1, 2),
        cosines=np.array(values, dtype=np.float64),
    )


def _identical_groups(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(representatives, group of each row)`` for groups of exactly equal rows: grouped by a
    random-projection fingerprint, then checked element by element (a row that only shares the
    fingerprint gets a group of its own). ``np.unique(axis=0)`` sorts whole rows, ~100x slower."""
    key = rows @ np.random.default_rng(1).standard_normal(rows.shape[1]).astype(rows.dtype)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    odd = np.flatnonzero(~np.all(rows == rows[first[inverse]], axis=1))
    if odd.size:
        inverse[odd] = len(first) + np.arange(odd.size)
        first = np.concatenate([first, odd])
    return first, inverse


def _distinct_pairs(unit: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, d = unit.shape
    if d <= 8 * _SCREEN_DIMS:
        return _gram_pairs(unit, threshold)
    rng = np.random.default_rng(0)
    group = rng.permutation(d) % _SCREEN_DIMS  # each weight goes to one of the directions
    proj = np.zeros((d, _SCREEN_DIMS), dtype=unit.dtype)
    proj[np.arange(d), group] = rng.choice(np.array([-1.0, 1.0], dtype=unit.dtype), d)
    proj /= np.sqrt(np.bincount(group, minlength=_SCREEN_DIMS)).astype(unit.dtype)
    q = unit @ proj
    sq = np.einsum("ij,ij->i", q, q)
    dist2 = sq[:, None] + sq[None, :] - 2 * (q @ q.T)
    radius = math.sqrt(max(0.0, 2 - 2 * threshold)) * 1.01 + 1e-3
    a, b = np.nonzero(np.triu(dist2 <= radius * radius, k=1))
    del dist2
    if a.size > n * n // 16:  # most pairs are candidates (e.g. constant-filled weights)
        return _gram_pairs(unit, threshold)
    cos = np.empty(a.size, dtype=unit.dtype)
    for s in range(0, a.size, _PAIR_CHUNK):
        i, j = a[s : s + _PAIR_CHUNK], b[s : s + _PAIR_CHUNK]
        cos[s : s + _PAIR_CHUNK] = np.einsum("ij,ij->i", unit[i], unit[j])
    keep = cos > threshold
    return a[keep], b[keep], cos[keep]


def _gram_pairs(unit: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cos = unit @ unit.T
    a, b = np.nonzero(np.triu(cos > threshold, k=1))
    return a, b, cos[a, b]


class DuplicateFiltersCheck(Check):
    """Pairs of filters within one convolution with cosine similarity above 0.999 (warning).

    Near-parallel filters detect the same pattern: redundant capacity, a sign of a collapsed
    training run or of weights copied by mistake.
    """

    id = "weights.duplicate-filters"

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        for k in ctx.shared("kernels", lambda: conv_kernels(ctx.model)):
            axis = 1 if k.op_type == "ConvTranspose" else 0
            f = np.moveaxis(k.weight, axis, 0).reshape(k.weight.shape[axis], -1).astype(np.float32, copy=False)
            if f.shape[0] < 2 or f.shape[1] < _MIN_FILTER_SIZE:
                continue
            norms = np.linalg.norm(f, axis=1)
            live = np.flatnonzero(np.isfinite(norms) & (norms > 0))  # non-finite filters: weights.nonfinite
            if live.size < 2:
                continue
            unit = (f if live.size == f.shape[0] else f[live]) / norms[live, None]
            found_pairs = near_parallel(unit, DUPLICATE_COSINE, _MAX_LISTED)
            count = found_pairs.count
            if count == 0:
                continue
            involved = found_pairs.involved
            max_cos = found_pairs.max_cosine
            pairs = [[int(live[i]), int(live[j])] for i, j in found_pairs.pairs]
            found.append(
                self.finding(
                    "warning",
                    f"{k.op_type} {k.node!r} has {count} near-duplicate filter pair(s) (cosine > {DUPLICATE_COSINE}): "
                    + ", ".join(f"{a}~{b}" for a, b in pairs[:8])
                    + (" ..." if count > 8 else ""),
                    node=k.node,
                    tensor=k.output_tensor,
                    evidence={
                        "pairs": pairs,
                        "pair_count": count,
                        "filters_involved": int(involved),
                        "total": int(f.shape[0]),
                        "max_cosine": max_cos,
                    },
                    hint="duplicate filters add nothing; prune one of each pair",
                )
            )
        return found


class BatchNormVarianceCheck(Check):
    """BatchNormalization running variances near zero (< 1e-8) or huge (> 1e6) (warning).

    A tiny variance divides by about sqrt(epsilon) and amplifies noise (and breaks float16);
    a huge one flattens the channel. Both point to statistics gathered on degenerate data.
    """

    id = "weights.bn-variance"

    def run(self, ctx: AuditContext) -> list[Finding]:
        found: list[Finding] = []
        consts = ctx.model.constants
        for n in ctx.model.graph.nodes:
            if n.op_type != "BatchNormalization" or len(n.inputs) < 5 or n.inputs[4] not in consts:
                continue
            var = np.asarray(consts[n.inputs[4]], dtype=np.float64).reshape(-1)
            low = np.flatnonzero(var < BN_VARIANCE_MIN)
            high = np.flatnonzero(var > BN_VARIANCE_MAX)
            if not low.size and not high.size:
                continue
            parts = []
            if low.size:
                parts.append(f"{low.size} below {BN_VARIANCE_MIN:g} (channels {low[:_MAX_LISTED].tolist()})")
            if high.size:
                parts.append(f"{high.size} above {BN_VARIANCE_MAX:g} (channels {high[:_MAX_LISTED].tolist()})")
            found.append(
                self.finding(
                    "warning",
                    f"BatchNormalization {n.label!r} has running variances " + " and ".join(parts),
                    node=n.label,
                    tensor=n.inputs[4],
                    evidence={
                        "low_channels": low[:64].tolist(),
                        "high_channels": high[:64].tolist(),
                        "min_variance": float(var.min()),
                        "max_variance": float(var.max()),
                        "epsilon": float(n.attrs.get("epsilon", 1e-5)),
                    },
                    hint="recompute the statistics on representative data, or fold BN into the conv and check the result",
                )
            )
        return found


class ExtremeWeightsCheck(Check):
    """Weights with magnitude above 1e4 (warning): far outside what trained CNNs hold.

    They overflow float16 products, dominate quantization ranges, and often come from a
    mis-scaled conversion (e.g. unfolded normalization constants).
    """

    id = "weights.extreme"

    def run(self, ctx: AuditContext) -> list[Finding]:
        return [
            self.finding(
                "warning",
                f"weight {name!r} has {st.extreme} value(s) with |w| > {EXTREME_MAGNITUDE:g} (max {st.max_abs:.4g})",
                node=_consumer(ctx, name),
                tensor=name,
                evidence={"count": st.extreme, "max_abs": st.max_abs, "size": st.size},
                hint="check the export: such magnitudes usually mean a scale folded in twice",
            )
            for name, st in weight_stats_by_tensor(ctx).items()
            if st.extreme
        ]


class Float16WeightsCheck(Check):
    """Weights beyond the float16 range, |w| > 65504 (warning): converting the model to float16
    (or running it on float16 hardware) turns them into infinities."""

    id = "weights.float16-overflow"

    def run(self, ctx: AuditContext) -> list[Finding]:
        over = [(n, st.float16_over, st.max_abs) for n, st in weight_stats_by_tensor(ctx).items() if st.float16_over]
        if not over:
            return []
        return [
            self.finding(
                "warning",
                f"{len(over)} weight tensor(s) hold values beyond the float16 range (|w| > {FLOAT16_MAX:g}): "
                + ", ".join(repr(n) for n, _, _ in over[:5]),
                node=_consumer(ctx, over[0][0]),
                tensor=over[0][0],
                evidence={
                    "tensors": [n for n, _, _ in over[:_MAX_LISTED]],
                    "counts": [c for _, c, _ in over[:_MAX_LISTED]],
                    "max_abs": max(m for _, _, m in over),
                },
                hint="keep these layers in float32 when converting (onnxconverter_common float16 op_block_list)",
            )
        ]


class NearZeroWeightsCheck(Check):
    """The share of near-zero weights (info): how prunable the model looks.

    A weight is near zero below 1% of its tensor's largest magnitude (the definition of
    :data:`onnxviz.kernels.NEAR_ZERO_FRACTION`); only tensors with at least 64 values count.
    """

    id = "weights.near-zero"

    def run(self, ctx: AuditContext) -> list[Finding]:
        total = near = 0
        per: list[tuple[str, float]] = []
        for name, st in weight_stats_by_tensor(ctx).items():
            size = st.size - st.nan - st.inf
            if st.size < 64 or size <= 0:
                continue
            total += size
            near += st.near_zero
            per.append((name, st.near_zero / size))
        if not total:
            return []
        per.sort(key=lambda t: (-t[1], t[0]))
        share = near / total
        return [
            self.finding(
                "info",
                f"{share:.1%} of {total} weights are near zero (< {NEAR_ZERO_FRACTION:.0%} of their tensor's peak)",
                evidence={
                    "share": round(share, 4),
                    "weights": total,
                    "near_zero": near,
                    "top_tensors": {n: round(s, 4) for n, s in per[:5]},
                },
                hint="magnitude pruning could remove about this share at little cost" if share > 0.3 else None,
            )
        ]


CHECKS: tuple[type[Check], ...] = (
    NonFiniteWeightsCheck,
    DenormalWeightsCheck,
    DeadFiltersCheck,
    DuplicateFiltersCheck,
    BatchNormVarianceCheck,
    ExtremeWeightsCheck,
    Float16WeightsCheck,
    NearZeroWeightsCheck,
)
