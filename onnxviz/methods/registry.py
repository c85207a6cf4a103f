"""Method names -> classes, and :func:`explain`, the one-call convenience.

Registration is the explicit dict literal below: each family module is imported by name and each
class listed under the name it carries (``cls.name``). To add a method, import its class here and
add one line to :data:`METHODS`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError
from ..model import Model
from ..targets import Target
from .base import Explanation, Method
from .cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from .gradient import (
    Deconvnet,
    Gradient,
    GradientXInput,
    GuidedBackprop,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from .perturbation import RISE, Occlusion

__all__ = ["METHODS", "explain", "get_method"]

#: Every attribution method by name.
METHODS: dict[str, type[Method]] = {
    # gradient family (methods/gradient.py)
    "gradient": Gradient,
    "saliency": Saliency,
    "gradient_x_input": GradientXInput,
    "smoothgrad": SmoothGrad,
    "integrated_gradients": IntegratedGradients,
    "guided_backprop": GuidedBackprop,
    "deconvnet": Deconvnet,
    # CAM family (methods/cam.py)
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "guided_gradcam": GuidedGradCAM,
    # perturbation family (methods/perturbation.py): forward only, any model onnxruntime runs
    "occlusion": Occlusion,
    "rise": RISE,
}


def get_method(name: str) -> type[Method]:
    """The class registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}", hint=f"choose from {sorted(METHODS)}") from None


def explain(
    model: Model,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    method: str = "saliency",
    target: Target = None,
    *,
    output: str | None = None,
    input_name: str | None = None,
    rng: np.random.Generator | None = None,
    **params: Any,
) -> Explanation:
    """Build ``method`` with ``params`` (its constructor arguments) and explain ``target``.

    ``explain(model, x, "integrated_gradients", steps=64)`` is
    ``IntegratedGradients(steps=64).explain(model, x)``.
    """
    cls = get_method(method)
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(
            f"method {method!r} has no parameter(s) {unknown}",
            hint=f"its parameters are {accepted}",
        )
    return cls(**params).explain(model, inputs, target, output=output, input_name=input_name, rng=rng)
