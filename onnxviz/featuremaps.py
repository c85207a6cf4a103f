"""Feature maps: intermediate tensors from onnxruntime, ranked and summarised per channel.

Tensors are tapped in chunks whose estimated size stays under a memory budget, and only the
summaries and the top channels' maps are kept, so a report on a deep model at batch 8 never
holds every activation at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import TargetError
from .graph import Graph
from .model import Model

__all__ = ["FeatureMap", "feature_maps", "default_feature_tensors", "SPATIAL_OPS"]

#: Ops whose rank-4 outputs are shown as feature maps by default (post-activation where present).
SPATIAL_OPS = frozenset({"Conv", "ConvTranspose", "QLinearConv", "MaxPool", "AveragePool", "Concat", "Add", "Sum"})
_ACTIVATIONS = frozenset(
    {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Gelu", "Mish", "Softplus"}
)
_NORMS = frozenset({"BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization"})


@dataclass(frozen=True)
class FeatureMap:
    """Summary of one intermediate tensor over a batch, with the maps of its top channels.

    ``channel_means`` is the mean activation of each channel over batch and space;
    ``top_channels`` ranks channels by it (highest first); ``top_maps`` has shape
    ``(batch, len(top_channels), H, W)``. ``zero_share`` is the fraction of exact zeros (dead
    units after a ReLU).
    """

    tensor: str
    node: str
    op_type: str
    shape: tuple[int, ...]
    channel_means: np.ndarray
    top_channels: tuple[int, ...]
    top_maps: np.ndarray
    minimum: float
    maximum: float
    mean: float
    zero_share: float
    nonfinite: int


def default_feature_tensors(graph: Graph) -> list[str]:
    """The output of every convolution/pooling/merge stage, taken after its norm and activation."""
    chosen: list[str] = []
    for n in graph.nodes:
        if n.op_type not in SPATIAL_OPS or not n.outputs or n.outputs[0] not in graph.dynamic:
            continue
        name = n.outputs[0]
        # Follow a single-consumer chain of norm/activation nodes to show what the next layer sees.
        while True:
            users = graph.consumers.get(name, ())
            if len(users) == 1 and users[0].op_type in (_ACTIVATIONS | _NORMS) and users[0].inputs[0] == name:
                name = users[0].outputs[0]
            else:
                break
        if name not in chosen:
            chosen.append(name)
    return chosen


def _summarise(name: str, value: np.ndarray, graph: Graph, top_k: int) -> FeatureMap | None:
    if value.ndim != 4 or not np.issubdtype(value.dtype, np.floating):
        return None
    v = value.astype(np.float32, copy=False)
    finite = np.isfinite(v)
    nonfinite = int(v.size - np.count_nonzero(finite))
    vf = np.where(finite, v, 0.0)
    means = vf.mean(axis=(0, 2, 3))
    order = np.argsort(-means, kind="stable")[: max(1, top_k)]
    node = graph.producer.get(name)
    return FeatureMap(
        tensor=name,
        node="" if node is None else node.label,
        op_type="" if node is None else node.op_type,
        shape=tuple(int(d) for d in v.shape),
        channel_means=means.astype(np.float32),
        top_channels=tuple(int(c) for c in order),
        top_maps=np.ascontiguousarray(v[:, order]),
        minimum=float(vf.min()),
        maximum=float(vf.max()),
        mean=float(vf.mean()),
        zero_share=float(np.mean(v == 0)),
        nonfinite=nonfinite,
    )


def feature_maps(
    model: Model,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    tensors: Sequence[str] | None = None,
    *,
    top_k: int = 16,
    budget_bytes: int = 512 * 2**20,
) -> list[FeatureMap]:
    """Feature maps of ``tensors`` (default: :func:`default_feature_tensors`) for a batch.

    Rank-4 tensors are read as ``(N, C, H, W)``; other tensors are skipped.
    """
    graph = model.graph
    feeds = model.feeds(inputs)
    names = list(tensors) if tensors is not None else default_feature_tensors(graph)
    for name in names:
        if name not in graph.dynamic:
            raise TargetError(
                f"no input-dependent tensor named {name!r}",
                hint="`onnxviz inspect MODEL` lists the tensor names",
            )
    shapes = model.infer_shapes({k: v.shape for k, v in feeds.items()})
    chunks: list[list[str]] = [[]]
    used = 0
    for name in names:
        info = shapes.get(name)
        size = 4 * int(np.prod([d if isinstance(d, int) else 1 for d in info.shape])) if info and info.shape else 0
        if chunks[-1] and used + size > budget_bytes:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += size
    result: dict[str, FeatureMap] = {}
    for chunk in chunks:
        if not chunk:
            continue
        values = model.run(feeds, chunk)
        for name in chunk:
            fm = _summarise(name, values[name], graph, top_k)
            if fm is not None:
                result[name] = fm
        del values
    return [result[n] for n in names if n in result]
