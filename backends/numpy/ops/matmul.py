"""Matrix products: Gemm, MatMul, Einsum (with VJPs) and the forward-only integer/quantized
MatMulInteger and QLinearMatMul, forward and VJP side by side.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np

from onnxviz.errors import OnnxvizError

from ..registry import Call, Grads, forward, unbroadcast, vjp

Array = np.ndarray

# ---------------------------------------------------------------------------------------------
# Gemm


@forward("Gemm", since=7)
def gemm(
    A: Array, B: Array, C: Optional[Array] = None,
    *, alpha: float = 1.0, beta: float = 1.0, transA: int = 0, transB: int = 0,
) -> Array:
    """``Y = alpha * A' @ B' + beta * C`` with ``C`` unidirectionally broadcast to ``(M, N)``.

    One registration serves opsets 7 to 21: 9 and 13 only widened the types, 11 made ``C``
    optional (a missing ``C`` is ``None`` here in every version).
    """
    a = A.T if transA else A
    b = B.T if transB else B
    Y = np.matmul(a, b)
    if alpha != 1.0:
        Y = Y * alpha
    if C is not None and beta != 0.0:
        Y = Y + (C if beta == 1.0 else beta * C)
    return Y.astype(A.dtype, copy=False)


@vjp("Gemm", since=7)
def gemm_vjp(call: Call, gY: Optional[Array]) -> Grads:
    A, B = call.inputs[0], call.inputs[1]
    C = call.inputs[2] if len(call.inputs) > 2 else None
    assert A is not None and B is not None
    if gY is None:
        return (None,) * len(call.inputs)
    alpha = call.attrs.get("alpha", 1.0)
    beta = call.attrs.get("beta", 1.0)
    transA, transB = call.attrs.get("transA", 0), call.attrs.get("transB", 0)
    a = A.T if transA else A
    b = B.T if transB else B
    gA = gB = None
    if call.needs[0]:
        ga = alpha * np.matmul(gY, b.T)  # gradient w.r.t. A' = op(A)
        gA = ga.T if transA else ga
    if call.needs[1]:
        gb = alpha * np.matmul(a.T, gY)
        gB = gb.T if transB else gb
    grads: list[Optional[Array]] = [gA, gB]
    if len(call.inputs) > 2:
        grads.append(unbroadcast(beta * gY, C.shape) if C is not None and call.needs[2] else None)
    return tuple(grads)


# ---------------------------------------------------------------------------------------------
# MatMul


@forward("MatMul", since=1)
def matmul(A: Array, B: Array) -> Array:
    """``numpy.matmul``: 1-D operands are promoted and the added axis removed; batch broadcasts."""
    return np.asarray(np.matmul(A, B))


@vjp("MatMul", since=1)
def matmul_vjp(call: Call, gY: Optional[Array]) -> Grads:
    """Gradients of the promoted 2-D/batched product, summed over broadcast batch dims."""
    A, B = call.inputs
    assert A is not None and B is not None
    if gY is None:
        return (None, None)
    a = A if A.ndim > 1 else A[None, :]
    b = B if B.ndim > 1 else B[:, None]
    g = gY
    if B.ndim == 1:
        g = g[..., None]
    if A.ndim == 1:
        g = g[..., None, :]
    gA = gB = None
    if call.needs[0]:
        gA = unbroadcast(np.matmul(g, np.swapaxes(b, -1, -2)), a.shape).reshape(A.shape)
    if call.needs[1]:
        gB = unbroadcast(np.matmul(np.swapaxes(a, -1, -2), g), b.shape).reshape(B.shape)
    return (gA, gB)


# ---------------------------------------------------------------------------------------------
# Einsum


def _text(value: Union[str, bytes]) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_einsum(equation: Union[str, bytes], ndims: Sequence[int]) -> tuple[list[str], str]:
    """Explicit subscripts per operand and for the output, with every ``...`` spelled out.

    Ellipsis dims get fresh letters, right-aligned (an operand with fewer ellipsis dims takes the
    last ones), so numpy's broadcasting of size-1 dims carries over unchanged. Implicit output:
    the ellipsis dims, then the letters that occur once, in ASCII order (the spec's rule).
    """
    eq = _text(equation).replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        raise OnnxvizError(
            f"Einsum equation {eq!r} has {len(terms)} operand terms for {len(ndims)} inputs",
            hint="check the Einsum node's equation attribute",
        )
    used = set(eq) - set(".,->")
    fresh = [c for c in string.ascii_letters if c not in used]
    ell_counts = [nd - len(t.replace("...", "")) for t, nd in zip(terms, ndims) if "..." in t]
    n_ell = max(ell_counts, default=0)
    ell = "".join(fresh[:n_ell])
    subs = []
    for term, nd in zip(terms, ndims):
        if "..." in term:
            k = nd - len(term.replace("...", ""))
            term = term.replace("...", ell[n_ell - k :] if k else "")
        subs.append(term)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts: dict[str, int] = {}
        for c in "".join(t.replace("...", "") for t in terms):
            counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1))
    return subs, out


@forward("Einsum", since=12)
def einsum(*Inputs: Array, equation: Union[str, bytes]) -> Array:
    """``numpy.einsum`` on the spec's equation (spaces allowed, ellipsis broadcasting)."""
    subs, out = _parse_einsum(equation, [x.ndim for x in Inputs])
    result = np.asarray(np.einsum(",".join(subs) + "->" + out, *Inputs))
    # a one-operand einsum (transpose, diagonal) is a writable view of its input: copy it
    return result if result.flags.owndata else result.copy()


def _einsum_operand_grad(
    g: Array, out: str, subs: list[str], operands: Sequence[Array], i: int
) -> Array:
    """Gradient of ``einsum`` w.r.t. operand ``i``: the einsum of the cotangent with the other
    operands, with operand ``i``'s subscripts moved to the output.

    Letters only operand ``i`` has (summed away inside it) are broadcast back; letters where it
    has size 1 against a larger size elsewhere are summed back to 1; repeated letters (a
    diagonal such as ``ii``) are written onto the diagonal of a zero array.
    """
    target = subs[i]
    unique = "".join(dict.fromkeys(target))
    available = set(out).union(*(set(s) for j, s in enumerate(subs) if j != i))
    kept = "".join(c for c in unique if c in available)
    terms = [out] + [s for j, s in enumerate(subs) if j != i]
    args = [g] + [x for j, x in enumerate(operands) if j != i]
    G = np.asarray(np.einsum(",".join(terms) + "->" + kept, *args))
    size = {c: operands[i].shape[target.index(c)] for c in unique}
    G = G.reshape([G.shape[kept.index(c)] if c in kept else 1 for c in unique])
    shrink = tuple(k for k, c in enumerate(unique) if size[c] == 1 and G.shape[k] != 1)
    if shrink:
        G = G.sum(axis=shrink, keepdims=True)
    G = np.broadcast_to(G, [size[c] for c in unique])
    if unique == target:
        # a fresh, writable array: einsum/reshape/broadcast_to may hand back views of gY
        return G if G.flags.owndata and G.flags.writeable else G.copy()
    full = np.zeros(operands[i].shape, dtype=G.dtype)
    np.einsum(target + "->" + unique, full)[...] = G  # writable diagonal view
    return full


@vjp("Einsum", since=12)
def einsum_vjp(call: Call, gY: Optional[Array]) -> Grads:
    operands = [x for x in call.inputs if x is not None]
    if gY is None:
        return (None,) * len(call.inputs)
    subs, out = _parse_einsum(call.attrs["equation"], [x.ndim for x in operands])
    return tuple(
        _einsum_operand_grad(gY, out, subs, operands, i) if call.needs[i] else None
        for i in range(len(operands))
    )


# ---------------------------------------------------------------------------------------------
# MatMulInteger, QLinearMatMul (forward only: NON_DIFFERENTIABLE)


def _row_param(p: Optional[Array], a: Array) -> Union[Array, int]:
    """A per-row (``M``-vector) zero point or scale of ``a`` as a column; scalars unchanged."""
    if p is None:
        return 0
    if p.ndim == 1 and a.ndim >= 2:
        return p.reshape(-1, 1)
    return p


def _int_matmul(
    A: Array, B: Array, a_zero_point: Optional[Array], b_zero_point: Optional[Array]
) -> Array:
    """``(A - a_zp) @ (B - b_zp)`` accumulated exactly in int64 (then wrapped to int32)."""
    a = A.astype(np.int64) - np.asarray(_row_param(a_zero_point, A), dtype=np.int64)
    b = B.astype(np.int64) - (0 if b_zero_point is None else b_zero_point.astype(np.int64))
    return np.asarray(np.matmul(a, b)).astype(np.int32)


@forward("MatMulInteger", since=10)
def matmul_integer(
    A: Array, B: Array, a_zero_point: Optional[Array] = None, b_zero_point: Optional[Array] = None
) -> Array:
    """int32 ``(A - a_zero_point) @ (B - b_zero_point)``; zero points per tensor, per row of A
    (an ``M``-vector) or per column of B (an ``N``-vector)."""
    return _int_matmul(A, B, a_zero_point, b_zero_point)


def _saturating_round(values: Array, dtype: np.dtype) -> Array:
    info = np.iinfo(dtype)
    return np.asarray(np.clip(np.rint(values), info.min, info.max)).astype(dtype)


@forward("QLinearMatMul", since=10)
def qlinear_matmul(
    a: Array, a_scale: Array, a_zero_point: Array, b: Array, b_scale: Array,
    b_zero_point: Array, y_scale: Array, y_zero_point: Array,
) -> Array:
    """``y = saturate(round((a - a_zp) @ (b - b_zp) * a_scale * b_scale / y_scale) + y_zp)``.

    The product is exact in integers; one float32 multiplier ``a_scale * b_scale / y_scale``
    (per row of ``a`` / per column of ``b`` when the scales are vectors) requantizes it, rounding
    half to even, as onnxruntime does. 8-bit integer types only (no float8).
    """
    acc = _int_matmul(a, b, a_zero_point, b_zero_point).astype(np.float32)
    scale = np.asarray(_row_param(a_scale, a), dtype=np.float32) * b_scale.astype(np.float32)
    multiplier = scale / y_scale.astype(np.float32)
    y = np.rint(acc * multiplier) + y_zero_point.astype(np.float32)
    return _saturating_round(y, y_zero_point.dtype)
