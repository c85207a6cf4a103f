"""The gradient family against Captum on exported PyTorch models, both sides in float64.

Architectures: ``resnet`` (BatchNorm folded by the exporter, skips, one ``nn.ReLU`` module reused
twice per block) and ``vgg`` (a plain conv/ReLU/max-pool stack with a Linear/ReLU head). Both use
``nn.ReLU`` modules, which Captum's guided backprop and deconvolution need (it hooks modules;
a functional ``F.relu`` would be invisible to it). All of ``tests/torch_models.py`` qualifies:
none uses ``F.relu``; mobilenetv3 also has Hardswish/Hardsigmoid and efficientnet/convnext only
SiLU/GELU, which neither Captum nor onnxviz modify.

The ONNX side sees float32 weights (the exporter folds BatchNorm in float32), the torch side the
same float32 weights widened to float64, so the models differ by float32 rounding (~1e-7). The
tolerance is 1e-3 relative error: ``||ours - captum|| / ||captum||``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

from onnxviz.methods import gradient as G
from onnxviz.model import Model
from tests import torch_models

TOLERANCE = 1e-3
TARGETS = np.array([3, 7])
STEPS = 12


def rel(ours: np.ndarray, ref: Any) -> float:
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module", params=["resnet", "vgg"])
def pair(request, tmp_path_factory) -> Iterator[tuple[Any, Model, np.ndarray, Any, Any]]:
    """(torch module in float64, the ONNX model, x float32, x as a float64 tensor, targets)."""
    name = request.param
    path = torch_models.export(torch_models.build(name), tmp_path_factory.mktemp(name) / f"{name}.onnx", opset=17)
    module = torch_models.build(name).double()
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.random.fork_rng(devices=[]):
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        yield module, Model.load(path), x, xt, torch.tensor(TARGETS)


def test_saliency(pair) -> None:
    module, model, x, xt, tt = pair
    ref = captum_attr.Saliency(module).attribute(xt, target=tt, abs=True)
    ours = G.Saliency(dtype="float64").explain(model, x, TARGETS)
    assert rel(ours.attributions, ref) < TOLERANCE
    assert rel(ours.maps, ref.amax(dim=1)) < TOLERANCE


def test_input_x_gradient(pair) -> None:
    module, model, x, xt, tt = pair
    ref = captum_attr.InputXGradient(module).attribute(xt, target=tt)
    assert rel(G.GradientXInput(dtype="float64").explain(model, x, TARGETS).attributions, ref) < TOLERANCE


@pytest.mark.parametrize(
    "ours_rule, captum_rule",
    [("gauss-legendre", "gausslegendre"), ("riemann_trapezoid_captum", "riemann_trapezoid")],
)
def test_integrated_gradients(pair, ours_rule: str, captum_rule: str) -> None:
    module, model, x, xt, tt = pair
    ig = captum_attr.IntegratedGradients(module)
    ref, delta = ig.attribute(
        xt, target=tt, n_steps=STEPS, method=captum_rule, internal_batch_size=24, return_convergence_delta=True
    )
    ours = G.IntegratedGradients(STEPS, ours_rule, dtype="float64", batch_size=24).explain(model, x, TARGETS)
    assert rel(ours.attributions, ref) < TOLERANCE
    # Captum's delta is sum(attr) - (F(x) - F(x')); ours is its absolute value relative to F(x) - F(x').
    change = ours.trust["score"] - ours.trust["baseline_score"]
    np.testing.assert_allclose(
        ours.trust["completeness_error"] * np.abs(change), np.abs(delta.detach().numpy()), rtol=1e-2, atol=1e-6
    )


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_with_the_same_noise(pair, kind: str, monkeypatch) -> None:
    """Captum's NoiseTunnel draws ``torch.normal(0, stdev)`` once for all samples, sample-major
    (``repeat_interleave``), which is onnxviz's draw order: feed it onnxviz's standard normals."""
    module, model, x, xt, tt = pair
    samples, stdev = 4, 0.3
    eps = torch.tensor(np.random.default_rng(7).standard_normal((2 * samples, 3, 32, 32)))

    def same_normal(mean: Any, std: Any) -> Any:
        assert tuple(std.shape) == tuple(eps.shape)
        return mean + std * eps

    monkeypatch.setattr(torch, "normal", same_normal)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(module))
    ref = tunnel.attribute(xt, nt_type=kind, nt_samples=samples, stdevs=stdev, target=tt, abs=False)
    monkeypatch.undo()
    sg = G.SmoothGrad(samples, stdev, kind=kind, sigma_absolute=True, dtype="float64", batch_size=5)
    ours = sg.explain(model, x, TARGETS, rng=np.random.default_rng(7))
    assert rel(ours.attributions, ref) < TOLERANCE


@pytest.mark.parametrize("name", ["guided_backprop", "deconvnet"])
def test_modified_relu_backprop(pair, name: str) -> None:
    module, model, x, xt, tt = pair
    ref_cls = captum_attr.GuidedBackprop if name == "guided_backprop" else captum_attr.Deconvolution
    ours_cls = G.GuidedBackprop if name == "guided_backprop" else G.Deconvnet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns about in-place ReLUs and hook ordering
        ref = ref_cls(module).attribute(xt, target=tt)
    plain = captum_attr.Saliency(module).attribute(xt, target=tt, abs=False)
    ours = ours_cls(dtype="float64").explain(model, x, TARGETS).attributions
    assert rel(ours, ref) < TOLERANCE
    assert rel(ours, plain) > 0.1  # the modified rule really changed the result
