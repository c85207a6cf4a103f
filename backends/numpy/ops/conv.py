"""Convolution ops: Conv and ConvTranspose (with VJPs), ConvInteger and QLinearConv (forward only).

The geometry and the kernels live in :mod:`.conv_kernels`. Every op resolves its attributes once, in :func:`conv_geometry` or :func:`conv_transpose_geometry`,
into a frozen :class:`ConvGeometry` that the forward and the VJP both read, so the two directions
cannot disagree about pads, strides, dilations or groups. Three kernels do all the arithmetic:

- :func:`conv_forward`: 1x1 convolutions are a plain matmul; depthwise convolutions one
  broadcast multiply-add per kernel tap over the input's stride phases; the rest either one BLAS
  product per row of the kernel over a buffer that copies only the other kernel axes'
  windows ("row products"), or im2col (a strided window view copied once per batch block) and
  one product per block, whichever moves less memory (see ``_use_row_products``).
- :func:`conv_input_grad`: the adjoint of :func:`conv_forward` (= ConvTranspose): one matmul with
  the transposed kernel, then a scatter-add per kernel tap (col2im).
- :func:`conv_weight_grad`: the im2col columns against the output cotangent.

ConvTranspose is ``conv_input_grad`` and its input gradient is ``conv_forward`` with the same
weight array (ONNX lays out both weights as ``(conv output channels, conv input channels / group,
*kernel)`` seen from the convolution side). The batch is processed in blocks whose im2col buffer
stays near ``_BLOCK_BYTES``: one big buffer for a whole batch of 224x224 maps costs more in page
faults and cache misses than the python loop over blocks (measured: 2x slower at batch 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np


from ..registry import Call, Grads, forward, vjp
from .conv_kernels import (
    ConvGeometry,
    bias_grad,
    bias_shape,
    conv_forward,
    conv_geometry,
    conv_input_grad,
    conv_transpose_geometry,
    conv_weight_grad,
)

Array = np.ndarray
@forward("Conv", since=1)
def conv(
    X: Array, W: Array, B: Optional[Array] = None, *, auto_pad: object = "NOTSET",
    dilations: Optional[Sequence[int]] = None, group: int = 1,
    kernel_shape: Optional[Sequence[int]] = None, pads: Optional[Sequence[int]] = None,
    strides: Optional[Sequence[int]] = None,
) -> Array:
    """N-d grouped convolution (cross-correlation, as ONNX and every framework define it)."""
    g = conv_geometry(X.shape, W.shape, kernel_shape, strides, dilations, pads, auto_pad, group)
    return conv_forward(X, W, g, B)


forward("Conv", since=11)(conv)  # opset 11 only clarified the auto_pad / kernel_shape text


@vjp("Conv", since=1)
def conv_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """Input gradient by :func:`conv_input_grad` (no weight work unless ``needs[1]``)."""
    X, W = call.inputs[0], call.inputs[1]
    a = call.attrs
    g = conv_geometry(X.shape, W.shape, a.get("kernel_shape"), a.get("strides"), a.get("dilations"),
                      a.get("pads"), a.get("auto_pad", "NOTSET"), int(a.get("group", 1)))
    n_in = len(call.inputs)
    if gY is None:
        return (None,) * n_in
    gX = conv_input_grad(gY, W, g, X.shape[1]) if call.needs[0] else None
    gW = conv_weight_grad(X, gY, g, W.shape) if call.needs[1] else None
    gB = bias_grad(gY) if n_in > 2 and call.needs[2] and call.inputs[2] is not None else None
    return (gX, gW, gB)[:n_in]


def _transpose_geometry(X: Array, W: Array, attrs: dict) -> ConvGeometry:
    return conv_transpose_geometry(
        X.shape, W.shape, attrs.get("kernel_shape"), attrs.get("strides"), attrs.get("dilations"),
        attrs.get("pads"), attrs.get("auto_pad", "NOTSET"), int(attrs.get("group", 1)),
        attrs.get("output_padding"), attrs.get("output_shape"))


@forward("ConvTranspose", since=1)
def conv_transpose(
    X: Array, W: Array, B: Optional[Array] = None, *, auto_pad: object = "NOTSET",
    dilations: Optional[Sequence[int]] = None, group: int = 1,
    kernel_shape: Optional[Sequence[int]] = None, output_padding: Optional[Sequence[int]] = None,
    output_shape: Optional[Sequence[int]] = None, pads: Optional[Sequence[int]] = None,
    strides: Optional[Sequence[int]] = None,
) -> Array:
    """Transposed convolution: the adjoint of Conv with the same weight array."""
    attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                 output_padding=output_padding, output_shape=output_shape, pads=pads, strides=strides)
    g = _transpose_geometry(X, W, attrs)
    y = conv_input_grad(X, W, g, W.shape[1] * group)
    if B is not None:
        y += bias_shape(B, len(g.kernel))
    return y


forward("ConvTranspose", since=11)(conv_transpose)  # opset 11 only clarified the padding text


@vjp("ConvTranspose", since=1)
def conv_transpose_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """Input gradient = Conv of the cotangent with the same weights and geometry."""
    X, W = call.inputs[0], call.inputs[1]
    g = _transpose_geometry(X, W, dict(call.attrs))
    n_in = len(call.inputs)
    if gY is None:
        return (None,) * n_in
    gX = conv_forward(gY, W, g) if call.needs[0] else None
    gW = conv_weight_grad(gY, X, g, W.shape) if call.needs[1] else None
    gB = bias_grad(gY) if n_in > 2 and call.needs[2] and call.inputs[2] is not None else None
    return (gX, gW, gB)[:n_in]


def _integer_conv(x: Array, xz: Optional[Array], w: Array, wz: Optional[Array], attrs: dict) -> Array:
    """``conv(x - xz, w - wz)`` exactly: integers below 2**53 are exact in float64 BLAS."""
    xf = x.astype(np.float64) - (0.0 if xz is None else np.asarray(xz, np.float64))
    wf = w.astype(np.float64)
    if wz is not None:
        wz = np.asarray(wz, np.float64)
        wf = wf - (wz.reshape(-1, *(1,) * (w.ndim - 1)) if wz.ndim == 1 else wz)
    g = conv_geometry(x.shape, w.shape, attrs.get("kernel_shape"), attrs.get("strides"),
                      attrs.get("dilations"), attrs.get("pads"), attrs.get("auto_pad", "NOTSET"),
                      int(attrs.get("group", 1)))
    return np.rint(conv_forward(xf, wf, g))


@forward("ConvInteger", since=10)
def conv_integer(
    x: Array, w: Array, x_zero_point: Optional[Array] = None, w_zero_point: Optional[Array] = None,
    *, auto_pad: object = "NOTSET", dilations: Optional[Sequence[int]] = None, group: int = 1,
    kernel_shape: Optional[Sequence[int]] = None, pads: Optional[Sequence[int]] = None,
    strides: Optional[Sequence[int]] = None,
) -> Array:
    """Integer convolution to int32; padding contributes ``x_zero_point`` (i.e. zero after shift)."""
    attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                 pads=pads, strides=strides)
    return _integer_conv(x, x_zero_point, w, w_zero_point, attrs).astype(np.int32)


@forward("QLinearConv", since=10)
def qlinear_conv(
    x: Array, x_scale: Array, x_zero_point: Array, w: Array, w_scale: Array, w_zero_point: Array,
    y_scale: Array, y_zero_point: Array, B: Optional[Array] = None, *, auto_pad: object = "NOTSET",
    dilations: Optional[Sequence[int]] = None, group: int = 1,
    kernel_shape: Optional[Sequence[int]] = None, pads: Optional[Sequence[int]] = None,
    strides: Optional[Sequence[int]] = None,
) -> Array:
    """Quantized convolution: exact int32 accumulation (+ int32 bias), then requantization.

    ``y = saturate(round_half_even(acc * (x_scale * w_scale / y_scale)) + y_zero_point)`` with the
    multiplier and product in float32, as onnxruntime computes it; ``w_scale`` / ``w_zero_point``
    may be per output channel.
    """
    attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                 pads=pads, strides=strides)
    acc = _integer_conv(x, x_zero_point, w, w_zero_point, attrs)
    if B is not None:
        acc += bias_shape(B.astype(np.float64), x.ndim - 2)
    scale = (np.float32(x_scale) * np.asarray(w_scale, np.float32)) / np.float32(y_scale)
    scale = bias_shape(scale, x.ndim - 2) if scale.ndim == 1 else scale
    value = np.rint(acc.astype(np.float32) * scale) + np.float32(y_zero_point)
    info = np.iinfo(y_zero_point.dtype)
    return np.clip(value, info.min, info.max).astype(y_zero_point.dtype)
