"""Explanation sanity: do the default gradient explanations depend on what the model learned?

The model-parameter randomization test of Adebayo et al. 2018 ("Sanity Checks for Saliency
Maps", sec. 3.1), reduced to its cheapest informative step: the top learned layer (the one
nearest the output, usually the classifier) is re-drawn at random and each default method
(saliency, Grad-CAM) explains the same classes again. A map that stays the same explains the
input (edges, contrast), not the model, and should not be trusted for this model. The audit pays
one extra explanation per method, on at most :data:`MAX_SAMPLES` of the audit inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError, TargetError, UnsupportedOpError
from ..inputs import detect_layout
from ..methods.evaluation import RandomizationResult, randomization_test
from ..methods.registry import get_method
from ..model import Model
from ..randomize import parametric_layers
from .findings import Finding
from .runner import AuditContext, Check, SkipCheck

__all__ = ["CHECKS", "MAX_SAMPLES", "METHODS", "RandomizationCheck"]

#: Samples the randomization test explains (each costs a backward pass of the numpy engine).
MAX_SAMPLES = 2
#: The methods checked, by registry name, and how messages name them: the report's defaults.
METHODS: tuple[tuple[str, str], ...] = (("saliency", "saliency"), ("gradcam", "Grad-CAM"))

_LISTED = 8


class RandomizationCheck(Check):
    """Saliency or Grad-CAM maps that barely change when the top learned layer is randomized
    (warning): they do not reflect what the model learned (Adebayo et al. 2018, sec. 3.1).

    Methods that pass get an info finding with the numbers; Grad-CAM is left out (info) when the
    model has no spatial map before its head. Skipped when the numpy engine cannot differentiate
    the model (with an info finding naming the op and node), for models without an image input
    or without learned layers, and when the outputs are not finite on the inputs.
    """

    id = "explanations.randomization"
    needs_inputs = True

    def run(self, ctx: AuditContext) -> list[Finding]:
        model = ctx.model
        image = _image_input(model)
        if image is None:
            raise SkipCheck("the model has no rank-4 image input; saliency and Grad-CAM explain images")
        if not parametric_layers(model):
            raise SkipCheck("the model has no learned layer (Conv, Gemm or MatMul with constant weights) to randomize")
        ctx.require_ort()
        feeds = _first_samples(ctx.batches, MAX_SAMPLES)
        outputs = model.run(feeds)
        broken = [k for k, v in outputs.items() if v.dtype.kind in "fc" and not np.all(np.isfinite(v))]
        if broken:
            raise SkipCheck(
                f"output(s) {broken} are not finite on these inputs (see activations.nonfinite): "
                "there is no score to explain"
            )
        found: list[Finding] = []
        tested = 0
        for name, label in METHODS:
            try:
                result = randomization_test(
                    model,
                    feeds,
                    get_method(name)(),
                    input_name=image,
                    top=1,
                    rng=np.random.default_rng(ctx.settings.seed),
                )
            except UnsupportedOpError as e:
                # Every method here needs the same input gradient: one refusal stands for all.
                reason = f"the numpy engine cannot differentiate the model: op {e.op_type} at node {e.node!r}"
                info = self.finding(
                    "info",
                    f"explanations not checked: {e.message}",
                    node=e.node,
                    evidence={"op": e.op_type, "node": e.node, "opset": e.opset},
                    hint=e.hint,
                )
                if tested == 0:
                    raise SkipCheck(reason, findings=[*found, info]) from e
                found.append(info)
                break
            except (InputError, TargetError) as e:
                # Does not apply: no spatial map for a CAM, outputs that are not class scores.
                found.append(self.finding("info", f"{label} not checked: {e.message}", evidence={"method": name}, hint=e.hint))
                continue
            tested += 1
            found.append(self._judge(label, result))
        if tested == 0:
            raise SkipCheck("no explanation method could run on this model", findings=found)
        return found

    def _judge(self, label: str, r: RandomizationResult) -> Finding:
        """The finding for one method: warning when insensitive, info otherwise."""
        s_abs = r.spearman_abs[0]
        s_ssim = r.ssim[0]
        flat_original = _flat(r.original_maps)
        flat_random = _flat(r.maps[0])
        usable = ~flat_original
        layer = r.layers[0]
        evidence: dict[str, object] = {
            "method": r.method,
            "layer": layer,
            "samples": int(s_abs.shape[0]),
            "spearman_abs": _rounded(s_abs),
            "ssim": _rounded(s_ssim),
            "threshold": r.threshold,
        }
        if flat_original.any():
            evidence["flat_maps"] = int(flat_original.sum())
        if flat_random.any():
            evidence["flat_maps_randomized"] = int(flat_random.sum())
        if not usable.any():
            return self.finding(
                "info",
                f"{label} maps are flat (constant) on every sample, so randomizing the top layer tells nothing: "
                "the test is inconclusive",
                node=layer,
                evidence=evidence,
                hint="audit with real inputs (--input) on which the model makes confident predictions",
            )
        # Flat originals rank nothing; the verdict is taken over the samples with a ranking.
        spearman_mean = float(s_abs[usable].mean())
        ssim_mean = float(s_ssim[usable].mean())
        evidence = {"spearman_abs_mean": round(spearman_mean, 4), "ssim_mean": round(ssim_mean, 4), **evidence}
        if spearman_mean >= r.threshold:
            return self.finding(
                "warning",
                f"{label} maps barely change when the top layer is randomized (mean Spearman {spearman_mean:.2f}): "
                "they do not reflect what this model learned; do not trust them for this model",
                node=layer,
                evidence=evidence,
                hint="the maps follow the input, not the class score; compare methods with `onnxviz explain "
                "--trust` and use one that passes this check (Adebayo et al. 2018, sec. 3.1)",
            )
        vanished = " (the randomized maps are flat)" if flat_random[usable].all() else ""
        return self.finding(
            "info",
            f"{label} maps change when the top layer is randomized (mean Spearman {spearman_mean:.2f}, "
            f"SSIM {ssim_mean:.2f}){vanished}: they depend on what this model learned",
            node=layer,
            evidence=evidence,
        )


def _image_input(model: Model) -> str | None:
    """The first rank-4 input that looks like an image (NCHW or NHWC)."""
    return next((i.name for i in model.inputs if detect_layout(i) is not None), None)


def _first_samples(batches: Sequence[Mapping[str, np.ndarray]], limit: int) -> dict[str, np.ndarray]:
    """Up to ``limit`` samples of the audit batches as one batch (the methods split it again for
    a model with a fixed batch size)."""
    taken: list[Mapping[str, np.ndarray]] = []
    count = 0
    for batch in batches:
        if count >= limit:
            break
        taken.append(batch)
        count += int(next(iter(batch.values())).shape[0])
    return {k: np.concatenate([b[k] for b in taken])[:limit] for k in taken[0]}


def _flat(maps: np.ndarray) -> np.ndarray:
    """Per sample: the map is constant (or not finite), so it ranks no pixel above another."""
    flat = np.asarray(maps, dtype=np.float64).reshape(maps.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1)
    spread = np.ptp(np.where(np.isfinite(flat), flat, 0.0), axis=1)
    scale = np.abs(np.where(np.isfinite(flat), flat, 0.0)).max(axis=1)
    return ~finite | (spread <= 1e-6 * scale)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values[:_LISTED]]


CHECKS: tuple[type[Check], ...] = (RandomizationCheck,)
