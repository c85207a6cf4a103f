"""Linear (de)quantization: QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear.

All are forward-only (in NON_DIFFERENTIABLE): they let the engine read quantized weights
(``DequantizeLinear`` of an int8 initializer) and run QDQ models. Integer types only (int8,
uint8, int16, uint16; int32 as DequantizeLinear input); the float8 and 4-bit types of opsets
19/21 are refused with a clear error. Rounding is half to even and results saturate to the
integer type's range.

Scale (and zero point) granularity, shared by both directions in :func:`_broadcast_param`:
a scalar (per tensor), a 1-D vector along ``axis`` (per axis, opset 13+) or, with
``block_size > 0`` (opset 21+), a tensor of the input's rank whose ``axis`` dim is
``ceil(D / block_size)``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from onnxviz.errors import OnnxvizError

from ..registry import forward

Array = np.ndarray

# TensorProto element types accepted as output_dtype (UINT8, INT8, UINT16, INT16).
_OUTPUT_DTYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}
_INTEGER_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32)


def _check_integer(dtype: np.dtype, op: str, what: str) -> None:
    if np.dtype(dtype).type not in _INTEGER_DTYPES:
        raise OnnxvizError(
            f"{op}: {what} of type {np.dtype(dtype)} is not supported by the numpy engine",
            hint="only int8/uint8/int16/uint16 (and int32 for DequantizeLinear) quantization is "
            "supported; float8 and 4-bit types are not",
        )


def _broadcast_param(
    p: Array, x_shape: tuple[int, ...], axis: int, block_size: int, op: str
) -> Array:
    """A scale or zero point shaped to broadcast against ``x`` (see the module docstring)."""
    p = np.asarray(p)
    if p.ndim == 0 or (p.size == 1 and block_size <= 0):
        return p.reshape(())
    ndim = len(x_shape)
    axis = axis + ndim if axis < 0 else axis
    if not 0 <= axis < ndim:
        raise OnnxvizError(f"{op}: axis {axis} is out of range for an input of rank {ndim}")
    if block_size > 0:
        if p.ndim != ndim:
            raise OnnxvizError(
                f"{op}: blocked quantization needs a scale of rank {ndim}, got shape {p.shape}"
            )
        return np.repeat(p, block_size, axis=axis).take(np.arange(x_shape[axis]), axis=axis)
    if p.ndim != 1 or p.shape[0] != x_shape[axis]:
        raise OnnxvizError(
            f"{op}: per-axis scale of shape {p.shape} does not match axis {axis} of input "
            f"shape {x_shape}",
            hint="the scale must be a scalar or a 1-D tensor as long as the quantized axis",
        )
    shape = [1] * ndim
    shape[axis] = x_shape[axis]
    return p.reshape(shape)


def _saturate(values: Array, dtype: type) -> Array:
    """Round half to even and clip to the integer type's range."""
    info = np.iinfo(dtype)
    return np.asarray(np.clip(np.rint(values), info.min, info.max)).astype(dtype)


# ---------------------------------------------------------------------------------------------
# QuantizeLinear


def _quantize(
    x: Array, y_scale: Array, y_zero_point: Optional[Array], axis: int, block_size: int,
    output_dtype: int,
) -> Array:
    op = "QuantizeLinear"
    if y_zero_point is not None:
        dtype = y_zero_point.dtype.type
    elif output_dtype:
        if output_dtype not in _OUTPUT_DTYPES:
            raise OnnxvizError(
                f"{op}: output_dtype {output_dtype} is not supported by the numpy engine",
                hint="only int8/uint8/int16/uint16 quantization is supported",
            )
        dtype = _OUTPUT_DTYPES[output_dtype]
    else:
        dtype = np.uint8
    _check_integer(dtype, op, "output")
    scale = _broadcast_param(y_scale, x.shape, axis, block_size, op)
    # x / scale in the scale's precision (float32 for a float32 model), as onnxruntime does.
    work = np.result_type(scale.dtype, np.float32)
    q = np.rint(x.astype(work, copy=False) / scale.astype(work, copy=False))
    if y_zero_point is not None:
        q = q + _broadcast_param(y_zero_point, x.shape, axis, block_size, op).astype(work)
    return _saturate(q, dtype)


@forward("QuantizeLinear", since=10)
def quantize_linear_10(x: Array, y_scale: Array, y_zero_point: Optional[Array] = None) -> Array:
    """``y = saturate(round(x / y_scale) + y_zero_point)`` per tensor (uint8 if no zero point)."""
    return _quantize(x, y_scale, y_zero_point, 1, 0, 0)


@forward("QuantizeLinear", since=13)
def quantize_linear_13(
    x: Array, y_scale: Array, y_zero_point: Optional[Array] = None, *, axis: int = 1
) -> Array:
    """As opset 10, plus per-axis scales along ``axis``."""
    return _quantize(x, y_scale, y_zero_point, axis, 0, 0)


@forward("QuantizeLinear", since=19)
def quantize_linear_19(
    x: Array, y_scale: Array, y_zero_point: Optional[Array] = None, *, axis: int = 1,
    saturate: int = 1,
) -> Array:
    """As opset 13 (``saturate`` only concerns float8 outputs, which are not supported)."""
    return _quantize(x, y_scale, y_zero_point, axis, 0, 0)


@forward("QuantizeLinear", since=21)
def quantize_linear_21(
    x: Array, y_scale: Array, y_zero_point: Optional[Array] = None, *, axis: int = 1,
    saturate: int = 1, block_size: int = 0, output_dtype: int = 0,
) -> Array:
    """As opset 19, plus blocked scales and ``output_dtype`` (when there is no zero point)."""
    return _quantize(x, y_scale, y_zero_point, axis, block_size, output_dtype)


# ---------------------------------------------------------------------------------------------
# DequantizeLinear


def _dequantize(
    x: Array, x_scale: Array, x_zero_point: Optional[Array], axis: int, block_size: int
) -> Array:
    op = "DequantizeLinear"
    _check_integer(x.dtype, op, "input")
    scale = _broadcast_param(x_scale, x.shape, axis, block_size, op)
    shifted = x.astype(np.int64)
    if x_zero_point is not None:
        shifted = shifted - _broadcast_param(x_zero_point, x.shape, axis, block_size, op).astype(
            np.int64
        )
    return (shifted.astype(scale.dtype) * scale).astype(scale.dtype, copy=False)


@forward("DequantizeLinear", since=10)
def dequantize_linear_10(
    x: Array, x_scale: Array, x_zero_point: Optional[Array] = None
) -> Array:
    """``y = (x - x_zero_point) * x_scale`` per tensor, in the scale's float type."""
    return _dequantize(x, x_scale, x_zero_point, 1, 0)


@forward("DequantizeLinear", since=13)
def dequantize_linear_13(
    x: Array, x_scale: Array, x_zero_point: Optional[Array] = None, *, axis: int = 1
) -> Array:
    """As opset 10, plus per-axis scales along ``axis`` (opset 19 only widened the types)."""
    return _dequantize(x, x_scale, x_zero_point, axis, 0)


@forward("DequantizeLinear", since=21)
def dequantize_linear_21(
    x: Array, x_scale: Array, x_zero_point: Optional[Array] = None, *, axis: int = 1,
    block_size: int = 0,
) -> Array:
    """As opset 13, plus blocked scales."""
    return _dequantize(x, x_scale, x_zero_point, axis, block_size)


# ---------------------------------------------------------------------------------------------
# DynamicQuantizeLinear


@forward("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(x: Array) -> tuple[Array, Array, Array]:
    """uint8 quantization with a scale and zero point computed from ``x``'s range (widened to
    include 0): ``scale = (max(0, max x) - min(0, min x)) / 255``, ``zp = round(-min / scale)``.

    An all-zero ``x`` (range 0, where the spec would divide by 0) gives scale 1, zero point 0
    and y = 0, as onnxruntime does.
    """
    work = np.result_type(x.dtype, np.float32)
    xw = x.astype(work, copy=False)
    zero = np.zeros((), dtype=work)
    low = np.minimum(zero, xw.min()) if xw.size else zero
    high = np.maximum(zero, xw.max()) if xw.size else zero
    scale = np.asarray((high - low) / work.type(255), dtype=work)
    if scale == 0:
        return np.zeros(x.shape, np.uint8), np.ones((), dtype=work), np.zeros((), np.uint8)
    zero_point = _saturate(np.asarray(-low / scale), np.uint8)
    y = _saturate(np.rint(xw / scale) + zero_point.astype(work), np.uint8)
    return y, scale, zero_point
