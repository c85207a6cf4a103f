"""Shape ops: forward and VJP side by side.

Ops that only move, copy or relabel elements (Reshape, Flatten, Transpose, Squeeze, Unsqueeze,
Identity, Dropout at inference, Expand, Tile, DepthToSpace, SpaceToDepth, Cast) and ops that make
shapes or constants (Shape, Size, Constant, ConstantOfShape, Range; listed in NON_DIFFERENTIABLE).
The VJP of a pure rearrangement is the inverse rearrangement of the cotangent; of a copy
(Expand, Tile), the sum over the copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxviz.errors import OnnxvizError

from ..registry import Call, Grads, forward, unbroadcast, vjp

Array = np.ndarray


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _axes(axes: Any, rank: int) -> list[int]:
    """Normalise an axes list (attribute or int64 tensor), negative axes counting from the end."""
    return [int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes).reshape(-1)]


def _tensor(value: Any) -> Array:
    """A TENSOR attribute as numpy (the engine passes a TensorProto or an array)."""
    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)


def _reshape_back(call: Call, gY: Array | None) -> Grads:
    """The VJP of every op that only relabels the elements: reshape the cotangent back."""
    rest = (None,) * (len(call.inputs) - 1)
    if gY is None or not call.needs[0]:
        return (None, *rest)
    return (gY.reshape(call.inputs[0].shape), *rest)


# --- reshaping ---------------------------------------------------------------------------------


@forward("Reshape", since=5)
def reshape(data: Array, shape: Array, *, allowzero: int = 0) -> Array:
    """Reshape-5/14: ``0`` copies the input dim at that position (unless ``allowzero``, opset 14,
    where it means an empty dim), ``-1`` is inferred from the remaining size."""
    target = [int(s) for s in np.asarray(shape).reshape(-1)]
    if not allowzero:
        target = [data.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return data.reshape(target)


@vjp("Reshape", since=5)
def reshape_vjp(call: Call, gY: Array | None) -> Grads:
    return _reshape_back(call, gY)


@forward("Flatten", since=1)
def flatten(input: Array, *, axis: int = 1) -> Array:
    """Flatten to 2-D ``(prod(shape[:axis]), prod(shape[axis:]))``; negative axis from opset 11."""
    if axis < 0:
        axis += input.ndim
    outer = int(np.prod(input.shape[:axis], dtype=np.int64))
    inner = int(np.prod(input.shape[axis:], dtype=np.int64))
    return input.reshape(outer, inner)


@vjp("Flatten", since=1)
def flatten_vjp(call: Call, gY: Array | None) -> Grads:
    return _reshape_back(call, gY)


@forward("Squeeze", since=1)
def squeeze(data: Array, *, axes: list[int] | None = None) -> Array:
    """Squeeze-1/11: ``axes`` attribute (negative from 11); no axes removes every size-1 dim."""
    if axes is None:
        return data.reshape([n for n in data.shape if n != 1])
    drop = set(_axes(axes, data.ndim))
    for a in drop:
        if data.shape[a] != 1:
            raise OnnxvizError(
                f"Squeeze: axis {a} of shape {data.shape} is not 1",
                hint="Squeeze can only remove axes of size 1",
            )
    return data.reshape([n for i, n in enumerate(data.shape) if i not in drop])


@forward("Squeeze", since=13)
def squeeze_13(data: Array, axes: Array | None = None) -> Array:
    """Squeeze-13: ``axes`` is an optional int64 input."""
    return squeeze(data, axes=None if axes is None else list(np.asarray(axes).reshape(-1)))


@vjp("Squeeze", since=1)
def squeeze_vjp(call: Call, gY: Array | None) -> Grads:
    return _reshape_back(call, gY)


@forward("Unsqueeze", since=1)
def unsqueeze(data: Array, *, axes: list[int] | None = None) -> Array:
    """Unsqueeze-1/11: insert size-1 dims at ``axes`` (positions in the output; negative from 11)."""
    rank = data.ndim + len(list(np.asarray(axes).reshape(-1)))
    new = set(_axes(axes, rank))
    dims = iter(data.shape)
    return data.reshape([1 if i in new else next(dims) for i in range(rank)])


@forward("Unsqueeze", since=13)
def unsqueeze_13(data: Array, axes: Array) -> Array:
    """Unsqueeze-13: ``axes`` is an int64 input."""
    return unsqueeze(data, axes=list(np.asarray(axes).reshape(-1)))


@vjp("Unsqueeze", since=1)
def unsqueeze_vjp(call: Call, gY: Array | None) -> Grads:
    return _reshape_back(call, gY)


@forward("Transpose", since=1)
def transpose(data: Array, *, perm: list[int] | None = None) -> Array:
    """Permute the axes; the default ``perm`` reverses them."""
    return np.transpose(data, None if perm is None else [int(p) for p in perm])


@vjp("Transpose", since=1)
def transpose_vjp(call: Call, gY: Array | None) -> Grads:
    perm = call.attrs.get("perm")
    if perm is None:
        perm = list(range(call.inputs[0].ndim))[::-1]
    return (np.transpose(gY, np.argsort(perm)),)


# --- identities ----------------------------------------------------------------------------


@forward("Identity", since=1)
def identity(input: Array) -> Array:
    """A copy of the input."""
    return input.copy()


@vjp("Identity", since=1)
def identity_vjp(call: Call, gY: Array | None) -> Grads:
    return (gY,)


@forward("Dropout", since=7)
def dropout_7(data: Array, *, ratio: float = 0.5) -> tuple[Array, Array]:
    """Dropout-7 at inference: the output is the input; the mask (type T at opset 7) is all ones."""
    return data.copy(), np.ones_like(data)


@forward("Dropout", since=10)
def dropout_10(data: Array, *, ratio: float = 0.5) -> tuple[Array, Array]:
    """Dropout-10 at inference: the output is the input; the mask (bool from opset 10) is all True."""
    return data.copy(), np.ones(data.shape, dtype=bool)


@forward("Dropout", since=12)
def dropout_12(
    data: Array,
    ratio: Array | None = None,
    training_mode: Array | None = None,
    *,
    seed: int | None = None,
) -> tuple[Array, Array]:
    """Dropout-12: ``ratio`` and ``training_mode`` are inputs. Only inference is supported: a
    random mask would make every gradient method non-deterministic."""
    if training_mode is not None and bool(np.asarray(training_mode)):
        raise OnnxvizError(
            "Dropout with training_mode=True is not supported (it drops random units)",
            hint="export the model in eval mode (model.eval() before torch.onnx.export) "
            "or set the training_mode input to False",
        )
    return data.copy(), np.ones(data.shape, dtype=bool)


@vjp("Dropout", since=7)
def dropout_vjp(call: Call, gY: Array | None, gmask: Array | None = None) -> Grads:
    """At inference Dropout is the identity on ``data``; ratio and training_mode get nothing."""
    return (gY, *(None,) * (len(call.inputs) - 1))


@forward("Cast", since=6)
def cast(input: Array, *, to: int | str | bytes, saturate: int = 1) -> Array:
    """Cast to the TensorProto type ``to`` (an enum; a type name is accepted too). ``saturate``
    (opset 19) only concerns float8 targets, where numpy's cast already saturates."""
    if isinstance(to, (bytes, str)):
        to = TensorProto.DataType.Value(_text(to).upper())
    dtype = helper.tensor_dtype_to_np_dtype(int(to))
    return input.astype(dtype)


@vjp("Cast", since=6)
def cast_vjp(call: Call, gY: Array | None) -> Grads:
    """Float -> float casts pass the cotangent back in the input's dtype; any cast to or from a
    non-float type has no gradient (rounding to int is piecewise constant)."""
    x = call.inputs[0]
    if gY is None or not call.needs[0]:
        return (None,)
    if np.issubdtype(x.dtype, np.floating) and np.issubdtype(call.outputs[0].dtype, np.floating):
        return (gY.astype(x.dtype),)
    return (None,)


@forward("CastLike", since=15)
def cast_like(input: Array, target_type: Array, *, saturate: int = 1) -> Array:
    """Cast ``input`` to the dtype of ``target_type``."""
    return input.astype(target_type.dtype)


@vjp("CastLike", since=15)
def cast_like_vjp(call: Call, gY: Array | None, *rest: Array | None) -> Grads:
    """As Cast: the gradient flows to ``input`` for float -> float; ``target_type`` gets none."""
    return (cast_vjp(call, gY)[0], None)


# --- constants and shapes -------------------------------------------------------------------


@forward("Constant", since=1)
def constant(
    *,
    value: Any = None,
    sparse_value: Any = None,
    value_float: float | None = None,
    value_floats: list[float] | None = None,
    value_int: int | None = None,
    value_ints: list[int] | None = None,
    value_string: bytes | str | None = None,
    value_strings: list[bytes | str] | None = None,
) -> Array:
    """Exactly one of the value attributes gives the tensor (float32 / int64 for the scalar and
    list forms, opset 12); a sparse tensor (opset 11) is made dense."""
    if value is not None:
        return _tensor(value).copy()
    if value_float is not None:
        return np.array(value_float, dtype=np.float32)
    if value_floats is not None:
        return np.array(value_floats, dtype=np.float32).reshape(-1)
    if value_int is not None:
        return np.array(value_int, dtype=np.int64)
    if value_ints is not None:
        return np.array(value_ints, dtype=np.int64).reshape(-1)
    if value_string is not None:
        return np.array(_text(value_string), dtype=object)
    if value_strings is not None:
        return np.array([_text(s) for s in value_strings], dtype=object)
    if sparse_value is not None:
        return _dense(sparse_value)
    raise OnnxvizError("Constant has no value attribute", hint="the model is malformed")


def _dense(sparse: Any) -> Array:
    """A SparseTensorProto as a dense array (indices linearised [NNZ] or coordinates [NNZ, rank])."""
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = tuple(int(d) for d in sparse.dims)
    out = np.zeros(int(np.prod(dims, dtype=np.int64)), dtype=values.dtype)
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    out[flat] = values
    return out.reshape(dims)


@forward("ConstantOfShape", since=9)
def constant_of_shape(input: Array, *, value: Any = None) -> Array:
    """A tensor of shape ``input`` filled with the one-element ``value`` (default float32 0)."""
    fill = np.zeros(1, dtype=np.float32) if value is None else _tensor(value).reshape(-1)
    return np.full([int(n) for n in np.asarray(input).reshape(-1)], fill[0], dtype=fill.dtype)


@forward("Shape", since=1)
def shape(data: Array) -> Array:
    """The shape as a 1-D int64 tensor."""
    return np.array(data.shape, dtype=np.int64)


@forward("Shape", since=15)
def shape_15(data: Array, *, start: int = 0, end: int | None = None) -> Array:
    """Shape-15: the slice ``[start:end]`` of the shape, axes clamped to ``[0, rank]``."""
    rank = data.ndim
    lo = min(max(start + rank if start < 0 else start, 0), rank)
    hi = rank if end is None else min(max(end + rank if end < 0 else end, 0), rank)
    return np.array(data.shape[lo:hi], dtype=np.int64)


@forward("Size", since=1)
def size(data: Array) -> Array:
    """The number of elements as an int64 scalar."""
    return np.array(data.size, dtype=np.int64)


@forward("Range", since=11)
def range_(start: Array, limit: Array, delta: Array) -> Array:
    """``start + i * delta`` for ``i < max(ceil((limit - start) / delta), 0)``, in start's dtype
    (integer inputs are counted exactly, without going through floats)."""
    dtype = np.asarray(start).dtype
    s, lim, d = (np.asarray(v).reshape(()).item() for v in (start, limit, delta))
    if np.issubdtype(dtype, np.integer):
        n = max(-((s - lim) // d), 0)
    else:
        n = max(int(np.ceil((lim - s) / d)), 0)
    steps = np.arange(n, dtype=dtype) * np.asarray(d, dtype=dtype)
    return (np.asarray(start, dtype=dtype) + steps).astype(dtype)


# --- copies ------------------------------------------------------------------------------------


@forward("Expand", since=8)
def expand(input: Array, shape: Array) -> Array:
    """Broadcast ``input`` against ``shape`` (bidirectionally: a 1 in ``shape`` keeps the dim)."""
    out = np.broadcast_shapes(input.shape, tuple(int(n) for n in np.asarray(shape).reshape(-1)))
    return np.broadcast_to(input, out).copy()


@vjp("Expand", since=8)
def expand_vjp(call: Call, gY: Array | None) -> Grads:
    return (unbroadcast(gY, call.inputs[0].shape), None)


@forward("Tile", since=6)
def tile(input: Array, repeats: Array) -> Array:
    """Repeat the whole tensor ``repeats[i]`` times along axis ``i``."""
    return np.tile(input, [int(r) for r in np.asarray(repeats).reshape(-1)])


@vjp("Tile", since=6)
def tile_vjp(call: Call, gY: Array | None) -> Grads:
    """Sum the tiles: view the cotangent as ``(r0, n0, r1, n1, ...)`` and sum the ``r`` axes."""
    x = call.inputs[0]
    reps = [int(r) for r in np.asarray(call.inputs[1]).reshape(-1)]
    split = [d for r, n in zip(reps, x.shape) for d in (r, n)]
    return (gY.reshape(split).sum(axis=tuple(range(0, 2 * x.ndim, 2))), None)


# --- depth <-> space -------------------------------------------------------------------------


def _depth_to_space_plan(
    shape: tuple[int, ...], blocksize: int, mode: str
) -> tuple[list[int], list[int], list[int]]:
    """(split shape, axis permutation, output shape) shared by DepthToSpace and its VJP."""
    b, c, h, w = shape
    bs = blocksize
    oc = c // (bs * bs)
    if mode == "DCR":
        return [b, bs, bs, oc, h, w], [0, 3, 4, 1, 5, 2], [b, oc, h * bs, w * bs]
    if mode == "CRD":
        return [b, oc, bs, bs, h, w], [0, 1, 4, 2, 5, 3], [b, oc, h * bs, w * bs]
    raise OnnxvizError(f"DepthToSpace: unknown mode {mode!r}", hint="mode is 'DCR' or 'CRD'")


def _space_to_depth_plan(shape: tuple[int, ...], blocksize: int) -> tuple[list[int], list[int], list[int]]:
    b, c, h, w = shape
    bs = blocksize
    return [b, c, h // bs, bs, w // bs, bs], [0, 3, 5, 1, 2, 4], [b, c * bs * bs, h // bs, w // bs]


def _rearrange(x: Array, plan: tuple[list[int], list[int], list[int]]) -> Array:
    split, perm, out = plan
    return x.reshape(split).transpose(perm).reshape(out)


def _rearrange_back(g: Array, plan: tuple[list[int], list[int], list[int]], shape: tuple[int, ...]) -> Array:
    split, perm, _ = plan
    return g.reshape([split[p] for p in perm]).transpose(np.argsort(perm)).reshape(shape)


@forward("DepthToSpace", since=1)
def depth_to_space(input: Array, *, blocksize: int, mode: bytes | str = "DCR") -> Array:
    """Move channel blocks into ``blocksize x blocksize`` spatial blocks; ``mode`` (opset 11)
    DCR takes the block offset from the outer channel bits, CRD from the inner ones."""
    return _rearrange(input, _depth_to_space_plan(input.shape, blocksize, _text(mode)))


@vjp("DepthToSpace", since=1)
def depth_to_space_vjp(call: Call, gY: Array | None) -> Grads:
    x = call.inputs[0]
    mode = _text(call.attrs.get("mode", "DCR"))
    return (_rearrange_back(gY, _depth_to_space_plan(x.shape, call.attrs["blocksize"], mode), x.shape),)


@forward("SpaceToDepth", since=1)
def space_to_depth(input: Array, *, blocksize: int) -> Array:
    """Move ``blocksize x blocksize`` spatial blocks into channels (the inverse of DepthToSpace DCR)."""
    return _rearrange(input, _space_to_depth_plan(input.shape, blocksize))


@vjp("SpaceToDepth", since=1)
def space_to_depth_vjp(call: Call, gY: Array | None) -> Grads:
    x = call.inputs[0]
    return (_rearrange_back(gY, _space_to_depth_plan(x.shape, call.attrs["blocksize"]), x.shape),)
