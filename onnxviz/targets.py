"""What to explain or differentiate: a target turned into a seed (cotangent) for an output tensor.

Conventions: axis 0 of an output is the batch and axis 1 the class (or channel) axis. A target is
``None`` (each sample's top-scoring class), a class index, one index per sample, or an explicit
cotangent array of the output's shape. The objective is ``sum_n <seed_n, output_n>``: for an index
target, the sum over the batch of each sample's target score (one gradient per sample, since the
samples do not interact).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

from .errors import TargetError

__all__ = ["Target", "output_seed", "resolve_classes", "region_target"]

Target = Union[int, Sequence[int], np.ndarray, None]


def _class_scores(value: np.ndarray, name: str) -> np.ndarray:
    """The output as (N, C) when it is a per-class score vector per sample, else raise."""
    if value.ndim < 2:
        raise TargetError(
            f"output {name!r} has shape {list(value.shape)}; a class target needs (batch, classes, ...)",
            hint="pass an explicit cotangent array, or choose another output",
        )
    if value.ndim > 2 and int(np.prod(value.shape[2:])) != 1:
        return value.reshape(value.shape[0], value.shape[1], -1).sum(axis=2)
    return value.reshape(value.shape[0], value.shape[1])


def resolve_classes(value: np.ndarray, target: Target, *, name: str = "output") -> np.ndarray:
    """One class index per sample (int64 array of length N) for an index-like target."""
    scores = _class_scores(value, name)
    n, c = scores.shape
    if target is None:
        return np.argmax(scores, axis=1).astype(np.int64)
    if isinstance(target, (int, np.integer)):
        idx = np.full(n, int(target), dtype=np.int64)
    else:
        idx = np.asarray(list(target) if not isinstance(target, np.ndarray) else target)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise TargetError(
                f"target must be a class index, one index per sample, or a cotangent array; got shape {list(idx.shape)}",
                hint="e.g. target=3 or target=[3, 7]",
            )
        if idx.shape[0] != n:
            raise TargetError(
                f"{idx.shape[0]} targets for a batch of {n}", hint="give one class index per sample"
            )
        idx = idx.astype(np.int64)
    bad = idx[(idx < 0) | (idx >= c)]
    if bad.size:
        raise TargetError(
            f"class index {int(bad[0])} is out of range for output {name!r} with {c} classes",
            hint=f"use an index in 0..{c - 1}",
        )
    return idx


def output_seed(value: np.ndarray, target: Target, *, name: str = "output") -> np.ndarray:
    """The cotangent of ``value`` that selects ``target`` (see the module docstring)."""
    if isinstance(target, np.ndarray) and (target.ndim == value.ndim and target.ndim > 1):
        if target.shape != value.shape:
            raise TargetError(
                f"cotangent shape {list(target.shape)} does not match output {name!r} shape {list(value.shape)}",
                hint="give an array of the output's shape",
            )
        return target.astype(value.dtype, copy=False)
    idx = resolve_classes(value, target, name=name)
    seed = np.zeros(value.shape, dtype=value.dtype)
    seed[np.arange(value.shape[0]), idx] = 1
    return seed


def region_target(shape: tuple[int, ...], spec: str) -> np.ndarray:
    """A cotangent selecting an element or a region of an output, the same for every sample.

    ``spec`` indexes the non-batch axes like numpy: ``"3"`` (class 3), ``"0,4"`` (the score of
    box 0, column 4 of an (N, boxes, 5+classes) output), ``"1,10:20,5:15"`` (the sum of class 1's
    mask over rows 10-19 and columns 5-14 of an (N, C, H, W) segmentation output). Axes left out
    are taken whole. The objective is the sum of the selected elements.
    """
    parts = [p.strip() for p in spec.split(",")] if spec.strip() else []
    if len(parts) > len(shape) - 1:
        raise TargetError(
            f"target region {spec!r} has {len(parts)} indices; the output {list(shape)} has {len(shape) - 1} non-batch axes",
            hint="index the axes after the batch axis, e.g. 3 or 1,10:20,5:15",
        )
    index: list[int | slice] = [slice(None)]
    for axis, part in enumerate(parts, start=1):
        size = shape[axis]
        try:
            if ":" in part:
                lo, _, hi = part.partition(":")
                sl = slice(int(lo) if lo else None, int(hi) if hi else None)
                if len(range(*sl.indices(size))) == 0:
                    raise TargetError(f"target region {part!r} selects nothing on axis {axis} of size {size}")
                index.append(sl)
            else:
                k = int(part)
                if not -size <= k < size:
                    raise TargetError(
                        f"target index {k} is out of range for axis {axis} of size {size}",
                        hint=f"use 0..{size - 1}",
                    )
                index.append(k)
        except ValueError as e:
            raise TargetError(f"bad target region {spec!r}", hint="write integers and start:stop ranges") from e
    seed = np.zeros(shape, dtype=np.float32)
    seed[tuple(index)] = 1
    return seed
