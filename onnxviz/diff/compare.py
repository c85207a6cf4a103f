"""Compare two versions of a model on the same inputs: outputs, every matched tensor, conv
weights and attribution maps.

Typical pairs are a float model and its quantized (QDQ, QOperator, dynamic) or FP16 copy, a
re-export, or the same model at another optimization level. Tensors are paired by
:func:`~onnxviz.diff.match.match_tensors`; drift is accumulated over the inputs in chunks, so
memory is bounded by one chunk of tapped tensors whatever the number of inputs.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, UnsupportedOpError
from ..graph import TensorInfo
from ..inputs import probe_inputs as make_probe
from ..kernels import ConvKernels, conv_kernels
from ..model import Model
from .match import Matching, TensorPair, match_tensors
from .result import (
    AttentionDrift,
    DiffResult,
    Finding,
    OutputDrift,
    TensorDrift,
    WeightDrift,
)

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_MIN_SPEARMAN",
    "DEFAULT_THRESHOLD",
    "FALLBACK_METHODS",
    "diff",
    "gradient_blocker",
    "probe_inputs",
    "spearman",
]

log = logging.getLogger(__name__)

#: A tensor has diverged when ||b - a|| / ||a|| exceeds this.
DEFAULT_THRESHOLD = 0.05
#: B looks at different evidence when the mean Spearman correlation of its maps falls below this.
DEFAULT_MIN_SPEARMAN = 0.7
#: Attribution methods compared when both models are differentiable by the numpy engine.
DEFAULT_METHODS: tuple[str, ...] = ("saliency", "gradcam")
#: Forward-only stand-ins (run with a small budget) when either model is not.
FALLBACK_METHODS: tuple[str, ...] = ("occlusion", "rise")
#: RISE masks in the fallback: few, but the same masks go to both models, so the comparison
#: is not blurred by sampling noise the way one RISE map alone would be.
FALLBACK_RISE_MASKS = 128


# ------------------------------------------------------------------------------------ inputs
def probe_inputs(
    model: Model,
    samples: int = 8,
    *,
    seed: int = 0,
    preset: str = "imagenet",
    size: int = 224,
) -> tuple[dict[str, np.ndarray], str]:
    """The diff's seeded probe set and its description (:func:`onnxviz.inputs.probe_inputs`,
    images of 8-pixel blobs and noise through ``preset``)."""
    return make_probe(model.inputs, samples, seed=seed, size=size, preset=preset, blob=8)


# ------------------------------------------------------------------------------------ main
def diff(
    a: Model,
    b: Model,
    inputs: np.ndarray | Mapping[str, np.ndarray] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_spearman: float = DEFAULT_MIN_SPEARMAN,
    methods: Sequence[str] = DEFAULT_METHODS,
    fallback_methods: Sequence[str] = FALLBACK_METHODS,
    attention: bool = True,
    samples: int = 8,
    seed: int = 0,
    preset: str = "imagenet",
    batch_size: int = 8,
    inputs_description: str | None = None,
) -> DiffResult:
    """Compare model ``b`` with model ``a`` on ``inputs`` (A's inputs; B gets the same arrays
    through the paired inputs). Without inputs a seeded probe set of ``samples`` random inputs
    in ``preset``'s range is generated (see :func:`probe_inputs`).

    Measured: outputs (top-1/top-5 agreement, score drift), every matched float tensor (max abs,
    relative L2, cosine) and the first one in A's topological order whose relative L2 exceeds
    ``threshold``, the kernels of matched convolutions, and the Spearman correlation of the
    same attribution maps (``methods``, by name) on both models for A's top-1 classes. When
    either model has ops the numpy engine cannot differentiate, ``fallback_methods`` (forward
    only, small budget) run on both instead, and the result says so.
    """
    if not threshold > 0 or not math.isfinite(threshold):
        raise InputError(f"threshold must be a positive number, got {threshold}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if len(a.inputs) != len(b.inputs):
        raise InputError(
            f"{a.name!r} has {len(a.inputs)} input(s) {list(a.graph.input_names)} but {b.name!r} has "
            f"{len(b.inputs)} {list(b.graph.input_names)}",
            hint="diff compares two versions of one model: they must take the same inputs",
        )
    if inputs is None:
        feeds_a, described = probe_inputs(a, samples, seed=seed, preset=preset)
    else:
        feeds_a, described = (
            a.feeds(inputs),
            f"{_batch(a.feeds(inputs))} given input(s)",
        )
    described = inputs_description or described
    n = _batch(feeds_a)

    first = {k: v[:1] for k, v in feeds_a.items()}
    infos_a = _observed(a, first)
    input_pairs = _pair_inputs(a, b)
    infos_b = _observed(b, _feeds_for_b(b, first, input_pairs))
    matching = match_tensors(a, b, infos_a, infos_b)
    feeds_b = _feeds_for_b(b, feeds_a, input_pairs)

    output_pairs = [(pa, pb) for pa, pb in matching.outputs]
    tensors, outputs, classes = _measure(a, b, feeds_a, feeds_b, matching, output_pairs, int(batch_size))
    first_div = next((t for t in tensors if t.rel_l2 > threshold), None)
    weights = _weights(a, b, matching)

    if attention and classes is not None and outputs:
        att, note, fell_back = _attention(
            a,
            b,
            feeds_a,
            feeds_b,
            classes,
            output_pairs[0],
            input_pairs[0],
            matching,
            methods,
            fallback_methods,
            seed,
        )
    else:
        att, note, fell_back = (
            (),
            "attention not compared" + ("" if attention else " (disabled)"),
            False,
        )

    findings = _findings(
        tensors,
        outputs,
        first_div,
        att,
        note,
        fell_back,
        matching,
        threshold,
        min_spearman,
    )
    return DiffResult(
        model_a=a.name,
        model_b=b.name,
        inputs=described,
        samples=n,
        threshold=float(threshold),
        min_spearman=float(min_spearman),
        outputs=tuple(outputs),
        tensors=tuple(tensors),
        first_divergence=first_div,
        weights=tuple(weights),
        attention=tuple(att),
        attention_note=note,
        attention_fallback=fell_back,
        matching=matching,
        findings=tuple(findings),
    )


def _batch(feeds: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0]) if feeds else 0


def _pair_inputs(a: Model, b: Model) -> list[tuple[str, str]]:
    names_b = b.graph.input_names
    pairs = [(x, x) for x in a.graph.input_names if x in names_b]
    rest_a = [x for x in a.graph.input_names if x not in names_b]
    rest_b = [x for x in names_b if x not in a.graph.input_names]
    order = {x: k for k, x in enumerate(a.graph.input_names)}
    return sorted(pairs + list(zip(rest_a, rest_b)), key=lambda p: order[p[0]])


def _feeds_for_b(
    b: Model, feeds_a: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]]
) -> dict[str, np.ndarray]:
    return b.feeds({pb: feeds_a[pa] for pa, pb in pairs})


def _observed(model: Model, feeds: Mapping[str, np.ndarray]) -> dict[str, TensorInfo]:
    """Shape and dtype of every input-dependent tensor, as one forward pass produces them."""
    names = [t for t in model.graph.tensor_names() if t not in model.graph.input_names]
    values = model.run(feeds, names)
    infos = {k: TensorInfo(k, tuple(int(d) for d in np.shape(v)), np.asarray(v).dtype) for k, v in values.items()}
    for k, v in feeds.items():
        infos[k] = TensorInfo(k, tuple(v.shape), v.dtype)
    return infos


# ------------------------------------------------------------------------------------ drift
@dataclass
class _Acc:
    """Running sums for one tensor pair (float64)."""

    d2: float = 0.0
    a2: float = 0.0
    b2: float = 0.0
    dot: float = 0.0
    max_abs: float = 0.0
    nonfinite: int = 0

    def add(self, va: np.ndarray, vb: np.ndarray) -> None:
        x = np.asarray(va, dtype=np.float64).ravel()
        y = np.asarray(vb, dtype=np.float64).ravel()
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.all():
            self.nonfinite += int(ok.size - np.count_nonzero(ok))
            x, y = x[ok], y[ok]
        d = y - x
        self.d2 += float(d @ d)
        self.a2 += float(x @ x)
        self.b2 += float(y @ y)
        self.dot += float(x @ y)
        if d.size:
            self.max_abs = max(self.max_abs, float(np.abs(d).max()))

    def drift(self, pair: TensorPair) -> TensorDrift:
        if self.a2 > 0:
            rel = math.sqrt(self.d2 / self.a2)
        else:
            rel = 0.0 if self.d2 == 0 else math.inf
        if self.a2 > 0 and self.b2 > 0:
            cos = max(-1.0, min(1.0, self.dot / math.sqrt(self.a2 * self.b2)))
        else:
            cos = 1.0 if self.a2 == self.b2 == 0 else 0.0
        return TensorDrift(
            pair.a,
            pair.b,
            pair.node,
            pair.op_type,
            pair.matched_by,
            pair.shape,
            self.max_abs,
            rel,
            cos,
            self.nonfinite,
        )


def _measure(
    a: Model,
    b: Model,
    feeds_a: Mapping[str, np.ndarray],
    feeds_b: Mapping[str, np.ndarray],
    matching: Matching,
    output_pairs: Sequence[tuple[str, str]],
    batch_size: int,
) -> tuple[list[TensorDrift], list[OutputDrift], np.ndarray | None]:
    """Drift of every compared tensor and output; A's top-1 classes of the first output."""
    pairs = list(matching.pairs)
    by_a = {p.a: p for p in pairs}
    out_pairs = [by_a[pa] for pa, pb in output_pairs if pa in by_a and by_a[pa].b == pb]
    accs = {p.a: _Acc() for p in pairs}
    n = _batch(feeds_a)
    top1 = {p.a: 0 for p in out_pairs}
    top5 = {p.a: 0.0 for p in out_pairs}
    ks: dict[str, int | None] = {}
    classes: list[np.ndarray] = []
    taps_a = [p.a for p in pairs]
    taps_b = [p.b for p in pairs]
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        va = a.run({k: v[sl] for k, v in feeds_a.items()}, taps_a)
        vb = b.run({k: v[sl] for k, v in feeds_b.items()}, taps_b)
        for p in pairs:
            accs[p.a].add(va[p.a], vb[p.b])
        for k_out, p in enumerate(out_pairs):
            oa, ob = va[p.a], vb[p.b]
            if oa.ndim != 2 or oa.shape[1] < 2:
                ks[p.a] = None
                continue
            k = min(5, oa.shape[1])
            ks[p.a] = k
            ca, cb = oa.argmax(axis=1), ob.argmax(axis=1)
            top1[p.a] += int(np.count_nonzero(ca == cb))
            ta = np.argsort(-oa, axis=1, kind="stable")[:, :k]
            tb = np.argsort(-ob, axis=1, kind="stable")[:, :k]
            top5[p.a] += sum(len(set(x) & set(y)) / k for x, y in zip(ta.tolist(), tb.tolist()))
            if k_out == 0:
                classes.append(ca)
    tensors = [accs[p.a].drift(p) for p in pairs]
    by_tensor = {t.a: t for t in tensors}
    outputs = [
        OutputDrift(
            by_tensor[p.a],
            None if ks.get(p.a) is None else top1[p.a] / n,
            None if ks.get(p.a) is None else top5[p.a] / n,
            ks.get(p.a),
            n,
        )
        for p in out_pairs
    ]
    first_ok = bool(out_pairs) and ks.get(out_pairs[0].a) is not None
    return tensors, outputs, (np.concatenate(classes) if first_ok and classes else None)


# ------------------------------------------------------------------------------------ weights
def _weights(a: Model, b: Model, matching: Matching) -> list[WeightDrift]:
    """Kernel differences of convolutions paired by graph position (else by node name)."""
    ka = {k.node: k for k in conv_kernels(a)}
    kb = {k.node: k for k in conv_kernels(b)}
    by_node = {p.a: p.b for p in matching.nodes}
    out: list[WeightDrift] = []
    used: set[str] = set()
    for name, wa in ka.items():
        partner = by_node.get(name) or (name if name in kb else None)
        if partner is None or partner not in kb or partner in used:
            continue
        used.add(partner)
        drift = _weight_drift(wa, kb[partner])
        if drift is not None:
            out.append(drift)
    return out


def _weight_drift(wa: ConvKernels, wb: ConvKernels) -> WeightDrift | None:
    x = wa.weight.astype(np.float64)
    y = wb.weight.astype(np.float64)
    if x.shape != y.shape:
        log.info(
            "conv %s vs %s: kernel shapes %s and %s differ; not compared",
            wa.node,
            wb.node,
            x.shape,
            y.shape,
        )
        return None
    note = wb.quantization
    if (wb.op_type == "ConvInteger") != (wa.op_type == "ConvInteger"):
        # ConvInteger weights are integer units without a scale: fit the one scale that makes
        # them closest to the float kernels (the error is then a lower bound of the real one).
        ints, floats = (y, x) if wb.op_type == "ConvInteger" else (x, y)
        denom = float((ints * ints).sum())
        scale = float((ints * floats).sum()) / denom if denom > 0 else 1.0
        if wb.op_type == "ConvInteger":
            y = y * scale
        else:
            x = x * scale
        side = "B" if wb.op_type == "ConvInteger" else "A"
        note = (
            f"{side}'s ConvInteger weights are integer units (no scale in the node): rescaled by the "
            f"least-squares scale {scale:.4g}, so the error shown is a lower bound"
        )
    d = y - x
    d2, a2 = float((d * d).sum()), float((x * x).sum())
    rel = math.sqrt(d2 / a2) if a2 > 0 else (0.0 if d2 == 0 else math.inf)
    snr = math.inf if d2 == 0 else (10.0 * math.log10(a2 / d2) if a2 > 0 else -math.inf)
    return WeightDrift(
        wa.node,
        wb.node,
        wa.op_type,
        wb.op_type,
        tuple(int(s) for s in x.shape),
        float(np.abs(d).max()) if d.size else 0.0,
        rel,
        snr,
        note,
    )


# ------------------------------------------------------------------------------------ attention
def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two maps (ties get average ranks); 1.0 for two constant
    maps, ``nan`` when only one is constant (its ranks carry no order)."""
    from scipy.stats import rankdata

    u, v = (
        np.asarray(x, dtype=np.float64).ravel(),
        np.asarray(y, dtype=np.float64).ravel(),
    )
    const_u, const_v = bool(np.ptp(u) == 0), bool(np.ptp(v) == 0)
    if const_u or const_v:
        return 1.0 if const_u and const_v else float("nan")
    ru, rv = rankdata(u), rankdata(v)
    ru -= ru.mean()
    rv -= rv.mean()
    return float(np.clip((ru @ rv) / math.sqrt((ru @ ru) * (rv @ rv)), -1.0, 1.0))


def gradient_blocker(model: Model, input_name: str, output: str) -> str | None:
    """Why the numpy engine cannot differentiate ``output`` w.r.t. ``input_name``, or ``None``.

    The engine stops gradients silently at ops without a VJP rule (quantization, integer ops);
    a gradient method would then return all-zero maps. So the path is checked first: the output
    must be reachable from the input through ops with a numpy forward and a VJP.
    """
    from ..backends.numpy.registry import NON_DIFFERENTIABLE, REGISTRY

    graph = model.graph
    reach = {input_name}
    blocked: list[str] = []
    for n in graph.nodes:
        if not any(i in reach for i in n.inputs if i):
            continue
        ok = (
            n.domain in ("", "ai.onnx")
            and n.op_type not in NON_DIFFERENTIABLE
            and REGISTRY.get_forward(n.op_type, graph.opset) is not None
            and REGISTRY.get_vjp(n.op_type, graph.opset) is not None
        )
        if ok:
            reach.update(o for o in n.outputs if o)
        else:
            blocked.append(f"{n.op_type} at {n.label!r}")
    if output in reach:
        return None
    where = ", ".join(blocked[:3]) + (f" and {len(blocked) - 3} more" if len(blocked) > 3 else "")
    return f"{model.name!r} is not differentiable by the numpy engine ({where or 'no path to the output'})"


def _make_method(name: str, layer: str | None, size: tuple[int, int]) -> object:
    from ..methods.registry import get_method

    cls = get_method(name)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, object] = {}
    if "layer" in params:
        kwargs["layer"] = layer
    if name == "occlusion":  # small budget: 7 x 7 windows of a quarter side
        h, w = size
        kwargs["window"] = (max(1, h // 4), max(1, w // 4))
        kwargs["strides"] = (max(1, h // 8), max(1, w // 8))
    if name == "rise":
        kwargs["n_masks"] = FALLBACK_RISE_MASKS
    return cls(**kwargs)


def _attention(
    a: Model,
    b: Model,
    feeds_a: Mapping[str, np.ndarray],
    feeds_b: Mapping[str, np.ndarray],
    classes: np.ndarray,
    outputs: tuple[str, str],
    inputs: tuple[str, str],
    matching: Matching,
    methods: Sequence[str],
    fallback: Sequence[str],
    seed: int,
) -> tuple[list[AttentionDrift], str, bool]:
    from ..methods.base import image_size

    try:
        size = image_size(a, feeds_a, inputs[0])
    except InputError as e:
        return [], f"attention not compared: {e.message}", False
    reason = gradient_blocker(a, inputs[0], outputs[0]) or gradient_blocker(b, inputs[1], outputs[1])
    if reason is None:
        try:
            drifts = _compare_methods(
                a,
                b,
                feeds_a,
                feeds_b,
                classes,
                outputs,
                inputs,
                matching,
                methods,
                size,
                seed,
                False,
            )
        except UnsupportedOpError as e:
            reason = e.message
        else:
            return (
                drifts,
                "gradient methods on both models: " + ", ".join(methods),
                False,
            )
    drifts = _compare_methods(
        a,
        b,
        feeds_a,
        feeds_b,
        classes,
        outputs,
        inputs,
        matching,
        fallback,
        size,
        seed,
        True,
    )
    note = f"forward-only methods ({', '.join(fallback)}, small budget) on both models instead of {', '.join(methods)}: {reason}"
    return drifts, note, True


def _compare_methods(
    a: Model,
    b: Model,
    feeds_a: Mapping[str, np.ndarray],
    feeds_b: Mapping[str, np.ndarray],
    classes: np.ndarray,
    outputs: tuple[str, str],
    inputs: tuple[str, str],
    matching: Matching,
    methods: Sequence[str],
    size: tuple[int, int],
    seed: int,
    forward_only: bool,
) -> list[AttentionDrift]:
    from ..methods.layers import default_cam_layer

    out: list[AttentionDrift] = []
    for name in methods:
        probe = _make_method(name, None, size)
        layer_a = layer_b = None
        if "layer" in vars(probe):
            layer_a = default_cam_layer(a, outputs[0])
            layer_b = matching.partner(layer_a) or default_cam_layer(b, outputs[1])
        maps = []
        for model, feeds, layer, out_name, in_name in (
            (a, feeds_a, layer_a, outputs[0], inputs[0]),
            (b, feeds_b, layer_b, outputs[1], inputs[1]),
        ):
            method = _make_method(name, layer, size)
            expl = method.explain(  # type: ignore[attr-defined]
                model,
                feeds,
                classes,
                output=out_name,
                input_name=in_name,
                rng=np.random.default_rng(seed),
            )
            maps.append(np.asarray(expl.maps))
        rho = tuple(spearman(x, y) for x, y in zip(maps[0], maps[1]))
        out.append(AttentionDrift(name, rho, forward_only, layer_a, layer_b))
    return out


# ------------------------------------------------------------------------------------ flags
def _findings(
    tensors: Sequence[TensorDrift],
    outputs: Sequence[OutputDrift],
    first: TensorDrift | None,
    attention: Sequence[AttentionDrift],
    note: str,
    fell_back: bool,
    matching: Matching,
    threshold: float,
    min_spearman: float,
) -> list[Finding]:
    found: list[Finding] = []
    bad = [t for t in tensors if t.nonfinite]
    if bad:
        found.append(
            Finding(
                "diff.nonfinite",
                "error",
                f"{len(bad)} compared tensor(s) hold NaN or infinite values, first {bad[0].a!r} "
                f"(B's {bad[0].b!r}: {bad[0].nonfinite} element(s))",
                node=bad[0].node,
                tensor=bad[0].a,
                evidence={"tensors": [t.a for t in bad[:10]]},
                hint="FP16 overflows above 65504: keep that layer in float32 or rescale its inputs",
            )
        )
    all_agree = True
    for o in outputs:
        if o.top1 is not None and o.top1 < 1.0:
            all_agree = False
            differ = round((1.0 - o.top1) * o.samples)
            found.append(
                Finding(
                    "diff.top1",
                    "warning",
                    f"top-1 class differs on {differ} of {o.samples} input(s) at output {o.drift.a!r} "
                    f"({o.top1:.0%} agreement, top-{o.k} overlap {o.top5:.0%})",
                    tensor=o.drift.a,
                    evidence={
                        "top1": o.top1,
                        "top5": o.top5,
                        "k": o.k,
                        "samples": o.samples,
                    },
                    hint="look at the first diverging layer; real inputs give a fairer picture than a probe set",
                )
            )
        if o.drift.rel_l2 > threshold:
            found.append(
                Finding(
                    "diff.output-drift",
                    "warning",
                    f"output {o.drift.a!r} drifts by relative L2 {o.drift.rel_l2:.3g} (> {threshold:g})",
                    tensor=o.drift.a,
                    evidence={
                        "rel_l2": o.drift.rel_l2,
                        "max_abs": o.drift.max_abs,
                        "cosine": o.drift.cosine,
                    },
                )
            )
    if first is not None:
        found.append(
            Finding(
                "diff.first-divergence",
                "warning",
                f"first layer to diverge: {first.node} ({first.op_type}), tensor {first.a!r} "
                f"(B's {first.b!r}): relative L2 {first.rel_l2:.3g} > {threshold:g}",
                node=first.node,
                tensor=first.a,
                evidence={
                    "rel_l2": first.rel_l2,
                    "max_abs": first.max_abs,
                    "cosine": first.cosine,
                    "b": first.b,
                },
                hint="for a quantized model, keep this layer in float (nodes_to_exclude) or calibrate on real data",
            )
        )
    for m in attention:
        if math.isfinite(m.mean) and m.mean < min_spearman:
            found.append(
                Finding(
                    "diff.attention-drift",
                    "warning",
                    f"B looks at different evidence: {m.method} maps have mean Spearman {m.mean:.2f} "
                    f"(< {min_spearman:g})" + (" although the top-1 class agrees on every input" if all_agree else ""),
                    evidence={
                        "method": m.method,
                        "mean": m.mean,
                        "min": m.min,
                        "spearman": list(m.spearman),
                    },
                    hint="compare the maps side by side with `onnxviz report` on both models",
                )
            )
    if fell_back:
        found.append(Finding("diff.attention-fallback", "info", note))
    if matching.unmatched:
        a_count = len(matching.unmatched_in("A"))
        b_count = len(matching.unmatched_in("B"))
        found.append(
            Finding(
                "diff.unmatched",
                "info",
                f"{a_count} tensor(s) of A and {b_count} of B have no compared counterpart",
                evidence={
                    "A": matching.unmatched_in("A")[:20],
                    "B": matching.unmatched_in("B")[:20],
                },
            )
        )
    return found
