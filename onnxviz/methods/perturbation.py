"""Perturbation methods: how the target score changes when parts of the image are hidden.

Forward passes only, through onnxruntime: these methods work on any model onnxruntime runs, even
one with ops the numpy gradient engine has no rule for. Perturbed copies are stacked and run
``batch_size`` at a time (a model with a fixed batch size is run in pieces of that size). Only
the explained input is perturbed; other inputs of a multi-input model are repeated as they are.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..model import Model
from .base import (
    Explanation,
    Method,
    TargetSpec,
    bilinear_matrix,
    channel_axis,
    chunks,
    image_size,
    is_probability,
    run_output,
    take_rows,
)

__all__ = ["RISE", "Occlusion"]

Pair = int | tuple[int, int] | None


def _pair(value: Pair, default: tuple[int, int], what: str) -> tuple[int, int]:
    if value is None:
        return default
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise InputError(f"{what} must be a positive integer or two (h, w); got {value!r}")
    return int(pair[0]), int(pair[1])


def _starts(size: int, window: int, stride: int) -> np.ndarray:
    """Window origins ``0, stride, 2 stride, ...`` as Captum places them, plus one window flush
    with the far border when those leave the last pixels uncovered (Captum leaves them NaN)."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return np.asarray(starts)


class Occlusion(Method):
    """Occlusion sensitivity (Zeiler & Fergus, ECCV 2014, sec. 4.2) with Captum's semantics.

    A ``window`` (h, w) covering all channels slides over the image with ``strides``; each
    position is replaced by ``baseline`` (0, a number, or ``"mean"``: each sample's per-channel
    mean) and the target score drop ``S(x) - S(x_occluded)`` is credited to the covered pixels.
    A pixel's attribution is the average of the drops of the windows covering it, as
    ``captum.attr.Occlusion`` (whose ``sliding_window_shapes`` would be ``(C, h, w)``). Captum
    requires the window; the defaults here are 1/8 of each image side and half the window as the
    stride. Where the strides leave a border strip uncovered one more window is placed flush with
    the border (Captum would return NaN there). ``attributions`` has the input's shape (the same
    value in every channel, as Captum's); ``maps`` is ``(N, H, W)``, signed.
    """

    name = "occlusion"
    needs_gradients = False

    def __init__(
        self,
        window: Pair = None,
        strides: Pair = None,
        *,
        baseline: float | str = 0.0,
        batch_size: int = 32,
    ) -> None:
        if isinstance(baseline, str) and baseline != "mean":
            raise InputError(f"unknown occlusion baseline {baseline!r}", hint="use a number or 'mean'")
        self.window = window
        self.strides = strides
        self.baseline = baseline
        self.batch_size = batch_size

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        H, W = image_size(model, feeds, input_name)
        axis = channel_axis(model, input_name)
        wh, ww = _pair(self.window, (max(1, round(H / 8)), max(1, round(W / 8))), "window")
        wh, ww = min(wh, H), min(ww, W)
        sh, sw = _pair(self.strides, (max(1, wh // 2), max(1, ww // 2)), "strides")
        ys, xs = _starts(H, wh, sh), _starts(W, ww, sw)
        positions = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)

        x = feeds[input_name]
        n, k = x.shape[0], len(positions)
        if self.baseline == "mean":
            spatial = (1, 2) if axis == 3 else (2, 3)
            fill = x.mean(axis=spatial, keepdims=True)  # (n, C, 1, 1) or (n, 1, 1, C)
        else:
            fill = np.full((n, 1, 1, 1), float(self.baseline))
        scores = target.score(run_output(model, feeds, target.output))

        total = np.zeros((n, H, W))
        count = np.zeros((H, W))
        for y, xo in positions:
            count[y : y + wh, xo : xo + ww] += 1
        sample, window = np.divmod(np.arange(n * k), k)
        for s in chunks(n * k, self.batch_size):
            rows, pos = sample[s], positions[window[s]]
            batch = take_rows(feeds, rows)
            img = batch[input_name].copy()
            for j, (y, xo) in enumerate(pos):
                if axis == 3:
                    img[j, y : y + wh, xo : xo + ww, :] = fill[rows[j], 0, 0, :]
                else:
                    img[j, :, y : y + wh, xo : xo + ww] = fill[rows[j], :, 0, 0][:, None, None]
            batch[input_name] = img
            drop = scores[rows] - target.score(run_output(model, batch, target.output), rows)
            for j, (y, xo) in enumerate(pos):
                total[rows[j], y : y + wh, xo : xo + ww] += drop[j]
        maps = total / count
        attributions = np.repeat(np.expand_dims(maps, axis), x.shape[axis], axis=axis)
        return Explanation(
            method=self.name,
            variant="Occlusion: mean over covering windows of S(x) - S(x occluded) (Captum Occlusion)",
            attributions=attributions,
            maps=maps,
            signed=True,
            output=target.output,
            targets=target.classes,
            scores=scores,
            input_name=input_name,
            params=self.params,
            trust={"window": (wh, ww), "strides": (sh, sw), "windows": k},
        )


class RISE(Method):
    """RISE, Randomized Input Sampling for Explanation (Petsiuk et al., BMVC 2018, eqs. 4-6).

    ``n_masks`` binary grids of ``cells`` x ``cells`` cells, each on with probability ``p``, are
    upsampled bilinearly to ``(cells + 1) * ceil(H / cells)`` pixels and cropped at a random shift
    within one cell (the paper's masks; half-pixel bilinear with clamped borders where the authors'
    code uses skimage's reflect mode). The saliency is ``sum_i S(x * M_i) M_i / (n_masks * p)``.
    ``S`` is the target class's probability as in the paper: the output itself when it already
    holds probabilities, else its softmax over the class axis (``softmax=None``, automatic);
    ``softmax=False`` uses the raw output (then the map may be negative), and an explicit
    cotangent target always does. The masks come from ``rng`` only, and the same masks are used
    for every sample. ``attributions`` and ``maps`` are both the ``(N, H, W)`` saliency.
    """

    name = "rise"
    needs_gradients = False

    def __init__(
        self,
        n_masks: int = 4000,
        cells: int = 7,
        p: float = 0.5,
        *,
        softmax: bool | None = None,
        batch_size: int = 64,
    ) -> None:
        if n_masks < 1 or cells < 1 or not 0 < p <= 1:
            raise InputError(
                f"RISE needs n_masks >= 1, cells >= 1 and 0 < p <= 1; got {n_masks}, {cells}, {p}"
            )
        self.n_masks = n_masks
        self.cells = cells
        self.p = p
        self.softmax = softmax
        self.batch_size = batch_size

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        H, W = image_size(model, feeds, input_name)
        axis = channel_axis(model, input_name)
        s = self.cells
        ch, cw = math.ceil(H / s), math.ceil(W / s)
        # Every random draw happens up front so the masks do not depend on the chunking.
        grids = (rng.random((self.n_masks, s, s)) < self.p).astype(np.float64)
        shifts = np.stack([rng.integers(0, ch, self.n_masks), rng.integers(0, cw, self.n_masks)], axis=1)
        ry, rx = bilinear_matrix(s, (s + 1) * ch), bilinear_matrix(s, (s + 1) * cw)

        value = run_output(model, feeds, target.output)
        scores = target.score(value)
        use_softmax = (
            target.cotangent is None
            and self.softmax is not False
            and (self.softmax is True or not is_probability(value))
        )
        probabilities = target.cotangent is None and (use_softmax or is_probability(value))

        x = feeds[input_name]
        n = x.shape[0]
        saliency = np.zeros((n, H, W))
        per_chunk = max(1, self.batch_size // n)
        for c in chunks(self.n_masks, per_chunk):
            up = np.einsum("Yy,myx,Xx->mYX", ry, grids[c], rx, optimize=True)
            m = len(up)
            iy = shifts[c, 0, None] + np.arange(H)
            ix = shifts[c, 1, None] + np.arange(W)
            masks = up[np.arange(m)[:, None, None], iy[:, :, None], ix[:, None, :]]  # (m, H, W)
            rows = np.repeat(np.arange(n), m)
            batch = take_rows(feeds, rows)
            tiled = np.tile(masks, (n, 1, 1))
            batch[input_name] = (batch[input_name] * (tiled[:, None] if axis == 1 else tiled[..., None])).astype(x.dtype)
            out = run_output(model, batch, target.output)
            sc = target.probability(out, rows) if use_softmax else target.score(out, rows)
            saliency += np.einsum("nm,mhw->nhw", sc.reshape(n, m), masks)
        saliency /= self.n_masks * self.p
        variant = "RISE: sum_i S(x * M_i) M_i / (N p), S = " + (
            "softmax probability" if use_softmax else ("output probability" if probabilities else "raw target score")
        )
        return Explanation(
            method=self.name,
            variant=variant,
            attributions=saliency,
            maps=saliency,
            signed=not probabilities,
            output=target.output,
            targets=target.classes,
            scores=scores,
            input_name=input_name,
            params=self.params,
        )
