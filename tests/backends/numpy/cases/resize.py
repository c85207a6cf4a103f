"""Op cases for the resize family (Resize, Upsample)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from tests.backends.numpy.opcase import OpCase, Sampler


def normal(*shape: int) -> Sampler:
    def sample(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(shape)

    return sample


def floats(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


NO_ROI = floats()  # Resize-11 requires the roi input; empty means "not given"
UP2 = floats(1, 1, 2, 2)
ODD = floats(1, 1, 1.5, 2.5)
DOWN = floats(1, 1, 0.5, 0.5)
X = normal(1, 2, 5, 6)
BIG = normal(1, 2, 9, 12)


def resize(
    opset: int,
    name: str,
    x: Sampler,
    *,
    scales: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    **attrs: Any,
) -> OpCase:
    """A Resize case with roi/scales/sizes as initializers, in the input layout of ``opset``."""
    if opset < 11:
        return OpCase("Resize", [x, scales], attrs=attrs, opset=opset, name=name, constant_inputs=(1,))
    if opset < 13 and roi is None:
        roi = NO_ROI
    if opset < 13 and scales is None:
        scales = floats()
    inputs = [x, roi, scales, sizes]
    while inputs[-1] is None:
        inputs.pop()
    const = tuple(i for i, v in enumerate(inputs) if i > 0 and v is not None)
    return OpCase("Resize", inputs, attrs=attrs, opset=opset, name=name, constant_inputs=const)


CASES: list[OpCase] = [
    # opset 10: asymmetric transform
    resize(10, "nearest-up2", X, scales=UP2),
    resize(10, "linear-up2", X, scales=UP2, mode="linear"),
    resize(10, "nearest-down", BIG, scales=floats(1, 1, 1 / 3, 0.5)),
    resize(10, "linear-odd", X, scales=ODD, mode="linear"),
    # opset 11: every coordinate transform, nearest modes, sizes, cubic
    resize(11, "nearest-half_pixel", X, scales=UP2),
    resize(11, "linear-half_pixel", X, scales=UP2, mode="linear"),
    resize(11, "linear-pytorch", X, scales=ODD, mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    resize(11, "linear-align", X, scales=ODD, mode="linear", coordinate_transformation_mode="align_corners"),
    resize(11, "nearest-align", X, scales=UP2, coordinate_transformation_mode="align_corners"),
    resize(11, "nearest-asym-ceil", X, scales=ODD, coordinate_transformation_mode="asymmetric",
           nearest_mode="ceil"),
    resize(11, "nearest-asym-floor", X, scales=UP2, coordinate_transformation_mode="asymmetric",
           nearest_mode="floor"),
    resize(11, "nearest-tf-nn", X, scales=UP2, coordinate_transformation_mode="tf_half_pixel_for_nn"),
    resize(11, "nearest-prefer-ceil", X, scales=floats(1, 1, 3, 0.5), nearest_mode="round_prefer_ceil"),
    resize(11, "linear-sizes", X, sizes=ints(1, 2, 8, 11), mode="linear"),
    resize(11, "cubic", X, scales=UP2, mode="cubic"),
    resize(11, "linear-crop", X, roi=floats(0, 0, 0.1, 0.2, 1, 1, 0.8, 1.3), sizes=ints(1, 2, 7, 9),
           mode="linear", coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.5),
    # opset 13: roi and scales optional
    resize(13, "nearest-up2", X, scales=UP2),
    resize(13, "linear-up2", X, scales=UP2, mode="linear"),
    resize(13, "linear-sizes-odd", X, sizes=ints(1, 2, 3, 13), mode="linear",
           coordinate_transformation_mode="pytorch_half_pixel"),
    resize(13, "linear-down", BIG, scales=DOWN, mode="linear"),
    resize(13, "cubic-exclude", X, scales=ODD, mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1),
    resize(13, "cubic-align", X, sizes=ints(1, 2, 7, 4), mode="cubic", coordinate_transformation_mode="align_corners"),
    resize(13, "nearest-crop", X, roi=floats(0, 0, -0.25, 0.125, 1, 1, 0.875, 1.125), sizes=ints(1, 2, 8, 9),
           coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-1.0),
    # tf_crop_and_resize with scales: the spec sizes the output floor(in * (roi_end - roi_start) *
    # scale) (here 8 rows); onnxruntime ignores the roi there (floor(5 * 1.5) = 7 rows).
    replace(
        resize(13, "nearest-crop-scales", X, roi=floats(0, 0, -0.25, 0.125, 1, 1, 0.875, 1.125),
               scales=floats(1, 1, 1.5, 1.5), coordinate_transformation_mode="tf_crop_and_resize",
               extrapolation_value=-1.0),
        check_ort=False,
    ),
    # opset 18: antialias, axes, keep_aspect_ratio_policy
    resize(18, "linear-up2", X, scales=UP2, mode="linear"),
    resize(18, "linear-antialias", BIG, scales=floats(1, 1, 0.5, 0.4), mode="linear", antialias=1),
    resize(18, "cubic-antialias", BIG, sizes=ints(1, 2, 4, 5), mode="cubic", antialias=1),
    resize(18, "axes", X, scales=floats(2, 3), mode="linear", axes=[2, 3]),
    resize(18, "neg-axes-sizes", X, sizes=ints(10), axes=[-1], coordinate_transformation_mode="asymmetric"),
    resize(18, "not-larger", X, sizes=ints(9, 9), axes=[2, 3], mode="linear", keep_aspect_ratio_policy="not_larger"),
    resize(18, "not-smaller", X, sizes=ints(9, 9), axes=[2, 3], keep_aspect_ratio_policy="not_smaller"),
    # opset 19: half_pixel_symmetric
    resize(19, "linear-up2", X, scales=UP2, mode="linear"),
    resize(19, "nearest-up2", X, scales=UP2),
    resize(19, "linear-symmetric", X, scales=floats(1, 1, 1.7, 0.7), mode="linear",
           coordinate_transformation_mode="half_pixel_symmetric"),
    resize(19, "nearest-symmetric", X, sizes=ints(1, 2, 8, 4), coordinate_transformation_mode="half_pixel_symmetric"),
    # Upsample
    OpCase("Upsample", [X], opset=7, attrs={"scales": [1.0, 1.0, 2.0, 2.0]}),
    OpCase("Upsample", [X], opset=7, name="linear", attrs={"scales": [1.0, 1.0, 2.0, 3.0], "mode": "linear"}),
    OpCase("Upsample", [X, UP2], opset=9, constant_inputs=(1,)),
    OpCase("Upsample", [X, ODD], opset=9, name="linear-odd", attrs={"mode": "linear"}, constant_inputs=(1,)),
]
