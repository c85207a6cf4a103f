"""Read-only view of an ONNX graph: tensors, nodes, producers and consumers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

Dim = Union[int, str, None]


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and element type of a graph tensor.

    ``shape`` holds an ``int`` for a fixed dimension, a ``str`` for a symbolic one (``dim_param``,
    e.g. ``"batch"``) and ``None`` where the dimension is unknown; ``shape`` itself is ``None`` when
    even the rank is unknown.
    """

    name: str
    shape: tuple[Dim, ...] | None
    dtype: np.dtype

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)
