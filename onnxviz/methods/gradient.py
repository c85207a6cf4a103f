"""Gradient attribution: plain gradients, SmoothGrad, Integrated Gradients, guided backprop, deconvnet.

Every method here is one or more backward passes of the numpy engine from the target score to
the attributed input. Passes over many rows (IG steps, SmoothGrad samples) are stacked along the
batch axis and sent through the engine ``batch_size`` rows at a time: the rows are ordered
sample-major (row = sample index x step), each chunk is one ``value_and_grad`` call whose seed
selects each row's own target (and carries the row's quadrature weight), and the per-row
gradients are summed per sample in float64. So memory is bounded by ``batch_size`` rows whatever
the number of steps or samples, and results do not depend on ``batch_size``.

Random draws (SmoothGrad noise, the uniform IG baseline) come from the ``rng`` given to
:meth:`Method.explain`, drawn sample-major in chunk order: a batch gives the same result as the
same samples explained one after the other with the same generator.

Models with several inputs: the gradient is taken w.r.t. ``input_name``; the other inputs are
held at their given values (each row sees its own sample's values). Every input is assumed to
have the batch on axis 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from ..backends.numpy.registry import REGISTRY, Call, Grads, VjpFn
from ..errors import InputError
from ..model import Model
from .base import (
    Explanation,
    Method,
    TargetSpec,
    channel_axis,
    chunks,
    reduce_channels,
    run_output,
)

__all__ = [
    "IG_RULES",
    "RELU_LIKE_OPS",
    "Deconvnet",
    "Gradient",
    "GradientMethod",
    "GradientXInput",
    "GuidedBackprop",
    "IntegratedGradients",
    "Saliency",
    "SmoothGrad",
    "ig_rule",
]

#: Forward passes the engine can take the tape from (see ``NumpyEngine.value_and_grad``).
_FORWARDS = ("numpy", "onnxruntime")
_DTYPES = ("float32", "float64")


# --------------------------------------------------------------------------------------------
# Family base
# --------------------------------------------------------------------------------------------


class GradientMethod(Method):
    """Shared machinery of the gradient family: chunked, seeded backward passes and the result.

    ``batch_size`` bounds how many rows (stacked inputs) go through the engine per pass;
    ``dtype`` is the engine's float type (``"float64"`` for comparisons with references);
    ``forward`` is ``"numpy"`` (the reference forward, any dtype) or ``"onnxruntime"``
    (float32 only; the tape is tapped from one onnxruntime run).
    """

    #: How attributions become an (N, H, W) map for display (see :func:`reduce_channels`).
    reduction: ClassVar[str] = "sum"
    #: Whether the map is signed (diverging colormap) or non-negative.
    signed: ClassVar[bool] = True

    def __init__(self, *, batch_size: int = 16, dtype: str | type = "float32", forward: str = "numpy") -> None:
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        name = np.dtype(dtype).name
        if name not in _DTYPES:
            raise InputError(f"dtype {name!r} is not supported", hint="use float32 or float64")
        if forward not in _FORWARDS:
            raise InputError(f"unknown forward {forward!r}", hint="use 'numpy' or 'onnxruntime'")
        if forward == "onnxruntime" and name != "float32":
            raise InputError("forward='onnxruntime' runs in float32 only", hint="use forward='numpy' for float64")
        self.batch_size = int(batch_size)
        self.dtype = name
        self.forward = forward

    # ---------------------------------------------------------------- passes
    def _row_gradients(
        self,
        model: Model,
        feeds: Mapping[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        sample_of: np.ndarray,
        build: Callable[[slice], np.ndarray],
        *,
        weights: np.ndarray | None = None,
        rules: Mapping[str, VjpFn] | None = None,
        sum_rows: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(samples, gradients, scores)`` per chunk of rows: ``gradients[j]`` belongs to
        sample ``samples[j]``, ``scores`` are the chunk's rows' target scores.

        Row ``r`` belongs to sample ``sample_of[r]`` (rows are sample-major); ``build(slice)``
        returns the attributed input for those rows; ``weights[r]`` scales row ``r``'s seed (a
        quadrature weight), so the gradients come out already weighted. A model whose batch axis
        is a fixed number gets chunks of exactly that size (rows are a multiple of it: N equals
        it, rows are N x steps).

        ``sum_rows`` (for methods that only need each sample's sum of row gradients): chunks
        then never mix samples, and each yields one gradient row, the sum of its rows', which
        the compiled backward forms inside the graph before the input's first linear ops (see
        ``Model.value_and_grad``). Ignored for a model with a fixed batch axis.
        """
        dtype = np.dtype(self.dtype)
        limit = model.batch_limit
        summed = sum_rows and limit is None
        for sl in _row_chunks(sample_of, limit or self.batch_size, balanced=limit is None, per_sample=summed):
            idx = sample_of[sl]
            x = np.asarray(build(sl), dtype=dtype)
            w = np.ones(len(idx)) if weights is None else np.asarray(weights[sl], dtype=np.float64)
            chunk = {k: (x if k == input_name else v[idx]) for k, v in feeds.items()}

            def seed(value: np.ndarray, idx: np.ndarray = idx, w: np.ndarray = w) -> np.ndarray:
                s = target.seed(value, idx)
                return s * w.reshape((-1,) + (1,) * (value.ndim - 1)).astype(value.dtype)

            # An array seed when the output shape is known (no extra forward to evaluate it).
            fixed = target.seed_array(idx, dtype)
            if fixed is not None:
                fixed = fixed * w.reshape((-1,) + (1,) * (fixed.ndim - 1)).astype(dtype)
            result = model.value_and_grad(
                chunk,
                {target.output: seed if fixed is None else fixed},
                (input_name,),
                dtype=dtype,
                rules=rules,
                forward=self.forward,
                independent_rows=True,
                sum_rows=summed,
            )
            scores = target.score(result.values[target.output], idx)
            yield (idx[:1] if summed else idx), result.grads[input_name], scores

    def _gradient(
        self,
        model: Model,
        feeds: Mapping[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rules: Mapping[str, VjpFn] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One backward pass per sample (chunked): the gradients and the target scores."""
        x = feeds[input_name]
        n = x.shape[0]
        grads = np.zeros(x.shape, dtype=np.dtype(self.dtype))
        scores = np.zeros(n)
        for idx, g, s in self._row_gradients(
            model, feeds, input_name, target, np.arange(n), lambda sl: x[sl], rules=rules
        ):
            grads[idx] = g
            scores[idx] = s
        return grads, scores

    def _scores(self, model: Model, feeds: Mapping[str, np.ndarray], target: TargetSpec,
                original: bool = True) -> np.ndarray:
        """Target scores of ``feeds`` in the method's dtype: float32 from onnxruntime (for the
        ``original`` inputs, the values the target was resolved on), float64 from the numpy engine."""
        if np.dtype(self.dtype) == np.float32:
            if original and target.values is not None:
                return target.score(target.values)
            return target.score(run_output(model, feeds, target.output))
        value = model.evaluate(feeds, [target.output], dtype=np.dtype(self.dtype))[target.output]
        return target.score(value)

    # ---------------------------------------------------------------- result
    def _result(
        self,
        model: Model,
        input_name: str,
        target: TargetSpec,
        attributions: np.ndarray,
        scores: np.ndarray,
        variant: str,
        trust: Mapping[str, Any] | None = None,
        *,
        signed: bool | None = None,
    ) -> Explanation:
        attributions = attributions.astype(np.dtype(self.dtype), copy=False)
        return Explanation(
            method=self.name,
            variant=variant,
            attributions=attributions,
            maps=_maps(attributions, channel_axis(model, input_name), self.reduction),
            signed=self.signed if signed is None else signed,
            output=target.output,
            targets=target.classes,
            scores=np.asarray(scores, dtype=np.float64),
            input_name=input_name,
            params=self.params,
            trust=dict(trust or {}),
        )


def _maps(attr: np.ndarray, axis: int, how: str) -> np.ndarray:
    """(N, H, W) maps: channel reduction for images, the values themselves (abs for
    ``max_abs``) for (N, H, W) inputs, (N, 1, F) for flat feature vectors."""
    if attr.ndim == 4:
        return reduce_channels(attr, axis, how)
    flat = np.abs(attr) if how in ("max_abs", "sum_abs") else attr
    if attr.ndim == 3:
        return flat
    return flat.reshape(attr.shape[0], 1, -1)


def _row_chunks(sample_of: np.ndarray, size: int, *, balanced: bool, per_sample: bool) -> Iterator[slice]:
    """:func:`chunks` over all rows, or over each sample's (contiguous) rows on their own."""
    if not per_sample:
        yield from chunks(len(sample_of), size, balanced=balanced)
        return
    starts = np.flatnonzero(np.r_[True, sample_of[1:] != sample_of[:-1]])
    ends = np.r_[starts[1:], len(sample_of)]
    for a, b in zip(starts.tolist(), ends.tolist()):
        for sl in chunks(b - a, size, balanced=balanced):
            yield slice(a + sl.start, a + sl.stop)


def _accumulate(acc: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """``acc[i] += sum of rows belonging to sample i``; rows are sample-major, so each sample's
    rows in a chunk are contiguous and one reduction per sample does it."""
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    ends = np.r_[starts[1:], len(idx)]
    for a, b in zip(starts, ends):
        acc[idx[a]] += rows[a:b].sum(axis=0, dtype=np.float64)


def _per_sample(x: np.ndarray) -> tuple[int, ...]:
    """Broadcast shape of one value per sample against a batch like ``x``."""
    return (-1,) + (1,) * (x.ndim - 1)


# --------------------------------------------------------------------------------------------
# Plain gradients
# --------------------------------------------------------------------------------------------


class Gradient(GradientMethod):
    """The signed input gradient ``dS_c/dx`` of the target score (pre-softmax when the target
    output is the logits). Baehrens et al. 2010 / Simonyan et al. 2013 without the absolute
    value and channel maximum: the raw first-order sensitivity, as Captum's ``Saliency(abs=False)``.
    Map: signed sum over channels."""

    name: ClassVar[str] = "gradient"

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        grads, scores = self._gradient(model, feeds, input_name, target)
        return self._result(model, input_name, target, grads, scores, "signed input gradient dS/dx")


class Saliency(GradientMethod):
    """Simonyan, Vedaldi & Zisserman 2013, "Deep Inside Convolutional Networks", sec. 3.1:
    ``M_ij = max_c |w_{h(i,j,c)}|`` with ``w = dS_c/dI`` at the image. Attributions are ``|dS/dx|``
    (Captum ``Saliency(abs=True)``); the map is their maximum over colour channels."""

    name: ClassVar[str] = "saliency"
    reduction: ClassVar[str] = "max_abs"
    signed: ClassVar[bool] = False

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        grads, scores = self._gradient(model, feeds, input_name, target)
        return self._result(
            model, input_name, target, np.abs(grads), scores, "|dS/dx|, map = max over channels (Simonyan 2013)"
        )


class GradientXInput(GradientMethod):
    """Gradient x Input (Shrikumar et al. 2016, "Not Just a Black Box"): ``x * dS/dx``, the
    first-order Taylor term of ``S`` around zero (Captum ``InputXGradient``). Map: signed sum over
    channels."""

    name: ClassVar[str] = "gradient_x_input"

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        grads, scores = self._gradient(model, feeds, input_name, target)
        x = feeds[input_name].astype(grads.dtype)
        return self._result(model, input_name, target, x * grads, scores, "x * dS/dx")


# --------------------------------------------------------------------------------------------
# SmoothGrad
# --------------------------------------------------------------------------------------------

_SMOOTHGRAD_KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


class SmoothGrad(GradientMethod):
    """SmoothGrad (Smilkov et al. 2017, eq. 3): ``M(x) = 1/n sum_k dS/dx (x + N(0, sigma^2))``.

    ``samples`` noisy copies (paper: 50), ``sigma = noise * (max(x) - min(x))`` per sample over
    the whole attributed input (paper: 10-20 % of the range; default 0.15). ``sigma_absolute``
    uses ``noise`` as the standard deviation itself, as Captum's ``NoiseTunnel(stdevs=...)``
    (whose defaults are stdevs 1.0 and 5 samples). ``kind``: ``"smoothgrad"`` (mean gradient,
    signed), ``"smoothgrad_sq"`` (mean squared gradient, SmoothGrad-Squared of Hooker et al. 2019)
    or ``"vargrad"`` (variance of the gradients, ``E[g^2] - E[g]^2``, Adebayo et al. 2018; as
    Captum computes it). Noise is drawn from ``rng``, sample-major, in the method's dtype
    (``standard_normal(dtype=float32)`` for float32, half the time of float64 draws, which cost
    about two forward passes' worth over 50 samples on a ResNet-50). Map: sum over channels.
    """

    name: ClassVar[str] = "smoothgrad"

    def __init__(
        self,
        samples: int = 50,
        noise: float = 0.15,
        *,
        kind: str = "smoothgrad",
        sigma_absolute: bool = False,
        batch_size: int = 16,
        dtype: str | type = "float32",
        forward: str = "numpy",
    ) -> None:
        super().__init__(batch_size=batch_size, dtype=dtype, forward=forward)
        if int(samples) < 1:
            raise InputError(f"samples must be at least 1, got {samples}")
        if not float(noise) >= 0:
            raise InputError(f"noise must be non-negative, got {noise}")
        if kind not in _SMOOTHGRAD_KINDS:
            raise InputError(f"unknown SmoothGrad kind {kind!r}", hint=f"use one of {list(_SMOOTHGRAD_KINDS)}")
        self.samples = int(samples)
        self.noise = float(noise)
        self.kind = kind
        self.sigma_absolute = bool(sigma_absolute)

    def sigmas(self, x: np.ndarray) -> np.ndarray:
        """The noise standard deviation of each sample of ``x``."""
        if self.sigma_absolute:
            return np.full(x.shape[0], self.noise)
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        return self.noise * (flat.max(axis=1) - flat.min(axis=1))

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        x = feeds[input_name]
        n, s = x.shape[0], self.samples
        sigma = self.sigmas(x)
        sample_of = np.repeat(np.arange(n), s)
        dtype = np.dtype(self.dtype)

        def build(sl: slice) -> np.ndarray:
            idx = sample_of[sl]
            eps = rng.standard_normal((len(idx),) + x.shape[1:], dtype=dtype)
            eps *= sigma[idx].astype(dtype).reshape(_per_sample(eps))
            eps += x[idx]
            return eps

        total = np.zeros(x.shape)
        squares = np.zeros(x.shape)
        plain = self.kind == "smoothgrad"  # the mean needs only each sample's sum of gradients
        for idx, g, _ in self._row_gradients(model, feeds, input_name, target, sample_of, build, sum_rows=plain):
            _accumulate(total, idx, g)
            if not plain:
                g64 = g.astype(np.float64)
                _accumulate(squares, idx, g64 * g64)
        mean = total / s
        if self.kind == "smoothgrad":
            attr, what = mean, "mean gradient"
        elif self.kind == "smoothgrad_sq":
            attr, what = squares / s, "mean squared gradient"
        else:
            attr, what = squares / s - mean * mean, "variance of gradients"
        spread = f"sigma = {self.noise:g} (absolute)" if self.sigma_absolute else (
            f"sigma = {self.noise:g} x (max - min) per sample"
        )
        variant = f"{self.kind}: {what} over {s} samples x + N(0, sigma^2), {spread}"
        scores = self._scores(model, feeds, target)
        trust = {"sigma": sigma}
        return self._result(
            model, input_name, target, attr, scores, variant, trust, signed=self.kind == "smoothgrad"
        )


# --------------------------------------------------------------------------------------------
# Integrated Gradients
# --------------------------------------------------------------------------------------------

IG_RULES = (
    "gauss-legendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "riemann_trapezoid_captum",
)
_BASELINES = ("zero", "blur", "uniform")


def ig_rule(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The path points ``alpha`` in [0, 1] and quadrature weights of an IG rule.

    Gauss-Legendre (Captum's default): the Legendre nodes and weights mapped from [-1, 1] to
    [0, 1]. Riemann left/right/middle: ``steps`` equal weights ``1/steps`` at the left ends,
    right ends or midpoints of ``steps`` equal cells (as Captum). Trapezoid: ``steps`` equally
    spaced points including both ends, weights ``1/(steps-1)`` with the two ends halved, so they
    sum to 1. ``riemann_trapezoid_captum`` is Captum's ``"riemann_trapezoid"`` exactly: the same
    points but weights ``1/steps`` (ends halved), which sum to ``1 - 1/steps`` and so shrink every
    attribution by that factor (a completeness error of about ``1/steps``).
    """
    if rule not in IG_RULES:
        raise InputError(f"unknown integration rule {rule!r}", hint=f"use one of {list(IG_RULES)}")
    n = int(steps)
    least = 2 if rule.startswith("riemann_trapezoid") else 1
    if n < least:
        raise InputError(f"{rule} needs at least {least} steps, got {steps}")
    if rule == "gauss-legendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (nodes + 1), 0.5 * weights
    weights = np.full(n, 1.0 / n)
    if rule == "riemann_left":
        return np.arange(n) / n, weights
    if rule == "riemann_right":
        return np.arange(1, n + 1) / n, weights
    if rule == "riemann_middle":
        return (np.arange(n) + 0.5) / n, weights
    if rule == "riemann_trapezoid":
        weights = np.full(n, 1.0 / (n - 1))
    weights[0] /= 2
    weights[-1] /= 2
    return np.linspace(0.0, 1.0, n), weights


class IntegratedGradients(GradientMethod):
    """Integrated Gradients (Sundararajan, Taly & Yan 2017, eq. 1):
    ``IG_i(x) = (x_i - x'_i) * int_0^1 dF(x' + a (x - x'))/dx_i da``, the integral by quadrature.

    ``steps`` path points (default 50) under ``rule``: ``"gauss-legendre"`` (Captum's default),
    ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"`` (the
    textbook trapezoid rule) or ``"riemann_trapezoid_captum"`` (Captum's, whose weights sum to
    ``1 - 1/steps``; see :func:`ig_rule`). Baseline ``x'``: ``"zero"``; ``"blur"`` (the input under a Gaussian blur of
    ``blur_sigma`` pixels over the spatial axes, Sturmfels et al. 2020); ``"uniform"`` (noise
    uniform in each sample's [min, max], from ``rng``); or an array broadcastable to the input.
    Completeness (axiom, eq. 3): ``sum_i IG_i = F(x) - F(x')``; the relative error
    ``|sum IG - (F(x) - F(x'))| / |F(x) - F(x')|`` per sample is in ``trust["completeness_error"]``
    with ``F(x)`` and ``F(x')`` (``trust["score"]``, ``trust["baseline_score"]``).
    Map: signed sum over channels.
    """

    name: ClassVar[str] = "integrated_gradients"

    def __init__(
        self,
        steps: int = 50,
        rule: str = "gauss-legendre",
        baseline: str | np.ndarray = "zero",
        *,
        blur_sigma: float = 5.0,
        batch_size: int = 16,
        dtype: str | type = "float32",
        forward: str = "numpy",
    ) -> None:
        super().__init__(batch_size=batch_size, dtype=dtype, forward=forward)
        ig_rule(rule, steps)  # validates
        if isinstance(baseline, str) and baseline not in _BASELINES:
            raise InputError(f"unknown baseline {baseline!r}", hint=f"use one of {list(_BASELINES)} or an array")
        if not float(blur_sigma) > 0:
            raise InputError(f"blur_sigma must be positive, got {blur_sigma}")
        self.steps = int(steps)
        self.rule = rule
        # An array baseline is kept aside: the recorded parameter says "array", not its values.
        self._baseline_array = None if isinstance(baseline, str) else np.array(baseline, dtype=np.float64)
        self.baseline = baseline if isinstance(baseline, str) else "array"
        self.blur_sigma = float(blur_sigma)

    def baselines(self, model: Model, x: np.ndarray, input_name: str, rng: np.random.Generator) -> np.ndarray:
        """The baseline ``x'`` for each sample of ``x`` (float64, ``x``'s shape)."""
        x64 = x.astype(np.float64)
        if self._baseline_array is not None:
            try:
                return np.broadcast_to(self._baseline_array, x.shape).copy()
            except ValueError as e:
                raise InputError(
                    f"baseline of shape {list(self._baseline_array.shape)} does not fit input {list(x.shape)}",
                    hint="give a baseline of the input's shape, or one sample's shape",
                ) from e
        if self.baseline == "zero":
            return np.zeros_like(x64)
        if self.baseline == "uniform":
            flat = x64.reshape(x.shape[0], -1)
            lo, hi = flat.min(axis=1), flat.max(axis=1)
            u = rng.random(x.shape)
            return lo.reshape(_per_sample(x)) + u * (hi - lo).reshape(_per_sample(x))
        from scipy.ndimage import gaussian_filter

        if x.ndim != 4:
            raise InputError(f"the blur baseline needs an image input, got shape {list(x.shape)}")
        axis = channel_axis(model, input_name)
        sigma = [0.0, 0.0, 0.0, 0.0]
        for a in (1, 2, 3):
            if a != axis:
                sigma[a] = self.blur_sigma
        return gaussian_filter(x64, sigma=sigma, mode="nearest")

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        x = feeds[input_name]
        x64 = x.astype(np.float64)
        base = self.baselines(model, x, input_name, rng)
        delta = x64 - base
        alphas, weights = ig_rule(self.rule, self.steps)
        n, s = x.shape[0], self.steps
        sample_of = np.repeat(np.arange(n), s)
        step_of = np.tile(np.arange(s), n)

        # Path points in the method's dtype (float32 arithmetic for float32: the rows are fed in
        # float32 anyway, and float64 temporaries cost ~0.7 forwards' worth over 50 steps).
        dtype = np.dtype(self.dtype)
        base_d, delta_d = base.astype(dtype), delta.astype(dtype)

        def build(sl: slice) -> np.ndarray:
            idx = sample_of[sl]
            a = alphas[step_of[sl]].astype(dtype).reshape(_per_sample(x))
            rows = delta_d[idx]
            rows *= a
            rows += base_d[idx]
            return rows

        total = np.zeros(x.shape)
        for idx, g, _ in self._row_gradients(
            model, feeds, input_name, target, sample_of, build, weights=weights[step_of], sum_rows=True
        ):
            _accumulate(total, idx, g)
        attr = delta * total

        f_x = self._scores(model, feeds, target)
        f_base = self._scores(model, {**feeds, input_name: base.astype(dtype)}, target, original=False)
        change = f_x - f_base
        sums = attr.reshape(n, -1).sum(axis=1)
        # Relative to |F(x) - F(x')|; where that is (numerically) zero the relative error is
        # undefined and the absolute gap is reported instead (both are in the trust figures).
        gap = np.abs(sums - change)
        scale = np.abs(change)
        tiny = 1e-12 * np.maximum(1.0, np.abs(f_x))
        error = np.where(scale > tiny, gap / np.where(scale > tiny, scale, 1.0), gap)
        trust = {
            "completeness_error": error,
            "score": f_x,
            "baseline_score": f_base,
            "attribution_sum": sums,
            "completeness_gap": gap,
        }
        base_name = self.baseline
        if base_name == "blur":
            base_name = f"blur (sigma {self.blur_sigma:g})"
        variant = f"(x - x') * integral of dF/dx along the straight path, {self.rule}, {s} steps, baseline {base_name}"
        return self._result(model, input_name, target, attr, f_x, variant, trust)


# --------------------------------------------------------------------------------------------
# Modified backward passes: guided backprop and deconvnet
# --------------------------------------------------------------------------------------------

#: The ReLU-like op types the modified rules can be applied to. ``Relu`` always; ``Clip`` when
#: asked (a ReLU6 or hard-tanh export), where the rule keeps Clip's own pass-through mask.
#: Captum hooks only ``nn.ReLU`` modules (``nn.ReLU6`` is a ``Hardtanh``), so its results equal
#: ``ops=("Relu",)``. LeakyRelu, PRelu, smooth activations (SiLU, GELU) are never modified.
RELU_LIKE_OPS = ("Relu", "Clip")


def _none_after(first: np.ndarray, call: Call) -> Grads:
    return (first,) + (None,) * (len(call.inputs) - 1)


def guided_relu_vjp(call: Call, gY: np.ndarray) -> Grads:
    """Guided backprop at a ReLU: ``relu(g) * (X > 0)`` (``Y > 0`` is the same set)."""
    return (np.maximum(gY, 0) * (call.outputs[0] > 0),)


def guided_clip_vjp(call: Call, gY: np.ndarray) -> Grads:
    """Guided backprop at a Clip: the positive part of ``g`` through Clip's own gradient mask."""
    rule = REGISTRY.get_vjp("Clip", call.opset or 6)
    if rule is None:  # pragma: no cover - the registry always has Clip
        raise InputError("no Clip gradient rule registered")
    return _none_after(rule(call, np.maximum(gY, 0))[0], call)


def deconv_relu_vjp(call: Call, gY: np.ndarray) -> Grads:
    """Deconvnet at a ReLU: ``relu(g)``, the forward's sign pattern is ignored."""
    return (np.maximum(gY, 0),)


def deconv_clip_vjp(call: Call, gY: np.ndarray) -> Grads:
    """Deconvnet at a Clip (ReLU6): ``relu(g)``, the forward's clipping is ignored."""
    return _none_after(np.maximum(gY, 0), call)


_GUIDED: dict[str, VjpFn] = {"Relu": guided_relu_vjp, "Clip": guided_clip_vjp}
_DECONV: dict[str, VjpFn] = {"Relu": deconv_relu_vjp, "Clip": deconv_clip_vjp}


class _ModifiedBackprop(GradientMethod):
    _table: ClassVar[dict[str, VjpFn]]

    def __init__(
        self,
        *,
        ops: tuple[str, ...] = ("Relu",),
        batch_size: int = 16,
        dtype: str | type = "float32",
        forward: str = "numpy",
    ) -> None:
        super().__init__(batch_size=batch_size, dtype=dtype, forward=forward)
        ops = tuple(ops)
        bad = [o for o in ops if o not in RELU_LIKE_OPS]
        if bad:
            raise InputError(f"cannot modify the gradient of {bad}", hint=f"choose from {list(RELU_LIKE_OPS)}")
        self.ops = ops

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        rules = {op: self._table[op] for op in self.ops}
        grads, scores = self._gradient(model, feeds, input_name, target, rules=rules)
        return self._result(model, input_name, target, grads, scores, self._variant())

    def _variant(self) -> str:
        raise NotImplementedError


class GuidedBackprop(_ModifiedBackprop):
    """Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity", eq. in fig. 1):
    the backward pass with every ReLU's rule replaced by ``R_l = relu(R_{l+1}) * (f_l > 0)``;
    all other ops keep their true gradient (max-pool routes to the argmax). ``ops`` names the
    op types treated as ReLU (default ``("Relu",)``, as Captum; add ``"Clip"`` for ReLU6 exports,
    see :data:`RELU_LIKE_OPS`). Map: signed sum over channels."""

    name: ClassVar[str] = "guided_backprop"
    _table = _GUIDED

    def _variant(self) -> str:
        return f"backward with relu(g) * (X > 0) at {'/'.join(self.ops)}"


class Deconvnet(_ModifiedBackprop):
    """Deconvnet (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks",
    sec. 2.1) in gradient form: the backward pass with every ReLU's rule replaced by
    ``relu(g)`` (rectify the backward signal, ignore the forward's sign pattern); max-pool
    gradients use the forward's switches and convolutions their transposed filters, as the
    paper's unpooling and filtering. ``ops`` as in :class:`GuidedBackprop`. Map: signed sum over
    channels."""

    name: ClassVar[str] = "deconvnet"
    _table = _DECONV

    def _variant(self) -> str:
        return f"backward with relu(g) at {'/'.join(self.ops)} (Zeiler & Fergus 2014)"
