"""The report's feature-maps section: what the inputs look like inside the network.

One panel per tapped tensor (default: :func:`onnxviz.featuremaps.default_feature_tensors`, the
rank-4 outputs of convolutions, pools and merges, after their activation), with the tensor's
range, mean, share of zeros and silent channels, its ``top_k`` channels ranked by mean
activation over the batch and space, and for each of the first :data:`MAX_SHOWN_INPUTS` inputs a
grid of those channels' maps, each channel scaled to its own range over the shown inputs so the
inputs compare within a channel. The activations are tapped by
:func:`onnxviz.featuremaps.feature_maps`; this module only turns them into view models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import imaging
from ..featuremaps import default_feature_tensors, feature_maps
from .sections import MAX_SHOWN_INPUTS, Image, Section, TocEntry, shape_str, upscale_for

if TYPE_CHECKING:
    from ..model import Model

__all__ = [
    "ChannelRank",
    "FeatureMapGrid",
    "FeatureMapView",
    "FeatureMapsSection",
    "feature_maps_section",
]

#: Small feature maps are upscaled (nearest) to at least this edge so a 7x7 map is visible.
FEATURE_TILE_PX = 56


# ------------------------------------------------------------------------------------------
# view models


@dataclass(frozen=True)
class ChannelRank:
    channel: int
    mean: float
    #: ``|mean|`` relative to the largest ``|mean|`` among the ranked channels (for bar lengths).
    relative: float


@dataclass(frozen=True)
class FeatureMapGrid:
    label: str
    image: Image


@dataclass(frozen=True)
class FeatureMapView:
    id: str
    tensor: str
    node: str
    op_type: str
    shape: str
    minimum: float
    maximum: float
    mean: float
    zero_share: float
    nonfinite: int
    channels_total: int
    silent_channels: int
    ranking: tuple[ChannelRank, ...]
    grids: tuple[FeatureMapGrid, ...]


@dataclass(frozen=True)
class FeatureMapsSection(Section):
    kind: ClassVar[str] = "feature_maps"
    id: str
    title: str
    maps: tuple[FeatureMapView, ...]
    note: str

    @property
    def toc(self) -> tuple[TocEntry, ...]:
        return tuple(TocEntry(m.id, m.tensor) for m in self.maps)


# ------------------------------------------------------------------------------------------
# collecting and drawing


def _feature_grid(maps: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """One input's top-channel maps ``(k, H, W)`` in a near-square grid, each channel on its range."""
    h, w = maps.shape[1:]
    f = upscale_for(max(h, w), FEATURE_TILE_PX)
    tiles = []
    for m, a, b in zip(maps, lo, hi):
        tile = np.zeros(m.shape) if b <= a else np.clip((m - a) / (b - a), 0.0, 1.0)
        tiles.append(imaging.upscale_nearest(tile, f) if f > 1 else tile)
    return imaging.tile_grid(tiles, pad=2)


def _ranking(means: np.ndarray, top: Sequence[int]) -> tuple[ChannelRank, ...]:
    values = [float(means[c]) for c in top]
    finite = [abs(v) for v in values if math.isfinite(v)]
    peak = max(finite, default=0.0)
    return tuple(
        ChannelRank(int(c), v, abs(v) / peak if peak > 0 and math.isfinite(v) else 0.0)
        for c, v in zip(top, values)
    )


def feature_maps_section(
    model: Model,
    feeds: Mapping[str, np.ndarray],
    labels: Sequence[str],
    *,
    tensors: Sequence[str] | None = None,
    top_k: int = 16,
) -> FeatureMapsSection:
    """The section for ``model`` run on ``feeds``; ``labels`` names each input of the batch.

    ``tensors``: the tensors to show (default :func:`onnxviz.featuremaps.default_feature_tensors`;
    empty for none); those that are not rank-4 float tensors are skipped and counted in the note.
    ``top_k`` (at least 1): channels ranked and drawn per tensor.
    """
    names = default_feature_tensors(model.graph) if tensors is None else list(tensors)
    collected = feature_maps(model, feeds, names, top_k=top_k) if names else []
    views: list[FeatureMapView] = []
    for i, m in enumerate(collected):
        shown = m.top_maps[:MAX_SHOWN_INPUTS]
        maps = np.nan_to_num(shown.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        # One range per channel over the shown inputs, so inputs compare within a channel.
        lo = maps.min(axis=(0, 2, 3))
        hi = maps.max(axis=(0, 2, 3))
        grids = tuple(
            FeatureMapGrid(label=labels[j], image=_feature_grid(maps[j], lo, hi)) for j in range(maps.shape[0])
        )
        views.append(
            FeatureMapView(
                id=f"fmap-{i}",
                tensor=m.tensor,
                node=m.node,
                op_type=m.op_type,
                shape=shape_str(m.shape),
                minimum=m.minimum,
                maximum=m.maximum,
                mean=m.mean,
                zero_share=m.zero_share,
                nonfinite=m.nonfinite,
                channels_total=int(m.channel_means.size),
                silent_channels=int(np.count_nonzero(m.channel_means == 0)),
                ranking=_ranking(m.channel_means, m.top_channels),
                grids=grids,
            )
        )
    skipped = len(names) - len(collected)
    note = (
        f"{len(views)} tensor(s). Channels are ranked by their mean activation over the batch and "
        f"space; the top {top_k} are drawn for each of the first {min(len(labels), MAX_SHOWN_INPUTS)} "
        "input(s), each channel scaled to its own range over the shown inputs (black = its minimum, "
        "white = its maximum). A silent channel has a mean of exactly 0 (e.g. never active after a ReLU)."
    )
    if skipped:
        note += f" {skipped} requested tensor(s) are not rank-4 float tensors and are not shown."
    return FeatureMapsSection(id="feature-maps", title="Feature maps", maps=tuple(views), note=note)
