"""Freeing a fixed batch of 1 (onnxviz.batching): the rewrite, its verification, and that a
freed model's batched runs and gradients equal its one-sample-at-a-time ones."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxviz.batching import BATCH_PARAM, free_batch
from onnxviz.methods.registry import explain
from onnxviz.model import Model
from tests import models


def _per_sample(m: Model, x: np.ndarray) -> np.ndarray:
    return np.concatenate([m.ort.run({"input": x[i : i + 1]})["logits"] for i in range(len(x))])


def test_reshape_target_is_freed_and_names_kept() -> None:
    proto = models.fixed_flatten_cnn()
    m = Model.from_proto(proto)
    freed = free_batch(proto, m.graph, 1)
    assert freed is not None
    assert freed.graph.input[0].type.tensor_type.shape.dim[0].dim_param == BATCH_PARAM
    assert freed.graph.output[0].type.tensor_type.shape.dim[0].dim_param == BATCH_PARAM
    assert [n.name for n in freed.graph.node] == [n.name for n in proto.graph.node]
    reshape = next(n for n in freed.graph.node if n.op_type == "Reshape")
    target = next(t for t in freed.graph.initializer if t.name == reshape.input[1])
    assert numpy_helper.to_array(target).tolist() == [0, -1]
    assert numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "flat_shape")).tolist() == [1, -1]
    onnx.checker.check_model(freed)


def test_freed_model_runs_batches_whole_with_the_same_numbers() -> None:
    m = Model.from_proto(models.fixed_flatten_cnn())
    assert m.fixed_batch and m.batch_free is not None and m.batch_limit is None
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    before = x.copy()
    np.testing.assert_allclose(m.run(x)["logits"], _per_sample(m, x), rtol=1e-5, atol=1e-6)
    taps = m.run(x, ["relu"])
    assert taps["relu"].shape == (5, 2, 6, 6)
    seed = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    got = m.value_and_grad({"input": x}, {"logits": seed}, ["input"]).grads["input"]
    ref = np.concatenate([
        m.value_and_grad({"input": x[i : i + 1]}, {"logits": seed[i : i + 1]}, ["input"]).grads["input"] for i in range(5)
    ])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    got64 = m.value_and_grad({"input": x}, {"logits": seed}, ["input"], dtype=np.float64).grads["input"]
    np.testing.assert_allclose(got64, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("kind", ["slice", "allowzero"])
def test_batch_the_rewrite_cannot_free_stays_split(kind: str) -> None:
    """A Slice of row 0 survives the rewrite, and a Reshape with allowzero is not rewritten: the
    verification catches both and the model keeps running one sample at a time, with the right
    numbers."""
    m = Model.from_proto(models.fixed_flatten_cnn(slice_batch=kind == "slice", allowzero=kind == "allowzero"))
    assert m.batch_free is None and m.batch_limit == 1
    x = np.random.default_rng(3).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(m.run(x)["logits"], _per_sample(m, x), rtol=1e-6)


def test_dynamic_batch_model_is_left_alone() -> None:
    m = Model.from_proto(models.tiny_cnn())
    assert m.batch_free is None and m.batch_limit is None and not m.fixed_batch
    m1 = Model.from_proto(models.tiny_cnn(batch=1))
    assert m1.batch_free is not None and m1.batch_limit is None


@pytest.mark.parametrize("path", models.light_model_paths(), ids=lambda p: p.stem)
def test_light_models_are_freed(path: object) -> None:
    """Every light model in the onnx wheel declares a batch of 1; all of them free (verified)."""
    m = Model.from_proto(onnx.load(path))
    assert m.fixed_batch
    assert m.batch_limit is None


def test_methods_on_a_freed_model_match_per_sample() -> None:
    """Integrated gradients over a batch of 3 equal the per-sample results (IG rows of all samples
    now share passes)."""
    m = Model.from_proto(models.fixed_flatten_cnn())
    x = np.random.default_rng(4).standard_normal((3, 3, 8, 8)).astype(np.float32)
    whole = explain(m, x, method="integrated_gradients", target=2, steps=8)
    for i in range(3):
        one = explain(m, x[i : i + 1], method="integrated_gradients", target=2, steps=8)
        np.testing.assert_allclose(whole.attributions[i], one.attributions[0], rtol=1e-4, atol=1e-6)


def test_size_free_part_of_an_old_ir_model_takes_only_the_image() -> None:
    """Old IRs list every initializer as a graph input too (the onnx wheel's light models). The
    part that computes ``relu2`` keeps the initializers it reads, drops the others with their
    input entries (the head's ``fc.*`` would otherwise become required inputs), frees the image
    input's batch and spatial axes, and reproduces the model at its own size."""
    proto = models.tiny_cnn(batch=1)
    proto.ir_version = 3
    proto.graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in proto.graph.initializer
    )
    heads = {t.name for t in proto.graph.initializer} - {i for n in proto.graph.node[:4] for i in n.input}
    assert heads  # the classifier's weights are not read by relu2
    model = Model.from_proto(proto)
    free = model.size_free(("relu2",), (2, 3), (20, 24))
    assert free is not None
    assert [i.name for i in free.inputs] == ["input"] and free.inputs[0].shape[2:] != (32, 32)
    assert not heads & {v.name for v in free.proto.graph.input}
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(free.run(x, ["relu2"])["relu2"], model.run(x, ["relu2"])["relu2"], rtol=1e-5, atol=1e-6)
