"""Evaluating explanations: do the maps point at what the model uses, and do they depend on the model?

- :func:`deletion_insertion`, the causal metrics of Petsiuk et al. 2018 (RISE, sec. 4.1): hide
  (or reveal) pixels in the order of the map and watch the target's probability.
- :func:`randomization_test`, the model-parameter randomization sanity check of Adebayo et al.
  2018, sec. 3.1: a map that stays the same when the model's weights are replaced by random ones
  cannot be explaining the model.
- :func:`completeness`, IG's own completeness error (a convenience accessor).

Results are frozen dataclasses; :meth:`DeletionInsertion.as_trust` and
:meth:`RandomizationResult.as_trust` give the figures to merge into an
:attr:`~onnxviz.methods.base.Explanation.trust` mapping. Forward passes go through onnxruntime
(:func:`~onnxviz.methods.base.run_output`), ``batch_size`` rows at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, TargetError
from ..model import Model
from ..randomize import parametric_layers, randomized_model
from ..targets import Target
from .base import (
    Explanation,
    Method,
    TargetSpec,
    channel_axis,
    chunks,
    image_size,
    is_probability,
    run_output,
    scale_maps,
    take_rows,
)

__all__ = [
    "DeletionInsertion",
    "RandomizationResult",
    "completeness",
    "deletion_insertion",
    "randomization_test",
    "spearman",
    "ssim",
]


# --------------------------------------------------------------------------------------------
# Deletion / insertion
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionInsertion:
    """Deletion and insertion curves and their areas, one row per sample.

    ``fractions[k]`` is the fraction of pixels hidden (deletion) or revealed (insertion) at step
    ``k`` (``0 .. 1``, ``steps + 1`` points); ``deletion_curve[i, k]`` and
    ``insertion_curve[i, k]`` are sample ``i``'s target score there. The AUCs are the plain
    trapezoid rule of those curves over ``fractions`` (not divided by the clean score): lower
    deletion and higher insertion AUC mean a better map. ``score`` says what was measured (e.g.
    ``"softmax probability of 'logits'"``), ``baseline`` what hidden pixels were set to.
    """

    method: str
    output: str
    targets: np.ndarray
    score: str
    baseline: str
    steps: int
    fractions: np.ndarray
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray

    def as_trust(self) -> dict[str, Any]:
        """The figures to merge into ``Explanation.trust``."""
        return {
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "deletion_insertion": f"{self.steps} steps, baseline {self.baseline}, score: {self.score}",
        }


def _auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid rule along the last axis over the (possibly uneven) ``fractions``."""
    return ((curves[..., 1:] + curves[..., :-1]) * 0.5 * np.diff(fractions)).sum(axis=-1)


def _baseline_image(
    model: Model, x: np.ndarray, input_name: str, baseline: str | float, blur_sigma: float
) -> tuple[np.ndarray, str]:
    if isinstance(baseline, str):
        if baseline == "zero":
            return np.zeros_like(x), "zero"
        if baseline == "blur":
            from scipy.ndimage import gaussian_filter

            axis = channel_axis(model, input_name)
            sigma = [0.0 if a in (0, axis) else blur_sigma for a in range(4)]
            # Petsiuk et al.'s insertion substrate: an 11-tap Gaussian kernel of sigma 5 (at the
            # default sigma, truncate=1 gives radius 5); borders replicate instead of zero-padding.
            blurred = gaussian_filter(x.astype(np.float64), sigma=sigma, truncate=1.0, mode="nearest")
            return blurred.astype(x.dtype), f"blur (sigma {blur_sigma:g})"
        raise InputError(f"unknown baseline {baseline!r}", hint="use 'zero', 'blur' or a number")
    if isinstance(baseline, (bool, np.bool_)) or not np.isfinite(float(baseline)):
        raise InputError(f"baseline must be 'zero', 'blur' or a finite number, got {baseline!r}")
    return np.full_like(x, float(baseline)), f"{float(baseline):g}"


def _pixel_ranks(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) -> each pixel's position in the order of decreasing map value (0 = most
    important). Ties keep row-major order (a stable sort), so the order is deterministic."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1).astype(np.float64)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :].repeat(n, axis=0), axis=1)
    return ranks.reshape(maps.shape)


def deletion_insertion(
    model: Model,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    explanation: Explanation,
    *,
    steps: int = 20,
    baseline: str | float = "zero",
    softmax: bool | None = None,
    target: Target = None,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> DeletionInsertion:
    """Deletion and insertion curves of ``explanation`` (Petsiuk et al. 2018, sec. 4.1).

    Pixels (all channels at one location, whatever the layout) are ranked by
    ``explanation.maps`` in decreasing order, ties in row-major order. At step ``k = 0..steps``
    the first ``round(k * H * W / steps)`` pixels are replaced by the baseline (deletion) or are
    the only ones taken from the image, the rest being baseline (insertion). ``baseline``:
    ``"zero"`` (torch-cam's and the paper's deletion substrate; zero in the model's input space,
    i.e. after any normalization), ``"blur"`` (the image under a Gaussian blur of ``blur_sigma``,
    the paper's insertion substrate) or a number; the same baseline serves both curves.

    The score is the explained class's probability, as in the paper: the output itself when it
    already holds probabilities (rows summing to one), else its softmax over the class axis
    (``softmax=None``, the rule RISE uses); ``softmax=True`` forces and ``softmax=False``
    disables the softmax (raw target score, e.g. a logit). The classes are
    ``explanation.targets`` of ``explanation.output``; pass ``target`` (a cotangent array) for an
    explanation of an explicit cotangent target, which is scored raw.

    AUC = trapezoid rule of each curve over the pixel fractions in [0, 1], not normalized by the
    clean score. All ``2 (steps + 1)`` images of every sample are run ``batch_size`` at a time;
    ``inputs`` is not modified.
    """
    if int(steps) != steps or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    steps = int(steps)
    if not float(blur_sigma) > 0:
        raise InputError(f"blur_sigma must be positive, got {blur_sigma}")
    feeds = model.feeds(inputs)
    name = explanation.input_name
    if name not in feeds:
        raise InputError(
            f"the explanation is of input {name!r}, which the model does not have", hint=f"inputs: {list(feeds)}"
        )
    x = feeds[name]
    H, W = image_size(model, feeds, name)
    maps = np.asarray(explanation.maps)
    if maps.shape != (x.shape[0], H, W):
        raise InputError(
            f"explanation maps have shape {list(maps.shape)}; the input needs {[x.shape[0], H, W]}",
            hint="evaluate an explanation of these very inputs",
        )
    if not np.all(np.isfinite(maps)):
        raise InputError("the explanation's maps contain NaN or infinite values")

    spec = _target_spec(explanation, target, x.shape[0])
    clean = run_output(model, feeds, spec.output)
    use_softmax = spec.cotangent is None and softmax is not False and (softmax is True or not is_probability(clean))
    if spec.cotangent is not None:
        what = f"raw score of {spec.output!r} under the cotangent target"
    elif use_softmax:
        what = f"softmax probability of {spec.output!r}"
    elif is_probability(clean):
        what = f"probability output {spec.output!r}"
    else:
        what = f"raw score of {spec.output!r}"

    base, base_name = _baseline_image(model, x, name, baseline, float(blur_sigma))
    ranks = _pixel_ranks(maps)
    n_pix = H * W
    counts = (np.arange(steps + 1) * n_pix + steps // 2) // steps
    fractions = counts / n_pix
    axis = channel_axis(model, name)

    n = x.shape[0]
    # Row r: curve r // (n (steps+1)) (0 deletion, 1 insertion), then sample-major, then step.
    total = 2 * n * (steps + 1)
    curve_of, rest = np.divmod(np.arange(total), n * (steps + 1))
    sample_of, step_of = np.divmod(rest, steps + 1)
    scores = np.empty(total)
    for sl in chunks(total, batch_size):
        rows = sample_of[sl]
        chosen = ranks[rows] < counts[step_of[sl]][:, None, None]  # (B, H, W): top-k pixels
        chosen = np.expand_dims(chosen, axis)
        deleting = (curve_of[sl] == 0).reshape(-1, 1, 1, 1)
        # Deletion shows the baseline on the chosen pixels, insertion shows the image there.
        show_image = np.where(deleting, ~chosen, chosen)
        batch = take_rows(feeds, rows)
        batch[name] = np.where(show_image, x[rows], base[rows])
        value = run_output(model, batch, spec.output)
        scores[sl] = spec.probability(value, rows) if use_softmax else spec.score(value, rows)
    curves = scores.reshape(2, n, steps + 1)
    return DeletionInsertion(
        method=explanation.method,
        output=spec.output,
        targets=spec.classes,
        score=what,
        baseline=base_name,
        steps=steps,
        fractions=fractions,
        deletion_curve=curves[0],
        insertion_curve=curves[1],
        deletion_auc=_auc(curves[0], fractions),
        insertion_auc=_auc(curves[1], fractions),
    )


def _target_spec(explanation: Explanation, target: Target, n: int) -> TargetSpec:
    if isinstance(target, np.ndarray) and target.ndim > 1:
        if target.shape[0] != n:
            raise TargetError(f"cotangent target for {target.shape[0]} samples, the batch has {n}")
        return TargetSpec(explanation.output, np.full(n, -1, np.int64), target.astype(np.float64))
    if target is not None:
        raise TargetError(
            "deletion_insertion scores the explanation's own classes; target= is only for cotangent targets",
            hint="explain the class you want to evaluate, then evaluate that explanation",
        )
    classes = np.asarray(explanation.targets, dtype=np.int64)
    if classes.shape != (n,) or np.any(classes < 0):
        raise TargetError(
            "the explanation was made for an explicit cotangent target, which it does not record",
            hint="pass the same cotangent array as target=",
        )
    return TargetSpec(explanation.output, classes)


# --------------------------------------------------------------------------------------------
# Similarity of maps
# --------------------------------------------------------------------------------------------


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps ``a[i]``, ``b[i]`` (flattened), ties ranked
    by their average (``scipy.stats.spearmanr``). Two constant maps give 1 (the same, empty,
    ranking), one constant map against a varying one gives 0."""
    from scipy.stats import rankdata

    n = a.shape[0]
    ra = rankdata(a.reshape(n, -1), axis=1)
    rb = rankdata(b.reshape(n, -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    na, nb = np.sqrt((ra * ra).sum(axis=1)), np.sqrt((rb * rb).sum(axis=1))
    out = np.zeros(n)
    both = (na > 0) & (nb > 0)
    out[both] = (ra[both] * rb[both]).sum(axis=1) / (na[both] * nb[both])
    out[(na == 0) & (nb == 0)] = 1.0
    return np.clip(out, -1.0, 1.0)


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Mean structural similarity (Wang et al. 2004, eq. 13) of each pair of 2-D maps ``a[i]``,
    ``b[i]`` as ``skimage.metrics.structural_similarity(gaussian_weights=True)`` computes it:
    local statistics under a Gaussian window of ``sigma`` truncated at 3.5 sigma (11 taps at
    1.5), population (not sample) covariances, reflected borders, and the mean taken away from
    a border of half a window (over the whole map when it is smaller than a window)."""
    from scipy.ndimage import gaussian_filter

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    s = (0.0, float(sigma), float(sigma))

    def f(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, sigma=s, truncate=3.5, mode="reflect")

    ua, ub = f(a), f(b)
    va = f(a * a) - ua * ua
    vb = f(b * b) - ub * ub
    cov = f(a * b) - ua * ub
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * ua * ub + c1) * (2 * cov + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    pad = int(3.5 * sigma + 0.5)
    if smap.shape[1] > 2 * pad and smap.shape[2] > 2 * pad:
        smap = smap[:, pad:-pad, pad:-pad]
    return smap.reshape(smap.shape[0], -1).mean(axis=1)


# --------------------------------------------------------------------------------------------
# Model-parameter randomization
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomizationResult:
    """Maps of a method on progressively randomized models against the trained model's.

    Step ``k`` randomized ``layers[k]`` (``mode="independent"``) or ``layers[: k + 1]``
    (``"cascade"``), top layer first. ``spearman_abs[k, i]`` is the rank correlation of the
    maps' absolute values for sample ``i``, ``spearman_signed`` that of the maps themselves
    (identical for unsigned maps), ``ssim`` the SSIM of the min-max-scaled absolute maps.
    ``verdict`` is ``"trustworthy"`` when the mean of ``spearman_abs`` after randomizing the top
    layer (step 0) is below ``threshold``, else ``"insensitive"``.
    """

    method: str
    variant: str
    mode: str
    layers: tuple[str, ...]
    targets: np.ndarray
    original_maps: np.ndarray
    maps: np.ndarray
    spearman_abs: np.ndarray
    spearman_signed: np.ndarray
    ssim: np.ndarray
    threshold: float
    verdict: str

    @property
    def mean_spearman_abs(self) -> np.ndarray:
        """Per step, the mean over samples of ``spearman_abs``."""
        return self.spearman_abs.mean(axis=1)

    def as_trust(self) -> dict[str, Any]:
        """The figures to merge into ``Explanation.trust``."""
        return {
            "randomization_verdict": self.verdict,
            "randomization_mode": self.mode,
            "randomization_layers": list(self.layers),
            "randomization_spearman_abs": self.spearman_abs,
            "randomization_spearman_signed": self.spearman_signed,
            "randomization_ssim": self.ssim,
        }


def randomization_test(
    model: Model,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    method: Method,
    *,
    target: Target = None,
    output: str | None = None,
    input_name: str | None = None,
    layers: str = "cascade",
    top: int | None = None,
    threshold: float = 0.5,
    batchnorm: bool = False,
    rng: np.random.Generator | None = None,
) -> RandomizationResult:
    """Adebayo et al. 2018, "Sanity Checks for Saliency Maps", sec. 3.1: model-parameter
    randomization.

    The learned layers (:func:`onnxviz.randomize.parametric_layers`; with ``batchnorm`` also
    the batch-norm scales and shifts) are taken from the output side down, ``top`` of them
    (default all). ``layers="cascade"`` randomizes them cumulatively (step k: the top k + 1
    layers random), ``"independent"`` one at a time. Random weights are zero-mean Gaussians with
    each tensor's standard deviation (:func:`onnxviz.randomize.random_like`) drawn from ``rng``
    (default seed 0); layer k gets the same random weights in both modes. Every explanation
    explains the class the trained model was explained for (its top class when
    ``target=None``) and uses the same method randomness, so only the weights differ.

    ``threshold`` (default 0.5): the method is called ``"trustworthy"`` if the mean Spearman
    correlation of absolute maps after randomizing only the top layer falls below it, else
    ``"insensitive"``. A map that explains the model must already change when the class
    scores are rewired (the paper's logits randomization); 0.5 is a judgement call, not the
    paper's (which shows curves).
    """
    if layers not in ("cascade", "independent"):
        raise InputError(f"unknown randomization mode {layers!r}", hint="use 'cascade' or 'independent'")
    if not 0 < float(threshold) <= 1:
        raise InputError(f"threshold must be in (0, 1], got {threshold}")
    rng = rng if rng is not None else np.random.default_rng(0)
    method_seed = int(rng.integers(2**63))
    weight_rng = np.random.default_rng(int(rng.integers(2**63)))

    order = parametric_layers(model, batchnorm=batchnorm)[::-1]
    if top is not None:
        if int(top) != top or top < 1:
            raise InputError(f"top must be a positive number of layers, got {top!r}")
        order = order[: int(top)]
    if not order:
        raise InputError(
            "the model has no layers with learned weights to randomize",
            hint="the test needs Conv, Gemm or MatMul nodes with constant weights",
        )

    def explain(m: Model, t: Target) -> Explanation:
        return method.explain(
            m, inputs, t, output=output, input_name=input_name, rng=np.random.default_rng(method_seed)
        )

    original = explain(model, target)
    classes = np.asarray(original.targets)
    fixed: Target = classes if np.all(classes >= 0) else target

    maps = []
    current = model
    for label in order:
        base = current if layers == "cascade" else model
        current = randomized_model(base, [label], weight_rng)
        maps.append(np.asarray(explain(current, fixed).maps, dtype=np.float64))
    stacked = np.stack(maps)
    ref = np.asarray(original.maps, dtype=np.float64)
    s_abs = np.stack([spearman(np.abs(m), np.abs(ref)) for m in stacked])
    s_signed = np.stack([spearman(m, ref) for m in stacked])
    ref_scaled = scale_maps(np.abs(ref))
    s_ssim = np.stack([ssim(scale_maps(np.abs(m)), ref_scaled) for m in stacked])
    verdict = "trustworthy" if float(s_abs[0].mean()) < threshold else "insensitive"
    return RandomizationResult(
        method=original.method,
        variant=original.variant,
        mode=layers,
        layers=tuple(order),
        targets=classes,
        original_maps=ref,
        maps=stacked,
        spearman_abs=s_abs,
        spearman_signed=s_signed,
        ssim=s_ssim,
        threshold=float(threshold),
        verdict=verdict,
    )


# --------------------------------------------------------------------------------------------
# Completeness
# --------------------------------------------------------------------------------------------


def completeness(explanation: Explanation) -> np.ndarray:
    """Per-sample relative completeness error ``|sum attr - (F(x) - F(x'))| / |F(x) - F(x')|``
    that Integrated Gradients records in its trust figures (Sundararajan et al. 2017, eq. 3)."""
    if "completeness_error" not in explanation.trust:
        raise InputError(
            f"the {explanation.method!r} explanation records no completeness error",
            hint="completeness is an axiom of Integrated Gradients; explain with IntegratedGradients",
        )
    return np.asarray(explanation.trust["completeness_error"], dtype=np.float64)
