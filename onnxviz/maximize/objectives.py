"""Objectives for feature visualization: small immutable values composable with ``+``, ``-``, ``*``.

An :class:`Objective` is a weighted sum of :class:`Term`\\ s. Each term reads ONE tensor (a model
tensor by name, or :data:`IMAGE`, the image in [0, 1] as ``N x H x W x C`` before transforms)
and returns, from that tensor's value,

* its value for each batch element (shape ``(N,)``), and
* its seed: the gradient of ``sum_i value_i`` with respect to the tensor,

so a whole objective is evaluated by ONE engine call that seeds every tensor it reads (terms on
the same tensor add their seeds). The optimizer *maximizes* the objective; regularizers return
positive penalties and are subtracted: ``channel("relu3", 5) - 0.05 * total_variation()``.

Batched objectives: ``channel(t, [c0, ..., c15])`` asks image ``i`` of the batch for channel
``c_i`` (a gallery in one batch); a plain int asks every image for the same unit. An objective
knows the batch size it implies (:attr:`Objective.batch`, ``None`` when any batch works).

Layout: the channel axis of rank-4 model tensors is 1 (ONNX's NCHW, what every Conv produces);
pass ``axis=-1`` for tensors that are NHWC (e.g. after a tf2onnx ``Transpose``). Rank-2 tensors
``(N, C)`` are read as units.

The variants follow Lucid (``lucid.optvis.objectives``) with one deliberate change: image
regularizers are *means* over pixels rather than sums, so their weights do not depend on the
image size (multiply by ``H*W*C`` to get Lucid's numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TargetError

__all__ = [
    "IMAGE",
    "Objective",
    "Term",
    "as_objective",
    "blur",
    "channel",
    "class_logit",
    "class_probability",
    "direction",
    "diversity",
    "l1",
    "l2",
    "layer_l2",
    "neuron",
    "total_variation",
]

#: The pseudo tensor name of the image in [0, 1], ``N x H x W x C``, as the parametrization
#: produces it (before transforms and the model's preprocessing).
IMAGE = "<image>"

Units = int | Sequence[int]


# --------------------------------------------------------------------------------------------
# Terms


@dataclass(frozen=True)
class Term:
    """One objective term on one tensor. Subclasses implement :meth:`evaluate`."""

    tensor: str

    @property
    def batch(self) -> int | None:
        """The batch size this term asks for (``None``: any)."""
        return None

    @property
    def label(self) -> str:
        return f"{type(self).__name__.lower()}({self.tensor!r})"

    @property
    def linear(self) -> bool:
        """Whether the term is linear in the tensor, so its seed depends on the shape only."""
        return False

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values per batch element (N,), seed of value's shape)``."""
        raise NotImplementedError


def _units(c: Units, n: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(c))
    if arr.dtype.kind not in "iu":
        raise TargetError(f"{what}: channel indices must be integers, got {c!r}")
    if arr.size == 1:
        return np.repeat(arr, n)
    if arr.size != n:
        raise TargetError(
            f"{what}: {arr.size} channel indices for a batch of {n} images",
            hint="give one channel per image, or a single channel for the whole batch",
        )
    return arr


def _batch_of(c: Units) -> int | None:
    return None if np.ndim(c) == 0 else len(c)  # type: ignore[arg-type]


def _to_channels_first(value: np.ndarray, axis: int, what: str) -> np.ndarray:
    """View of ``value`` as ``(N, C, rest...)`` (rank >= 2)."""
    if value.ndim < 2:
        raise TargetError(
            f"{what}: tensor has shape {list(value.shape)}; a batch axis and a channel axis are needed",
            hint="choose a tensor of rank 2 (N, C) or 4 (N, C, H, W)",
        )
    ax = axis % value.ndim
    if ax == 0:
        raise TargetError(f"{what}: axis 0 is the batch axis, not a channel axis")
    return np.moveaxis(value, ax, 1)


def _check_index(idx: np.ndarray, size: int, what: str) -> None:
    if np.any(idx < 0) or np.any(idx >= size):
        raise TargetError(
            f"{what}: channel index {int(idx[(idx < 0) | (idx >= size)][0])} is out of range "
            f"for {size} channels",
            hint=f"use 0..{size - 1}",
        )


@dataclass(frozen=True)
class Channel(Term):
    """Mean over space of one channel (Lucid ``channel``)."""

    c: Units = 0
    axis: int = 1

    @property
    def batch(self) -> int | None:
        return _batch_of(self.c)

    @property
    def label(self) -> str:
        return f"channel({self.tensor!r}, {self.c})"

    @property
    def linear(self) -> bool:
        return True

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = _to_channels_first(value, self.axis, self.label)
        n, nc = v.shape[:2]
        idx = _units(self.c, n, self.label)
        _check_index(idx, nc, self.label)
        rows = np.arange(n)
        sel = v[rows, idx].reshape(n, -1)
        seed = np.zeros_like(v)
        seed[rows, idx] = 1.0 / sel.shape[1]
        return sel.mean(axis=1), np.moveaxis(seed, 1, self.axis % value.ndim)


@dataclass(frozen=True)
class Neuron(Term):
    """One unit of one channel: position ``(y, x)``, the centre by default (Lucid ``neuron``)."""

    c: Units = 0
    y: int | None = None
    x: int | None = None
    axis: int = 1

    @property
    def batch(self) -> int | None:
        return _batch_of(self.c)

    @property
    def label(self) -> str:
        return f"neuron({self.tensor!r}, {self.c}, y={self.y}, x={self.x})"

    @property
    def linear(self) -> bool:
        return True

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = _to_channels_first(value, self.axis, self.label)
        n, nc = v.shape[:2]
        idx = _units(self.c, n, self.label)
        _check_index(idx, nc, self.label)
        spatial = v.shape[2:]
        if len(spatial) not in (0, 2):
            raise TargetError(f"{self.label}: expected a rank-2 or rank-4 tensor, got {list(value.shape)}")
        pos: tuple[int, ...] = ()
        if spatial:
            h, w = spatial
            y = h // 2 if self.y is None else self.y
            x = w // 2 if self.x is None else self.x
            if not (0 <= y < h and 0 <= x < w):
                raise TargetError(f"{self.label}: position ({y}, {x}) is outside the {h}x{w} map")
            pos = (y, x)
        rows = np.arange(n)
        key = (rows, idx) + pos
        seed = np.zeros_like(v)
        seed[key] = 1.0
        return v[key].astype(value.dtype), np.moveaxis(seed, 1, self.axis % value.ndim)


@dataclass(frozen=True)
class LayerL2(Term):
    """Mean of squares of the whole tensor per image (DeepDream's L2 objective)."""

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = value.shape[0]
        size = value[0].size
        vals = np.square(value).reshape(n, -1).mean(axis=1)
        return vals, value * (2.0 / size)


@dataclass(frozen=True)
class ClassLogit(Term):
    """The unnormalised class score ``S_k`` (Simonyan et al. 2013 class model)."""

    k: Units = 0

    @property
    def batch(self) -> int | None:
        return _batch_of(self.k)

    @property
    def label(self) -> str:
        return f"class_logit({self.tensor!r}, {self.k})"

    @property
    def linear(self) -> bool:
        return True

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = value.reshape(value.shape[0], -1)
        n, nk = v.shape
        idx = _units(self.k, n, self.label)
        _check_index(idx, nk, self.label)
        rows = np.arange(n)
        seed = np.zeros_like(v)
        seed[rows, idx] = 1.0
        return v[rows, idx].copy(), seed.reshape(value.shape)


@dataclass(frozen=True)
class ClassProbability(Term):
    """Softmax probability of class k computed from logits (``softmax=False``: the tensor
    already holds probabilities and is read as is)."""

    k: Units = 0
    softmax: bool = True

    @property
    def batch(self) -> int | None:
        return _batch_of(self.k)

    @property
    def label(self) -> str:
        return f"class_probability({self.tensor!r}, {self.k})"

    @property
    def linear(self) -> bool:
        return not self.softmax

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = value.reshape(value.shape[0], -1)
        n, nk = v.shape
        idx = _units(self.k, n, self.label)
        _check_index(idx, nk, self.label)
        rows = np.arange(n)
        if not self.softmax:
            seed = np.zeros_like(v)
            seed[rows, idx] = 1.0
            return v[rows, idx].copy(), seed.reshape(value.shape)
        z = v - v.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        pk = p[rows, idx]
        onehot = np.zeros_like(v)
        onehot[rows, idx] = 1.0
        seed = pk[:, None] * (onehot - p)
        return pk.copy(), seed.reshape(value.shape)


@dataclass(frozen=True)
class Direction(Term):
    """Alignment with a vector in channel space, averaged over positions.

    ``cosine=True`` (Lucent's ``direction``): mean over positions of ``cos(a_p, vec)``, with
    ``|a_p|`` floored at ``eps``; ``cosine=False`` (Lucid's ``direction``): mean of ``<a_p, vec>``.
    """

    vec: tuple[float, ...] = ()
    cosine: bool = True
    axis: int = 1
    eps: float = 1e-8

    @property
    def label(self) -> str:
        return f"direction({self.tensor!r}, |vec|={len(self.vec)})"

    @property
    def linear(self) -> bool:
        return not self.cosine

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ax = self.axis % value.ndim
        a = np.moveaxis(value, ax, -1)  # (N, ..., C)
        d = np.asarray(self.vec, dtype=value.dtype)
        if d.shape != (a.shape[-1],):
            raise TargetError(
                f"{self.label}: the vector has {d.size} entries, the tensor {a.shape[-1]} channels",
                hint="give one entry per channel",
            )
        n = a.shape[0]
        npos = int(np.prod(a.shape[1:-1]))
        dot = a @ d
        if not self.cosine:
            vals = dot.reshape(n, -1).mean(axis=1)
            seed = np.broadcast_to(d / npos, a.shape).copy()
            return vals, np.moveaxis(seed, -1, ax)
        dn = max(float(np.linalg.norm(d)), self.eps)
        an = np.maximum(np.linalg.norm(a, axis=-1), self.eps)
        cos = dot / (an * dn)
        vals = cos.reshape(n, -1).mean(axis=1)
        # d cos / d a = d / (|a||d|) - cos * a / |a|^2  (where |a| > eps; the floor is constant)
        live = (np.linalg.norm(a, axis=-1) > self.eps)[..., None]
        seed = d / (an[..., None] * dn) - (cos / an**2)[..., None] * a * live
        return vals, np.moveaxis(seed / npos, -1, ax)


@dataclass(frozen=True)
class Diversity(Term):
    """Minus the mean pairwise cosine similarity of Gram matrices across the batch (Lucid).

    ``G_i = F_i^T F_i`` with ``F_i`` the ``(positions, channels)`` activations of image i; the
    value of image i is ``-(1/N) sum_{j != i} <G_i/|G_i|, G_j/|G_j|>``, so the total is Lucid's
    ``diversity``. A batch of one has value 0.
    """

    axis: int = 1
    eps: float = 1e-10

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ax = self.axis % value.ndim
        a = np.moveaxis(value, ax, -1)
        n, c = a.shape[0], a.shape[-1]
        f = a.reshape(n, -1, c)
        gram = np.einsum("npc,npd->ncd", f, f)
        norm = np.maximum(np.sqrt(np.square(gram).sum(axis=(1, 2))), self.eps)
        g = gram / norm[:, None, None]
        s = g.sum(axis=0)
        vals = -(np.einsum("ncd,cd->n", g, s) - np.square(g).sum(axis=(1, 2))) / n
        # total = -(|S|^2 - sum |g_i|^2) / N  =>  d total / d g_i = -(2/N)(S - g_i)
        dg = -(2.0 / n) * (s[None] - g)
        dgram = (dg - g * np.einsum("ncd,ncd->n", dg, g)[:, None, None]) / norm[:, None, None]
        df = np.einsum("npc,ncd->npd", f, dgram + dgram.transpose(0, 2, 1))
        return vals, np.moveaxis(df.reshape(a.shape), -1, ax)


# --- image regularizers (on IMAGE) -----------------------------------------------------------


@dataclass(frozen=True)
class L1(Term):
    """Mean of ``|x - constant|`` over the image (Lucid ``L1``, as a mean)."""

    constant: float = 0.5

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, size = value.shape[0], value[0].size
        d = value - self.constant
        return np.abs(d).reshape(n, -1).mean(axis=1), np.sign(d) / size


@dataclass(frozen=True)
class L2(Term):
    """Mean of ``(x - constant)^2`` over the image (Simonyan's ``|I|^2`` for a grey-centred image)."""

    constant: float = 0.5

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, size = value.shape[0], value[0].size
        d = value - self.constant
        return np.square(d).reshape(n, -1).mean(axis=1), d * (2.0 / size)


@dataclass(frozen=True)
class TotalVariation(Term):
    """Anisotropic total variation ``sum |x[y+1]-x[y]| + |x[:, x+1]-x[:, x]|`` per image, divided
    by the number of pixel values (``tf.image.total_variation``, as a mean)."""

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, size = value.shape[0], value[0].size
        dy = np.diff(value, axis=1)
        dx = np.diff(value, axis=2)
        vals = (np.abs(dy).reshape(n, -1).sum(axis=1) + np.abs(dx).reshape(n, -1).sum(axis=1)) / size
        sy, sx = np.sign(dy), np.sign(dx)
        seed = np.zeros_like(value)
        seed[:, 1:] += sy
        seed[:, :-1] -= sy
        seed[:, :, 1:] += sx
        seed[:, :, :-1] -= sx
        return vals, seed / size


@dataclass(frozen=True)
class Blur(Term):
    """Lucid's ``blur_input_each_step``: ``0.5 * mean (x - stop_gradient(blur(x)))^2``.

    ``blur`` is the 3x3 average with edge replication. The blurred copy is a constant, so the
    seed ``(x - blur(x)) / size`` pulls each pixel towards its neighbourhood; it is *not* the
    derivative of the value with the blur differentiated (Lucid's design).
    """

    def evaluate(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, size = value.shape[0], value[0].size
        p = np.pad(value, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        h, w = value.shape[1:3]
        blurred = sum(p[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
        d = value - blurred
        return 0.5 * np.square(d).reshape(n, -1).mean(axis=1), d / size


# --------------------------------------------------------------------------------------------
# Objective


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms; ``+``, ``-``, unary ``-`` and scalar ``*`` build new ones."""

    terms: tuple[tuple[float, Term], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        batches = {t.batch for _, t in self.terms if t.batch is not None}
        if len(batches) > 1:
            raise TargetError(
                f"the objective's terms ask for different batch sizes {sorted(batches)}",
                hint="give every batched term the same number of channels",
            )

    # -- algebra
    def __add__(self, other: object) -> Objective:
        if isinstance(other, (int, float)) and other == 0:  # sum([...]) starts at 0
            return self
        o = as_objective(other)
        return Objective(self.terms + o.terms)

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective(tuple((-w, t) for w, t in self.terms))

    def __sub__(self, other: object) -> Objective:
        return self + (-as_objective(other))

    def __rsub__(self, other: object) -> Objective:
        return as_objective(other) + (-self)

    def __mul__(self, k: object) -> Objective:
        if not isinstance(k, (int, float, np.floating, np.integer)) or isinstance(k, bool):
            return NotImplemented
        return Objective(tuple((float(k) * w, t) for w, t in self.terms))

    __rmul__ = __mul__

    def __truediv__(self, k: object) -> Objective:
        if not isinstance(k, (int, float, np.floating, np.integer)) or isinstance(k, bool):
            return NotImplemented
        return self * (1.0 / float(k))

    # -- facts
    @property
    def batch(self) -> int | None:
        for _, t in self.terms:
            if t.batch is not None:
                return t.batch
        return None

    @property
    def tensors(self) -> tuple[str, ...]:
        """Model tensors the objective reads, in first-use order (:data:`IMAGE` excluded)."""
        return tuple(dict.fromkeys(t.tensor for _, t in self.terms if t.tensor != IMAGE))

    @property
    def uses_image(self) -> bool:
        return any(t.tensor == IMAGE for _, t in self.terms)

    def describe(self) -> str:
        parts = []
        for w, t in self.terms:
            parts.append(t.label if w == 1.0 else f"{w:g} * {t.label}")
        return " + ".join(parts) if parts else "0"

    # -- evaluation
    def evaluate_tensor(self, name: str, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values per batch element and the seed of the terms that read tensor ``name``."""
        total = np.zeros(value.shape[0], dtype=np.float64)
        seed = np.zeros_like(value)
        for w, t in self.terms:
            if t.tensor != name:
                continue
            vals, s = t.evaluate(value)
            total += w * np.asarray(vals, dtype=np.float64)
            seed += (w * s).astype(value.dtype, copy=False)
        return total, seed

    def seed_array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """The seed of tensor ``name`` for a value of ``shape`` when every term reading it is
        linear (the seed is then known before the forward pass), else ``None``."""
        terms = [t for _, t in self.terms if t.tensor == name]
        if not terms or not all(t.linear for t in terms):
            return None
        return self.evaluate_tensor(name, np.zeros(shape, dtype=dtype))[1]

    def evaluate(self, values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Values per batch element and one seed per tensor read, from all tensor values."""
        names = self.tensors + ((IMAGE,) if self.uses_image else ())
        total: np.ndarray | None = None
        seeds: dict[str, np.ndarray] = {}
        for name in names:
            if name not in values:
                raise TargetError(f"the objective reads tensor {name!r}, which was not computed")
            vals, seeds[name] = self.evaluate_tensor(name, values[name])
            total = vals if total is None else total + vals
        if total is None:
            raise TargetError("the objective has no terms", hint="e.g. channel('relu3', 0)")
        return total, seeds


def as_objective(x: object) -> Objective:
    if isinstance(x, Objective):
        return x
    if isinstance(x, Term):
        return Objective(((1.0, x),))
    raise TypeError(f"cannot combine an objective with {type(x).__name__}")


def _one(term: Term) -> Objective:
    return Objective(((1.0, term),))


# --------------------------------------------------------------------------------------------
# Constructors


def channel(tensor: str, c: Units, *, axis: int = 1) -> Objective:
    """Mean over space of channel ``c`` (or channel ``c[i]`` for image ``i``)."""
    return _one(Channel(tensor, c, axis))


def neuron(tensor: str, c: Units, y: int | None = None, x: int | None = None, *, axis: int = 1) -> Objective:
    """Unit ``(c, y, x)``; the centre of the map by default (for even sizes, ``(H//2, W//2)``)."""
    return _one(Neuron(tensor, c, y, x, axis))


def layer_l2(tensor: str) -> Objective:
    """Mean of squares of the whole tensor (DeepDream)."""
    return _one(LayerL2(tensor))


def class_logit(output: str, k: Units) -> Objective:
    """Unnormalised score of class ``k`` (pre-softmax; Simonyan et al. 2013). Add the image
    penalty separately: ``class_logit(out, k) - lam * l2()``."""
    return _one(ClassLogit(output, k))


def class_probability(output: str, k: Units, *, softmax: bool = True) -> Objective:
    """Probability of class ``k``: softmax over axis 1 of ``output`` (logits), or ``output`` as is
    with ``softmax=False`` for models that end in a Softmax."""
    return _one(ClassProbability(output, k, softmax))


def direction(tensor: str, vec: Sequence[float], *, cosine: bool = True, axis: int = 1) -> Objective:
    """Alignment with ``vec`` in channel space: cosine (default) or dot product, mean over positions."""
    return _one(Direction(tensor, tuple(float(v) for v in np.asarray(vec).ravel()), cosine, axis))


def diversity(tensor: str, *, axis: int = 1) -> Objective:
    """Lucid's diversity term (already negated: adding it rewards different images)."""
    return _one(Diversity(tensor, axis))


def l1(constant: float = 0.5) -> Objective:
    """Image penalty: mean ``|x - constant|`` (subtract it)."""
    return _one(L1(IMAGE, constant))


def l2(constant: float = 0.5) -> Objective:
    """Image penalty: mean ``(x - constant)^2`` (subtract it)."""
    return _one(L2(IMAGE, constant))


def total_variation() -> Objective:
    """Image penalty: anisotropic total variation per pixel value (subtract it)."""
    return _one(TotalVariation(IMAGE))


def blur() -> Objective:
    """Image penalty: Lucid's blur-each-step pseudo-objective (subtract it)."""
    return _one(Blur(IMAGE))
