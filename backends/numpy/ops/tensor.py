"""Tensor ops that select, join or pad elements: forward and VJP side by side.

Concat, Split, Slice, Gather, GatherElements, ScatterND and Pad. Every VJP scatters the cotangent
back to where the selected elements came from; where one input element feeds several output
elements (Gather with repeated indices, reflect/edge/wrap padding) the contributions are summed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxviz.errors import OnnxvizError, UnsupportedOpError

from ..registry import Call, Grads, forward, vjp

Array = np.ndarray


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --- Concat / Split ---------------------------------------------------------------------------


@forward("Concat", since=4)
def concat(*inputs: Array, axis: int) -> Array:
    """Join along ``axis`` (negative from opset 11)."""
    return np.concatenate(inputs, axis=axis)


@vjp("Concat", since=4)
def concat_vjp(call: Call, gY: Array | None) -> Grads:
    """Split the cotangent back at the inputs' extents along ``axis``."""
    axis = _axis(call.attrs["axis"], gY.ndim)
    ends = np.cumsum([x.shape[axis] for x in call.inputs])[:-1]
    parts = np.split(gY, ends, axis=axis)
    return tuple(p if need else None for p, need in zip(parts, call.needs))


def _split_sizes(length: int, split: Any, num_outputs: int | None) -> list[int]:
    if split is not None and np.asarray(split).size > 0:
        return _ints(split)
    if num_outputs is None:
        raise OnnxvizError(
            "Split without 'split' needs the number of outputs",
            hint="the engine passes num_outputs=len(node.output) for Split-2..17 without 'split'",
        )
    chunk = -(-length // num_outputs)
    return [min(chunk, length - i * chunk) for i in range(num_outputs)]


def _split(input: Array, sizes: list[int], axis: int) -> tuple[Array, ...]:
    return tuple(np.split(input, np.cumsum(sizes)[:-1], axis=axis))


@forward("Split", since=2)
def split(
    input: Array, *, axis: int = 0, split: list[int] | None = None, num_outputs: int | None = None
) -> tuple[Array, ...]:
    """Split-2/11: ``split`` sizes as an attribute; without it, equal parts, one per node output
    (``num_outputs`` is not an ONNX attribute before opset 18: the engine supplies it)."""
    axis = _axis(axis, input.ndim)
    return _split(input, _split_sizes(input.shape[axis], split, num_outputs), axis)


@forward("Split", since=13)
def split_13(
    input: Array, split: Array | None = None, *, axis: int = 0, num_outputs: int | None = None
) -> tuple[Array, ...]:
    """Split-13/18: ``split`` sizes as an input; otherwise ``num_outputs`` parts (an attribute
    from opset 18, the node's output count before) of ``ceil(n / num_outputs)``, the last smaller."""
    axis = _axis(axis, input.ndim)
    return _split(input, _split_sizes(input.shape[axis], split, num_outputs), axis)


@vjp("Split", since=2)
def split_vjp(call: Call, *gouts: Array | None) -> Grads:
    """Concatenate the output cotangents (zeros where an output got none)."""
    parts = [np.zeros_like(y) if g is None else g for g, y in zip(gouts, call.outputs)]
    gX = np.concatenate(parts, axis=_axis(call.attrs.get("axis", 0), call.inputs[0].ndim))
    return (gX, *(None,) * (len(call.inputs) - 1))


# --- Slice ------------------------------------------------------------------------------------


def _slices(shape: tuple[int, ...], starts: Any, ends: Any, axes: Any, steps: Any) -> tuple[slice, ...]:
    """The spec's effective slices: negative starts/ends count from the end, then starts clamp to
    ``[0, d]`` (``[0, d-1]`` for negative steps) and ends to ``[0, d]`` (``[-1, d-1]``), which also
    handles INT_MAX / INT_MIN."""
    rank = len(shape)
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else [_axis(a, rank) for a in _ints(axes)]
    steps = [1] * len(starts) if steps is None else _ints(steps)
    out = [slice(None)] * rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = shape[a]
        s, e = (s + d if s < 0 else s), (e + d if e < 0 else e)
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        out[a] = slice(s, None if e < 0 else e, st)
    return tuple(out)


@forward("Slice", since=1)
def slice_1(data: Array, *, starts: list[int], ends: list[int], axes: list[int] | None = None) -> Array:
    """Slice-1: starts/ends/axes attributes, unit steps."""
    return data[_slices(data.shape, starts, ends, axes, None)].copy()


@forward("Slice", since=10)
def slice_10(
    data: Array, starts: Array, ends: Array, axes: Array | None = None, steps: Array | None = None
) -> Array:
    """Slice-10+: starts/ends/axes/steps inputs (negative steps walk backwards)."""
    return data[_slices(data.shape, starts, ends, axes, steps)].copy()


@vjp("Slice", since=1)
def slice_vjp(call: Call, gY: Array | None) -> Grads:
    """Scatter the cotangent into zeros at the sliced positions (slices never overlap)."""
    x = call.inputs[0]
    if len(call.inputs) > 1:  # Slice-10+: starts and ends are inputs
        starts, ends, axes, steps = (list(call.inputs[1:]) + [None, None])[:4]
    else:
        starts, ends, axes, steps = call.attrs["starts"], call.attrs["ends"], call.attrs.get("axes"), None
    gX = np.zeros(x.shape, dtype=gY.dtype)
    gX[_slices(x.shape, starts, ends, axes, steps)] = gY
    return (gX, *(None,) * (len(call.inputs) - 1))


# --- Gather / GatherElements / ScatterND ------------------------------------------------------


@forward("Gather", since=1)
def gather(data: Array, indices: Array, *, axis: int = 0) -> Array:
    """``np.take`` along ``axis``; negative indices count from the end; scalar indices drop the axis."""
    return np.take(data, np.asarray(indices, dtype=np.int64), axis=axis)


@vjp("Gather", since=1)
def gather_vjp(call: Call, gY: Array | None) -> Grads:
    """Scatter-add the cotangent rows back to their indices (repeated indices accumulate)."""
    data, indices = call.inputs[0], np.asarray(call.inputs[1], dtype=np.int64)
    axis = _axis(call.attrs.get("axis", 0), data.ndim)
    n = data.shape[axis]
    idx = np.where(indices < 0, indices + n, indices).reshape(-1)
    pre = int(np.prod(data.shape[:axis], dtype=np.int64))
    post = int(np.prod(data.shape[axis + 1 :], dtype=np.int64))
    g3 = gY.reshape(pre, idx.size, post)
    out = np.zeros((pre, n, post), dtype=gY.dtype)
    np.add.at(out, (slice(None), idx), g3)
    return (out.reshape(data.shape), None)


@forward("GatherElements", since=11)
def gather_elements(data: Array, indices: Array, *, axis: int = 0) -> Array:
    """``out[i][j][k] = data[indices[i][j][k]][j][k]`` for axis 0 (and alike for other axes)."""
    axis = _axis(axis, data.ndim)
    idx = np.asarray(indices, dtype=np.int64)
    return np.take_along_axis(data, np.where(idx < 0, idx + data.shape[axis], idx), axis=axis)


@vjp("GatherElements", since=11)
def gather_elements_vjp(call: Call, gY: Array | None) -> Grads:
    data = call.inputs[0]
    axis = _axis(call.attrs.get("axis", 0), data.ndim)
    idx = np.asarray(call.inputs[1], dtype=np.int64)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    where = list(np.indices(idx.shape, sparse=True))
    where[axis] = idx
    out = np.zeros(data.shape, dtype=gY.dtype)
    np.add.at(out, tuple(where), gY)
    return (out, None)


def _nd_index(indices: Array, shape: tuple[int, ...]) -> tuple[Array, ...]:
    """The k-tuples of ScatterND's ``indices`` as a numpy fancy index (negative ones wrapped)."""
    idx = np.asarray(indices, dtype=np.int64)
    k = idx.shape[-1]
    idx = idx.reshape(-1, k)
    idx = np.where(idx < 0, idx + np.array(shape[:k], dtype=np.int64), idx)
    return tuple(idx.T)


_SCATTER_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


@forward("ScatterND", since=11)
def scatter_nd(data: Array, indices: Array, updates: Array, *, reduction: bytes | str = "none") -> Array:
    """A copy of ``data`` with slices at ``indices`` replaced by (or, with ``reduction`` from
    opset 16/18, combined by add/mul/max/min with) ``updates``."""
    where = _nd_index(indices, data.shape)
    k = len(where)
    upd = updates.reshape((where[0].size, *data.shape[k:]))
    out = data.copy()
    mode = _text(reduction)
    if mode == "none":
        out[where] = upd
    elif mode in _SCATTER_REDUCE:
        _SCATTER_REDUCE[mode].at(out, where, upd)
    else:
        raise OnnxvizError(f"ScatterND: unknown reduction {mode!r}", hint="use none, add, mul, max or min")
    return out


@vjp("ScatterND", since=11)
def scatter_nd_vjp(call: Call, gY: Array | None) -> Grads:
    """reduction none: the overwritten slices of ``data`` get zero and ``updates`` gets the
    cotangent there (the spec forbids duplicate indices); add: both get the cotangent. The
    indices get none; mul/max/min are not differentiated."""
    data, indices, updates = call.inputs
    mode = _text(call.attrs.get("reduction", "none"))
    if mode not in ("none", "add"):
        raise UnsupportedOpError(
            "ScatterND", call.node, call.opset, reason=f"has no gradient with reduction={mode!r}"
        )
    where = _nd_index(indices, data.shape)
    gdata = gupd = None
    if call.needs[0]:
        gdata = gY.copy()
        if mode == "none":
            gdata[where] = 0
    if call.needs[2]:
        gupd = gY[where].reshape(updates.shape)
    return (gdata, None, gupd)


# --- Pad --------------------------------------------------------------------------------------


def _pad_plan(shape: tuple[int, ...], pads: Any, axes: Any) -> list[tuple[int, int, int, int]]:
    """Per axis ``(crop_begin, crop_end, pad_begin, pad_end)``: negative pads crop, positive pad."""
    rank = len(shape)
    axes = list(range(rank)) if axes is None else [_axis(a, rank) for a in _ints(axes)]
    pads = _ints(pads)
    begin, end = dict(zip(axes, pads[: len(axes)])), dict(zip(axes, pads[len(axes) :]))
    plan = []
    for a in range(rank):
        b, e = begin.get(a, 0), end.get(a, 0)
        plan.append((max(-b, 0), max(-e, 0), max(b, 0), max(e, 0)))
    return plan


def _source(n: int, before: int, after: int, mode: str) -> Array:
    """For each padded position along one axis, the index of the element it copies."""
    j = np.arange(-before, n + after)
    if mode == "edge":
        return np.clip(j, 0, n - 1)
    if mode == "wrap":
        return j % n
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(j)
        k = j % (2 * (n - 1))
        return np.where(k < n, k, 2 * (n - 1) - k)
    raise OnnxvizError(f"Pad: unknown mode {mode!r}", hint="use constant, reflect, edge or wrap")


def _pad(data: Array, pads: Any, value: Any, axes: Any, mode: str) -> Array:
    plan = _pad_plan(data.shape, pads, axes)
    x = data[tuple(slice(cb, data.shape[a] - ce) for a, (cb, ce, _, _) in enumerate(plan))]
    if mode == "constant":
        fill = 0 if value is None else np.asarray(value).reshape(-1)[0]
        return np.pad(x, [(pb, pe) for _, _, pb, pe in plan], constant_values=fill)
    for a, (_, _, pb, pe) in enumerate(plan):
        if pb or pe:
            x = np.take(x, _source(x.shape[a], pb, pe, mode), axis=a)
    return x.copy()


def _pad_vjp(call: Call, gY: Array, pads: Any, axes: Any, mode: str) -> tuple[Array, Array]:
    """(gradient for data, sum of the cotangent over the constant padding)."""
    data = call.inputs[0]
    plan = _pad_plan(data.shape, pads, axes)
    inner = [data.shape[a] - cb - ce for a, (cb, ce, _, _) in enumerate(plan)]
    if mode == "constant":
        g = gY[tuple(slice(pb, pb + n) for (_, _, pb, _), n in zip(plan, inner))]
        gvalue = gY.sum() - g.sum()
    else:
        g, gvalue = gY, np.zeros((), dtype=gY.dtype)
        for a, (_, _, pb, pe) in enumerate(plan):
            if not (pb or pe):
                continue
            n, moved = inner[a], np.moveaxis(g, a, 0)
            folded = moved[pb : pb + n].copy()
            src = _source(n, pb, pe, mode)
            edges = np.r_[0:pb, pb + n : pb + n + pe]
            np.add.at(folded, src[edges], moved[edges])
            g = np.moveaxis(folded, 0, a)
    gX = np.zeros(data.shape, dtype=gY.dtype)
    gX[tuple(slice(cb, data.shape[a] - ce) for a, (cb, ce, _, _) in enumerate(plan))] = g
    return gX, gvalue


@forward("Pad", since=2)
def pad_2(data: Array, *, pads: list[int], mode: bytes | str = "constant", value: float = 0.0) -> Array:
    """Pad-2: pads/value attributes; ``pads`` is ``[x1_begin, x2_begin, ..., x1_end, ...]``."""
    return _pad(data, pads, np.asarray(value, dtype=data.dtype), None, _text(mode))


@forward("Pad", since=11)
def pad_11(
    data: Array, pads: Array, constant_value: Array | None = None, *, mode: bytes | str = "constant"
) -> Array:
    """Pad-11/13: pads and constant_value inputs."""
    return _pad(data, pads, constant_value, None, _text(mode))


@forward("Pad", since=18)
def pad_18(
    data: Array,
    pads: Array,
    constant_value: Array | None = None,
    axes: Array | None = None,
    *,
    mode: bytes | str = "constant",
) -> Array:
    """Pad-18/19: optional ``axes`` input (pads then has ``2 * len(axes)`` entries); ``wrap``
    mode (opset 19) pads as if the tensor were a torus."""
    return _pad(data, pads, constant_value, axes, _text(mode))


@vjp("Pad", since=2)
def pad_vjp(call: Call, gY: Array | None) -> Grads:
    """Constant: crop the cotangent (the padded cells' sum goes to ``constant_value``);
    reflect/edge/wrap: fold the cotangent of every copied cell back onto its source."""
    mode = _text(call.attrs.get("mode", "constant"))
    if len(call.inputs) == 1:
        return (_pad_vjp(call, gY, call.attrs["pads"], None, mode)[0],)
    axes = call.inputs[3] if len(call.inputs) > 3 else None
    gX, gvalue = _pad_vjp(call, gY, call.inputs[1], axes, mode)
    grads: list[Array | None] = [gX if call.needs[0] else None, None]
    if len(call.inputs) > 2:
        value = call.inputs[2]
        need = value is not None and call.needs[2] and np.issubdtype(value.dtype, np.floating)
        grads.append(np.full(value.shape, gvalue, dtype=value.dtype) if need else None)
    if len(call.inputs) > 3:
        grads.append(None)
    return tuple(grads)
