"""Runtime consistency: the model's outputs with onnxruntime's graph optimizations on vs off,
and onnxruntime vs onnxviz's numpy engine.

The reference is onnxruntime without graph optimizations (closest to the op-by-op semantics of
the spec). Outputs are compared by max abs difference, relative L2 error and top-1/top-5
agreement; when they differ beyond ``atol + rtol * max|reference|``, both runtimes are tapped on
the worst batch and compared tensor by tensor in topological order to name the first tensor
that diverges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import OnnxvizError, UnsupportedOpError
from .activations import Runner, activation_scan, reference_backend, tap_plan
from .findings import Finding
from .runner import AuditContext, Check, SkipCheck

__all__ = ["CHECKS", "Agreement", "compare_outputs", "first_divergence", "reference_outputs"]

_TOPK_MAX_CLASSES = 100_000


@dataclass(frozen=True)
class Agreement:
    """How one output of two runtimes compares over all batches."""

    output: str
    max_abs: float
    scale: float
    rel_l2: float
    top1: float | None
    top5: float | None
    worst_batch: int
    within: bool

    def evidence(self) -> dict[str, object]:
        return {
            "max_abs": self.max_abs,
            "max_abs_reference": self.scale,
            "rel_l2": self.rel_l2,
            "top1_agreement": self.top1,
            "top5_agreement": self.top5,
        }


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, max |b|) in float64; shape or non-finite mismatches count as infinite."""
    if a.shape != b.shape:
        return float("inf"), 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    same_nonfinite = (~np.isfinite(a64) & ~np.isfinite(b64)) & ((a64 == b64) | (np.isnan(a64) & np.isnan(b64)))
    d = np.where(same_nonfinite, 0.0, np.abs(a64 - b64))
    d = np.where(np.isnan(d), np.inf, d)
    ref = np.abs(np.where(np.isfinite(b64), b64, 0))
    return (float(d.max()) if d.size else 0.0), (float(ref.max()) if ref.size else 0.0)


def _topk(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    if a.ndim < 1 or a.shape != b.shape or a.dtype.kind != "f":
        return None, None
    n = a.shape[0] if a.ndim > 1 else 1
    fa, fb = a.reshape(n, -1), b.reshape(n, -1)
    k = fa.shape[1]
    if k < 2 or k > _TOPK_MAX_CLASSES:
        return None, None
    top1 = float(np.mean(np.argmax(fa, axis=1) == np.argmax(fb, axis=1)))
    if k < 5:
        return top1, None
    ta, tb = np.argsort(-fa, axis=1)[:, :5], np.argsort(-fb, axis=1)[:, :5]
    top5 = float(np.mean([len(set(x) & set(y)) / 5 for x, y in zip(ta.tolist(), tb.tolist())]))
    return top1, top5


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]],
    other: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str],
    *,
    rtol: float,
    atol: float,
) -> list[Agreement]:
    """Compare per-batch outputs of two runtimes (same batches in the same order)."""
    out: list[Agreement] = []
    for name in names:
        worst, worst_batch, scale = 0.0, 0, 0.0
        num = den = 0.0
        within = True
        for k, (r, o) in enumerate(zip(reference, other)):
            b, a = np.asarray(r[name]), np.asarray(o[name])
            if b.dtype.kind not in "fc":
                d = 0.0 if a.shape == b.shape and np.array_equal(a, b) else float("inf")
                s = 0.0
            else:
                d, s = _diff(a, b)
                if a.shape == b.shape:
                    fin = np.isfinite(a) & np.isfinite(b)
                    num += float(np.sum((a[fin].astype(np.float64) - b[fin]) ** 2))
                    den += float(np.sum(b[fin].astype(np.float64) ** 2))
            scale = max(scale, s)
            if d > worst or k == 0:
                worst, worst_batch = d, k
            if not d <= atol + rtol * s:
                within = False
        ref_all = [np.asarray(r[name]) for r in reference]
        oth_all = [np.asarray(o[name]) for o in other]
        try:
            top1, top5 = _topk(np.concatenate(oth_all), np.concatenate(ref_all))
        except ValueError:
            top1 = top5 = None
        rel = float(np.sqrt(num / den)) if den > 0 else (0.0 if num == 0 else float("inf"))
        out.append(Agreement(name, worst, scale, rel, top1, top5, worst_batch, within))
    return out


def first_divergence(
    ctx: AuditContext, reference: Runner, other: Runner, batch: Mapping[str, np.ndarray]
) -> tuple[str, float, float] | None:
    """The first tensor, in topological order, where ``other`` leaves the tolerance of
    ``reference`` on ``batch``: (name, max abs difference, max |reference|), or None."""
    g = ctx.model.graph
    names = [n for n in g.tensor_names() if n not in g.input_names]
    rtol, atol = ctx.settings.rtol, ctx.settings.atol
    for chunk in tap_plan(ctx, names):
        ref = reference(batch, chunk)
        oth = other(batch, chunk)
        for name in chunk:
            r, o = np.asarray(ref[name]), np.asarray(oth[name])
            if r.dtype.kind != "f":
                if not (r.shape == o.shape and np.array_equal(r, o)):
                    return name, float("inf"), 0.0
                continue
            d, s = _diff(o, r)
            if not d <= atol + rtol * s:
                return name, d, s
    return None


def reference_outputs(ctx: AuditContext) -> tuple[Runner, list[dict[str, np.ndarray]]]:
    """onnxruntime without graph optimizations, and its outputs on every batch (from the
    activation scan's pass, which runs unoptimized)."""
    return reference_backend(ctx).run, list(activation_scan(ctx).reference)


def _report(
    check: Check,
    ctx: AuditContext,
    what: str,
    results: list[Agreement],
    locate: Runner,
    ref_run: Runner,
    batches: Sequence[Mapping[str, np.ndarray]],
) -> list[Finding]:
    bad = [a for a in results if not a.within]
    if not bad:
        return []
    worst = max(bad, key=lambda a: (a.max_abs / (a.scale or 1.0)))
    where = first_divergence(ctx, ref_run, locate, batches[worst.worst_batch])
    g = ctx.model.graph
    evidence: dict[str, object] = {
        "outputs": {a.output: a.evidence() for a in results},
        "rtol": ctx.settings.rtol,
        "atol": ctx.settings.atol,
        "inputs": ctx.inputs_description,
        "samples_compared": int(sum(np.shape(next(iter(b.values())))[0] if b and np.ndim(next(iter(b.values()))) else 1 for b in batches)),
    }
    node = tensor = None
    if where is None:
        tail = "; no tapped tensor diverges (the difference comes from fusions that tapping prevents)"
    else:
        tensor, d, s = where
        producer = g.producer.get(tensor)
        node = None if producer is None else producer.label
        evidence["first_diverging"] = {"tensor": tensor, "node": node, "op": None if producer is None else producer.op_type,
                                       "max_abs": d, "max_abs_reference": s}
        tail = f"; first diverging tensor {tensor!r}" + (f" (node {node!r}, {producer.op_type})" if producer else "")
    top = f", top-1 agreement {worst.top1:.0%}" if worst.top1 is not None else ""
    return [
        check.finding(
            "warning",
            f"{what} disagree on output {worst.output!r}: max abs {worst.max_abs:.3g} (reference max {worst.scale:.3g}), "
            f"relative L2 {worst.rel_l2:.3g}{top}{tail}",
            node=node,
            tensor=tensor or worst.output,
            evidence=evidence,
            hint="compare that node's inputs in both runtimes; quantized (QDQ) graphs differ by design once fused",
        )
    ]


class OrtOptimizationsCheck(Check):
    """Outputs of onnxruntime with all graph optimizations vs none differ beyond tolerance
    (warning): a fusion changes the numbers (often a QDQ or layout fusion), so deployments with
    different optimization levels answer differently."""

    id = "runtime.ort-optimizations"
    needs_inputs = True

    def run(self, ctx: AuditContext) -> list[Finding]:
        ref_run, ref = reference_outputs(ctx)
        opt_run: Runner = ctx.model.ort.run
        opt = [dict(opt_run(b, ())) for b in ctx.batches]
        results = compare_outputs(ref, opt, ctx.model.graph.output_names, rtol=ctx.settings.rtol, atol=ctx.settings.atol)
        return _report(self, ctx, "onnxruntime with and without graph optimizations", results, opt_run, ref_run, ctx.batches)


def _first_samples(
    batches: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[Mapping[str, np.ndarray]], n: int
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The batches (and their outputs) cut down to the first ``n`` samples."""
    ins: list[dict[str, np.ndarray]] = []
    outs: list[dict[str, np.ndarray]] = []
    left = max(1, n)
    for b, o in zip(batches, outputs):
        if left <= 0:
            break
        size = int(np.shape(next(iter(b.values())))[0]) if b and np.ndim(next(iter(b.values()))) else 1
        if size <= left:
            ins.append(dict(b))
            outs.append(dict(o))
        else:
            ins.append({k: v[:left] for k, v in b.items()})
            outs.append({k: (v[:left] if np.ndim(v) and np.shape(v)[0] == size else v) for k, v in o.items()})
        left -= size
    return ins, outs


class NumpyEngineCheck(Check):
    """Outputs of onnxviz's numpy engine vs onnxruntime differ beyond tolerance (warning): the
    gradients onnxviz computes would explain a different function than the one deployed.

    Compared on the first ``AuditSettings.engine_samples`` samples (one by default)."""

    id = "runtime.numpy-engine"
    needs_inputs = True

    def run(self, ctx: AuditContext) -> list[Finding]:
        from ..backends.numpy import REGISTRY

        g = ctx.model.graph
        missing = sorted(
            {
                n.op_type
                for n in g.nodes
                if any(o in g.dynamic for o in n.outputs)
                and (n.domain not in ("", "ai.onnx") or REGISTRY.get_forward(n.op_type, g.opset) is None)
            }
        )
        if missing:
            raise SkipCheck(f"the numpy engine has no forward for {', '.join(missing)} (see graph.gradient-support)")
        ref_run, ref = reference_outputs(ctx)
        engine = ctx.model.engine

        def numpy_run(feeds: Mapping[str, np.ndarray], taps: Sequence[str]) -> dict[str, np.ndarray]:
            names = list(dict.fromkeys(list(g.output_names) + list(taps)))
            return engine.run(feeds, names)

        batches, refs = _first_samples(ctx.batches, ref, ctx.settings.engine_samples)
        try:
            mine = [numpy_run(b, ()) for b in batches]
        except UnsupportedOpError as e:
            raise SkipCheck(f"the numpy engine cannot run the model: {e.message}") from e
        except OnnxvizError as e:  # the engine failed on a model it claims to support
            return [
                self.finding(
                    "warning",
                    f"onnxviz's numpy engine fails on this model: {e.message}",
                    evidence={"error": type(e).__name__, "inputs": ctx.inputs_description},
                    hint="gradient methods will fail the same way; please report it as an onnxviz bug",
                )
            ]
        results = compare_outputs(refs, mine, g.output_names, rtol=ctx.settings.rtol, atol=ctx.settings.atol)
        return _report(self, ctx, "onnxviz's numpy engine and onnxruntime", results, numpy_run, ref_run, batches)


CHECKS: tuple[type[Check], ...] = (OrtOptimizationsCheck, NumpyEngineCheck)
