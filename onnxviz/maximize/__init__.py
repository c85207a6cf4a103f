"""Feature visualization by optimization (activation maximization) and DeepDream.

The Lucid split without its globals: :mod:`.objectives` (what to maximize), :mod:`.param` (how
the image is parametrized), :mod:`.transforms` (robustness transforms), :mod:`.optimize` (the
loop, Adam, redirected ReLU, DeepDream). Randomness always comes from an explicit
``numpy.random.Generator`` (or an int seed).

    >>> from onnxviz.maximize import channel, visualize
    >>> vis = visualize(model, channel("relu3", list(range(8))), rng=0)   # doctest: +SKIP
"""

from __future__ import annotations

from .objectives import (
    IMAGE,
    Objective,
    blur,
    channel,
    class_logit,
    class_probability,
    direction,
    diversity,
    l1,
    l2,
    layer_l2,
    neuron,
    total_variation,
)
from .optimize import (
    Adam,
    AdamState,
    Visualization,
    VisualizationSettings,
    dream,
    evaluate,
    visualize,
)
from .param import FFTParam, ModelInput, PixelParam
from .transforms import (
    GeometricTransform,
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    Resize,
    Warp,
    standard_transforms,
)

__all__ = [
    "IMAGE",
    "Adam",
    "AdamState",
    "FFTParam",
    "GeometricTransform",
    "Jitter",
    "ModelInput",
    "Objective",
    "Pad",
    "PixelParam",
    "RandomRotate",
    "RandomScale",
    "Resize",
    "Visualization",
    "VisualizationSettings",
    "Warp",
    "blur",
    "channel",
    "class_logit",
    "class_probability",
    "direction",
    "diversity",
    "dream",
    "evaluate",
    "l1",
    "l2",
    "layer_l2",
    "neuron",
    "standard_transforms",
    "total_variation",
    "visualize",
]
