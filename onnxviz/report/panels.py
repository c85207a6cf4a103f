"""Explanation panels as images: inputs next to their attribution overlays (pure numpy + Pillow).

Rendering conventions (METHODS.md): a sequential colormap for non-negative maps, a diverging one
for signed maps, the scale clipped at the 99th percentile of |value|, overlay alpha 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..imaging import overlay, resize, tile_grid
from ..inputs import Preprocess, array_to_image
from ..methods.base import Explanation

__all__ = ["CLIP_PERCENTILE", "OVERLAY_ALPHA", "display_images", "explanation_panel"]

OVERLAY_ALPHA = 0.5
CLIP_PERCENTILE = 99.0
_LABEL_HEIGHT = 14


def display_images(x: np.ndarray, pre: Preprocess | None, channel_axis: int = 1) -> list[np.ndarray]:
    """Each sample of a model input batch as an RGB image in [0, 1].

    With the preprocessing record the exact inverse normalisation is used; without one (a .npy
    input), each sample is min-max scaled, which shows structure but not true colours.
    """
    images = []
    for sample in x:
        if pre is not None:
            img = array_to_image(sample, pre)
        else:
            hwc = np.moveaxis(sample, channel_axis - 1, -1) if sample.ndim == 3 else sample[..., None]
            lo, hi = float(hwc.min()), float(hwc.max())
            img = (hwc - lo) / (hi - lo) if hi > lo else np.zeros_like(hwc)
        img = np.asarray(img, dtype=np.float64)
        if img.ndim == 3 and img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        elif img.ndim == 3 and img.shape[2] > 3:
            img = img[..., :3]
        images.append(img)
    return images


def label_strip(text: str, width: int) -> np.ndarray:
    canvas = Image.new("RGB", (width, _LABEL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), text[: max(1, width // 6)], fill=(0, 0, 0), font=ImageFont.load_default())
    return np.asarray(canvas, dtype=np.float64) / 255.0


def explanation_panel(
    images: Sequence[np.ndarray],
    explanations: Sequence[Explanation],
    *,
    size: int = 224,
    alpha: float = OVERLAY_ALPHA,
    clip_percentile: float = CLIP_PERCENTILE,
) -> np.ndarray:
    """One row per input: the input, then one overlay per explanation, each column labelled.

    Every tile is resized to ``size`` pixels on its longer side (nearest for small inputs, so
    pixels stay visible). Returns an RGB image in [0, 1].
    """
    rows: list[np.ndarray] = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        scale = size / max(h, w)
        th, tw = max(1, round(h * scale)), max(1, round(w * scale))
        method = "nearest" if scale >= 2 else "bilinear"
        base = resize(img, (th, tw), method=method)
        tiles = [np.vstack([label_strip(f"input {i}", tw), base])]
        for e in explanations:
            heat = overlay(base, e.maps[i], alpha=alpha, signed=e.signed, clip_percentile=clip_percentile)
            target = int(e.targets[i])
            tiles.append(np.vstack([label_strip(f"{e.method} (class {target})" if target >= 0 else e.method, tw), heat]))
        rows.append(tile_grid(tiles, ncols=len(tiles), pad=2))
    return tile_grid(rows, ncols=1, pad=4)
