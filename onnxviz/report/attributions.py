"""The report's attribution section: which parts of each input made the model decide.

One panel per method: the exact variant and its parameters, and per input the
overlay, the explained class and score and the trust figures (the IG completeness error; the
deletion/insertion AUC when computed). A method that cannot run on this model (e.g. an op without
a gradient rule) gets its error message instead, and the forward-only methods still run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import OnnxvizError
from ..imaging import overlay
from ..methods.base import Explanation, channel_axis
from ..methods.evaluation import deletion_insertion, randomization_test
from ..methods.registry import METHODS, get_method
from ..model import Model
from .panels import CLIP_PERCENTILE, OVERLAY_ALPHA, display_images
from .sections import MAX_SHOWN_INPUTS, Image, Section, TocEntry

__all__ = ["DEFAULT_METHODS", "AttributionPanel", "AttributionTile", "AttributionsSection", "attribution_section"]

#: Methods in a report by default: each runs in about one forward + backward pass.
DEFAULT_METHODS: tuple[str, ...] = ("saliency", "gradcam", "guided_gradcam")


@dataclass(frozen=True)
class AttributionTile:
    label: str
    target: int
    score: float
    overlay: Image
    trust: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AttributionPanel:
    id: str
    method: str
    variant: str
    signed: bool
    layer: str | None
    params: tuple[tuple[str, str], ...]
    tiles: tuple[AttributionTile, ...]
    error: str
    sanity: str = ""


@dataclass(frozen=True)
class AttributionsSection(Section):
    kind: ClassVar[str] = "attributions"
    id: str
    title: str
    panels: tuple[AttributionPanel, ...]
    alpha: float
    clip_percentile: float
    note: str

    @property
    def toc(self) -> tuple[TocEntry, ...]:
        return tuple(TocEntry(p.id, p.method) for p in self.panels)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, np.ndarray):
        return f"array {list(value.shape)}"
    return str(value)


def _tile_trust(e: Explanation, i: int) -> tuple[tuple[str, str], ...]:
    """The trust figures of sample ``i``: scalars, or per-sample vectors indexed at ``i``."""
    out = []
    for key, value in e.trust.items():
        arr = np.asarray(value)
        if arr.ndim == 1 and arr.shape[0] == len(e.targets) and np.issubdtype(arr.dtype, np.number):
            out.append((key, _fmt(float(arr[i]))))
        elif arr.ndim == 0 and np.issubdtype(arr.dtype, np.number):
            out.append((key, _fmt(float(arr))))
    return tuple(out)


def attribution_section(
    model: Model,
    feeds: Mapping[str, np.ndarray],
    preprocess: object,
    labels: Sequence[str],
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    input_name: str | None = None,
    max_inputs: int = MAX_SHOWN_INPUTS,
    rng_seed: int = 0,
    trust: bool = True,
) -> AttributionsSection:
    """Run each of ``methods`` (registry names) on the inputs, with their default parameters.

    With ``trust`` each map also gets its deletion and insertion AUC (Petsiuk et al., 20 steps,
    zero baseline) and each method the top-layer parameter-randomization check (Adebayo et
    al.): how much the maps change when the last learned layer is randomized.
    """
    name = input_name or model.inputs[0].name
    n = min(max_inputs, next(iter(feeds.values())).shape[0])
    shown = {k: v[:n] for k, v in feeds.items()}
    images = display_images(shown[name], preprocess, channel_axis(model, name))  # type: ignore[arg-type]
    panels: list[AttributionPanel] = []
    for k, method_name in enumerate(methods):
        cls = get_method(method_name)
        method = cls()
        try:
            e = method.explain(model, shown, None, input_name=name, rng=np.random.default_rng(rng_seed))
            sanity = ""
            if trust:
                e = dataclasses.replace(e, trust={**e.trust, **deletion_insertion(model, shown, e).as_trust()})
                check = randomization_test(
                    model, shown, method, input_name=name, top=1, rng=np.random.default_rng(rng_seed)
                )
                sanity = (
                    f"{check.verdict}: randomizing the last learned layer ({check.layers[0]}) moves the maps to a "
                    f"mean Spearman rank correlation of {float(check.mean_spearman_abs[0]):.2f} with the originals "
                    f"(|map|; below {check.threshold} counts as sensitive to the model)"
                )
        except OnnxvizError as err:
            hint = f" ({err.hint})" if err.hint else ""
            panels.append(
                AttributionPanel(
                    f"attr-{k}", method_name, "", False, None, (), (), err.message + hint
                )
            )
            continue
        tiles = tuple(
            AttributionTile(
                label=labels[i] if i < len(labels) else f"input {i}",
                target=int(e.targets[i]),
                score=float(e.scores[i]),
                overlay=overlay(images[i], e.maps[i], alpha=OVERLAY_ALPHA, signed=e.signed, clip_percentile=CLIP_PERCENTILE),
                trust=_tile_trust(e, i),
            )
            for i in range(n)
        )
        params = tuple((key, _fmt(v)) for key, v in sorted(e.params.items()))
        panels.append(
            AttributionPanel(f"attr-{k}", method_name, e.variant, e.signed, e.layer, params, tiles, "", sanity)
        )
    total = next(iter(feeds.values())).shape[0]
    note = f"showing the first {n} of {total} inputs" if total > n else ""
    others = sorted(set(METHODS) - set(methods))
    note = (note + "; " if note else "") + "more methods with --methods: " + ", ".join(others)
    return AttributionsSection(
        id="attributions",
        title="Attributions",
        panels=tuple(panels),
        alpha=OVERLAY_ALPHA,
        clip_percentile=CLIP_PERCENTILE,
        note=note,
    )
