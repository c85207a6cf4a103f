"""Objectives: seeds against finite differences of their values (float64), algebra, batching."""

from __future__ import annotations

import numpy as np
import pytest

from onnxviz.errors import TargetError
from onnxviz.maximize import objectives as O

RNG_SEED = 0


def _fd_check(obj: O.Objective, name: str, x: np.ndarray, eps: float = 1e-6) -> None:
    """``<seed, u>`` against the central difference of ``sum_i value_i`` along a random ``u``."""
    rng = np.random.default_rng(1)
    _, seed = obj.evaluate_tensor(name, x)
    for _ in range(3):
        u = rng.standard_normal(x.shape)
        fp = obj.evaluate_tensor(name, x + eps * u)[0].sum()
        fm = obj.evaluate_tensor(name, x - eps * u)[0].sum()
        fd = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(np.vdot(seed, u), fd, rtol=1e-6, atol=1e-8)


def _x(*shape: int) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).standard_normal(shape)


CASES = [
    ("channel", lambda: O.channel("t", 2), (3, 5, 4, 6)),
    ("channel batched", lambda: O.channel("t", [0, 4, 1]), (3, 5, 4, 6)),
    ("channel NHWC", lambda: O.channel("t", [1, 2, 3], axis=-1), (3, 4, 6, 5)),
    ("channel rank 2", lambda: O.channel("t", 3), (2, 7)),
    ("neuron centre", lambda: O.neuron("t", [1, 2]), (2, 5, 4, 6)),
    ("neuron at", lambda: O.neuron("t", 1, y=0, x=5), (2, 5, 4, 6)),
    ("layer_l2", lambda: O.layer_l2("t"), (2, 3, 4, 5)),
    ("class_logit", lambda: O.class_logit("t", [3, 0]), (2, 10)),
    ("class_probability", lambda: O.class_probability("t", 4), (3, 10)),
    ("direction cosine", lambda: O.direction("t", [1.0, -2.0, 0.5, 3.0, 1.0]), (2, 5, 3, 4)),
    ("direction dot", lambda: O.direction("t", [1.0, -2.0, 0.5, 3.0, 1.0], cosine=False), (2, 5, 3, 4)),
    ("diversity", lambda: O.diversity("t"), (4, 5, 3, 3)),
    ("weighted sum", lambda: 2.0 * O.channel("t", 1) - 0.5 * O.layer_l2("t") + O.diversity("t"), (3, 5, 4, 4)),
]


@pytest.mark.parametrize("label,make,shape", CASES, ids=[c[0] for c in CASES])
def test_seed_matches_finite_differences(label: str, make, shape: tuple[int, ...]) -> None:
    _fd_check(make(), "t", _x(*shape))


IMAGE_CASES = [
    ("l1", O.l1),
    ("l2", O.l2),
    ("total_variation", O.total_variation),
]


@pytest.mark.parametrize("label,make", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_image_regularizer_seed_matches_finite_differences(label: str, make) -> None:
    x = np.random.default_rng(3).uniform(0, 1, (2, 6, 7, 3))
    _fd_check(make(), O.IMAGE, x)


def test_blur_is_lucid_stop_gradient_pseudo_objective() -> None:
    x = np.random.default_rng(4).uniform(0, 1, (2, 6, 7, 3))
    obj = O.blur()
    vals, seed = obj.evaluate_tensor(O.IMAGE, x)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(p[:, i : i + 6, j : j + 7] for i in range(3) for j in range(3)) / 9
    np.testing.assert_allclose(seed, (x - blurred) / x[0].size)
    np.testing.assert_allclose(vals, 0.5 * ((x - blurred) ** 2).reshape(2, -1).mean(axis=1))


def test_values_are_the_definitions() -> None:
    x = _x(2, 3, 4, 4)
    vals, _ = O.channel("t", [2, 0]).evaluate_tensor("t", x)
    np.testing.assert_allclose(vals, [x[0, 2].mean(), x[1, 0].mean()])
    vals, _ = O.neuron("t", 1).evaluate_tensor("t", x)
    np.testing.assert_allclose(vals, x[:, 1, 2, 2])
    logits = _x(2, 5)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    vals, _ = O.class_probability("t", 3).evaluate_tensor("t", logits)
    np.testing.assert_allclose(vals, p[:, 3])
    vals, _ = O.class_probability("t", 3, softmax=False).evaluate_tensor("t", p)
    np.testing.assert_allclose(vals, p[:, 3])
    # identical activations: Gram matrices coincide, cosine 1 for each of the N-1 others
    same = np.repeat(_x(1, 3, 4, 4), 3, axis=0)
    vals, _ = O.diversity("t").evaluate_tensor("t", same)
    np.testing.assert_allclose(vals, -2.0 / 3.0)


def test_algebra_and_tensors() -> None:
    a = O.channel("a", 1)
    b = O.layer_l2("b")
    obj = a - 0.1 * O.total_variation() + 2 * b - b / 2
    assert obj.tensors == ("a", "b")
    assert obj.uses_image
    assert [w for w, _ in obj.terms] == [1.0, -0.1, 2.0, -0.5]
    assert sum([a, b]).tensors == ("a", "b")
    assert "channel('a', 1)" in obj.describe()
    values = {"a": _x(2, 3, 2, 2), "b": _x(2, 4), O.IMAGE: np.full((2, 3, 3, 3), 0.5)}
    total, seeds = obj.evaluate(values)
    expect = values["a"][:, 1].mean(axis=(1, 2)) + 1.5 * (values["b"] ** 2).mean(axis=1)
    np.testing.assert_allclose(total, expect)
    assert set(seeds) == {"a", "b", O.IMAGE}
    with pytest.raises(TypeError):
        _ = a * "x"  # type: ignore[operator]


def test_batch_size_and_errors() -> None:
    assert O.channel("t", list(range(8))).batch == 8
    assert O.channel("t", 3).batch is None
    with pytest.raises(TargetError, match="different batch sizes"):
        O.channel("t", [0, 1]) + O.neuron("u", [0, 1, 2])
    with pytest.raises(TargetError, match="out of range"):
        O.channel("t", 9).evaluate_tensor("t", _x(1, 4, 2, 2))
    with pytest.raises(TargetError, match="3 channel indices for a batch of 2"):
        O.channel("t", [0, 1, 2]).evaluate_tensor("t", _x(2, 4, 2, 2))
    with pytest.raises(TargetError, match="entries"):
        O.direction("t", [1.0, 2.0]).evaluate_tensor("t", _x(2, 4, 2, 2))
