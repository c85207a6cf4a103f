"""CAM methods and the default CAM layer: known answers on tiny hand-built models, axioms, and
cross-checks against Captum on exported PyTorch models when torch and captum are installed."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from onnxviz.errors import TargetError
from onnxviz.imaging import resize
from onnxviz.methods.cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
    ablation_model,
)
from onnxviz.methods.layers import default_cam_layer, spatial_layers
from tests import models as tm

# --------------------------------------------------------------------------------------------
# A one-conv model whose every quantity can be written down: conv (stride 2) -> relu -> GAP -> Gemm
# --------------------------------------------------------------------------------------------

RNG = np.random.default_rng(42)
W_CONV = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
B_CONV = (RNG.standard_normal(4) * 0.1).astype(np.float32)
W_FC = RNG.standard_normal((3, 4)).astype(np.float32)
B_FC = np.array([0.5, -0.2, 1.5], dtype=np.float32)  # keeps the scores away from 0 (Ablation-CAM divides)


def one_conv_model() -> onnxviz.Model:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["act"]),
        helper.make_node("GlobalAveragePool", ["act"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((W_CONV, "w"), (B_CONV, "b"), (W_FC, "wf"), (B_FC, "bf"))]
    graph = helper.make_graph(
        nodes,
        "one_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return onnxviz.Model.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def np_conv(x: np.ndarray) -> np.ndarray:
    """The model's conv in float64: 3x3, pad 1, stride 2 -> (N, 4, 3, 3)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], 4, 3, 3))
    for ky in range(3):
        for kx in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, ky : ky + 6 : 2, kx : kx + 6 : 2], W_CONV[:, :, ky, kx])
    return out + B_CONV[None, :, None, None]


def np_logits(x: np.ndarray) -> np.ndarray:
    return np.maximum(np_conv(x), 0).mean(axis=(2, 3)) @ W_FC.T.astype(np.float64) + B_FC


def layer_and_grad(x: np.ndarray, layer: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A and dS/dA by hand: through GAP and Gemm, g_c = W_fc[t, c] / (h w) (times the ReLU's mask
    when the layer is the conv before it)."""
    conv = np_conv(x)
    g = np.broadcast_to(W_FC[t][:, :, None, None] / 9.0, conv.shape).astype(np.float64)
    if layer == "conv":
        return conv, g * (conv > 0)
    return np.maximum(conv, 0), g


def np_upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([resize(c, size) for c in cam])


def np_scale(maps: np.ndarray) -> np.ndarray:
    lo = maps.min(axis=(1, 2), keepdims=True)
    return (maps - lo) / ((maps - lo).max(axis=(1, 2), keepdims=True) + 1e-7)


# The formulas, written out independently of onnxviz.methods.cam (pytorch-grad-cam's definitions).
def ref_gradcam(A, g):
    return np.einsum("nc,nchw->nhw", g.mean(axis=(2, 3)), A)


def ref_gradcampp(A, g):
    sum_a = A.sum(axis=(2, 3))[:, :, None, None]
    alpha = g**2 / (2 * g**2 + sum_a * g**3 + 1e-6)
    alpha[g == 0] = 0
    w = (np.maximum(g, 0) * alpha).sum(axis=(2, 3))
    return np.einsum("nc,nchw->nhw", w, A)


def ref_xgradcam(A, g):
    w = (g * A).sum(axis=(2, 3)) / (A.sum(axis=(2, 3)) + 1e-7)
    return np.einsum("nc,nchw->nhw", w, A)


def ref_layercam(A, g):
    return (np.maximum(g, 0) * A).sum(axis=1)


def ref_hirescam(A, g):
    return (g * A).sum(axis=1)


GRADIENT_CAMS = [
    (GradCAM, ref_gradcam),
    (GradCAMPlusPlus, ref_gradcampp),
    (XGradCAM, ref_xgradcam),
    (LayerCAM, ref_layercam),
    (HiResCAM, ref_hirescam),
]


@pytest.fixture(scope="module")
def model() -> onnxviz.Model:
    return one_conv_model()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)


def test_gradcam_known_answer_from_gemm_weights(model, x):
    """Through GAP + Gemm the Grad-CAM weights are the Gemm weights / (h w)."""
    t = np.array([0, 2, 1])
    e = GradCAM().explain(model, x, target=t)
    A = np.maximum(np_conv(x), 0)
    expected = np.maximum(np.einsum("nc,nchw->nhw", W_FC[t] / 9.0, A), 0)
    np.testing.assert_allclose(e.attributions, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e.maps, np_scale(np_upsample(expected, (6, 6))), atol=1e-5)
    assert e.layer == "act" and e.attributions.shape == (3, 3, 3) and e.maps.shape == (3, 6, 6)
    np.testing.assert_allclose(e.scores, np_logits(x)[np.arange(3), t], rtol=1e-5)
    assert list(e.targets) == [0, 2, 1]


@pytest.mark.parametrize("layer", ["act", "conv"])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("cls,ref", GRADIENT_CAMS, ids=[c.name for c, _ in GRADIENT_CAMS])
def test_gradient_cams_match_their_formulas(model, x, cls, ref, layer, relu):
    t = np.array([1, 0, 2])
    e = cls(layer, relu=relu, dtype="float64").explain(model, x, target=t)
    A, g = layer_and_grad(x, layer, t)
    expected = ref(A, g)
    if relu:
        expected = np.maximum(expected, 0)
    np.testing.assert_allclose(e.attributions, expected, rtol=1e-6, atol=1e-9)
    assert e.layer == layer and e.signed == (not relu)
    assert e.maps.min() >= 0 and e.maps.max() <= 1


def test_hirescam_without_relu_sums_to_the_score_minus_bias(model, x):
    """HiResCAM is exact for GAP + linear heads: its map sums to S - b."""
    e = HiResCAM(relu=False, dtype="float64").explain(model, x, target=2)
    np.testing.assert_allclose(e.attributions.sum(axis=(1, 2)), np_logits(x)[:, 2] - B_FC[2], rtol=1e-6)


def test_ablationcam_closed_form_on_gap_linear_head(model, x):
    """Zeroing channel c removes W[t, c] mean(A_c) from S: w_c = W[t, c] mean(A_c) / S."""
    t = np.array([0, 1, 2])
    e = AblationCAM(batch_size=5).explain(model, x, target=t)
    A = np.maximum(np_conv(x), 0)
    S = np_logits(x)[np.arange(3), t]
    w = W_FC[t] * A.mean(axis=(2, 3)) / S[:, None]
    np.testing.assert_allclose(e.trust["channel_weights"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(e.attributions, np.maximum(np.einsum("nc,nchw->nhw", w, A), 0), rtol=1e-4, atol=1e-5)


def test_ablation_model_masks_one_channel(model, x):
    ablated, mask_name = ablation_model(model, "act", 4, np.dtype(np.float32))
    mask = np.ones((3, 4, 1, 1), np.float32)
    mask[:, 2] = 0
    out = ablated.run({"x": x, mask_name: mask})["logits"]
    A = np.maximum(np_conv(x), 0)
    A[:, 2] = 0
    np.testing.assert_allclose(out, A.mean(axis=(2, 3)) @ W_FC.T + B_FC, rtol=1e-5, atol=1e-5)


def test_scorecam_against_an_independent_computation(model, x):
    t = np.array([2, 2, 0])
    e = ScoreCAM(batch_size=5).explain(model, x, target=t)
    A = np.maximum(np_conv(x), 0)
    weights = np.zeros((3, 4))
    for i in range(3):
        for c in range(4):
            m = resize(A[i, c], (6, 6))
            m = (m - m.min()) / (m.max() - m.min() + 1e-8)
            weights[i, c] = np_logits(x[i : i + 1] * m)[0, t[i]]
    weights = np.exp(weights - weights.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(e.trust["channel_weights"], weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        e.attributions, np.maximum(np.einsum("nc,nchw->nhw", weights, A), 0), rtol=1e-4, atol=1e-6
    )


def rank_one_model(u: np.ndarray) -> onnxviz.Model:
    """x (N, 1, 5, 5) -> 1x1 conv with weights u (no bias): A_c = u_c x, a rank-1 activation."""
    nodes = [
        helper.make_node("Conv", ["x", "u"], ["A"], kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["A"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rank_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", len(u)])],
        [numpy_helper.from_array(u.reshape(-1, 1, 1, 1).astype(np.float32), "u")],
    )
    return onnxviz.Model.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


@pytest.mark.parametrize("u", [np.array([1.0, 2.0, -0.5, 0.7]), np.array([-1.0, -2.0, 0.5])])
def test_eigencam_of_a_rank_one_activation_is_that_component(u):
    """A = u x: the centred first component is |u| (x - mean x), signed to correlate positively
    with the mean activation mean(u) x."""
    x = np.random.default_rng(1).standard_normal((2, 1, 5, 5)).astype(np.float32)
    e = EigenCAM(relu=False).explain(rank_one_model(u), x)
    xc = x[:, 0] - x[:, 0].mean(axis=(1, 2), keepdims=True)
    expected = np.linalg.norm(u) * xc * np.sign(u.mean())
    np.testing.assert_allclose(e.attributions, expected, rtol=1e-5, atol=1e-5)
    assert e.layer == "A"


ALL_CAMS = [cls() for cls, _ in GRADIENT_CAMS] + [EigenCAM(), ScoreCAM(batch_size=7), AblationCAM(batch_size=7)]


@pytest.mark.parametrize("method", ALL_CAMS + [GuidedGradCAM()], ids=lambda m: m.name)
def test_batch_equals_per_example_and_inputs_untouched(model, x, method):
    before = x.copy()
    t = np.array([0, 2, 1])
    whole = method.explain(model, x, target=t)
    np.testing.assert_array_equal(x, before)
    for i in range(3):
        one = method.explain(model, x[i : i + 1], target=[int(t[i])])
        np.testing.assert_allclose(whole.attributions[i], one.attributions[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(whole.maps[i], one.maps[0], rtol=1e-5, atol=1e-5)


def test_nhwc_model_reads_the_nchw_layer_and_upsamples_to_the_input():
    """tf2onnx: the default layer is the NCHW Relu before the Transpose; with the pre-softmax
    logits as output, the Grad-CAM weights are the Dense kernel / (h w)."""
    m = onnxviz.Model.from_proto(tm.tf2onnx_nhwc())
    x = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype(np.float32)
    e = GradCAM().explain(m, x, target=4, output="model/dense/BiasAdd:0")
    assert e.layer == "model/conv2d_1/Relu:0"
    A = m.run(x, [e.layer])[e.layer]
    kernel = m.constants["model/dense/MatMul/ReadVariableOp:0"]
    expected = np.maximum(np.einsum("c,nchw->nhw", kernel[:, 4] / 256.0, A), 0)
    np.testing.assert_allclose(e.attributions, expected, rtol=1e-4, atol=1e-6)
    assert e.maps.shape == (2, 32, 32)


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(model, x):
    """With one conv before the layer, guided backprop is the conv transpose of the ReLU'd gradient
    (the only Relu is the layer's own): check against that, and the CAM factor against Grad-CAM."""
    e = GuidedGradCAM(dtype="float64").explain(model, x, target=1)
    cam = GradCAM(dtype="float64").explain(model, x, target=1).attributions
    conv = np_conv(x)
    g_conv = np.maximum(np.broadcast_to(W_FC[1][None, :, None, None] / 9.0, conv.shape), 0) * (conv > 0)
    gx = np.zeros((3, 2, 8, 8))  # padded input gradient
    for ky in range(3):
        for kx in range(3):
            gx[:, :, ky : ky + 6 : 2, kx : kx + 6 : 2] += np.einsum("nohw,oc->nchw", g_conv, W_CONV[:, :, ky, kx])
    expected = gx[:, :, 1:7, 1:7] * np_upsample(cam, (6, 6))[:, None]
    np.testing.assert_allclose(e.attributions, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(e.maps, np.abs(expected).max(axis=1), rtol=1e-6, atol=1e-9)


def test_a_non_spatial_layer_is_refused(model, x):
    with pytest.raises(TargetError, match="rank-4"):
        GradCAM("flat").explain(model, x)


# --------------------------------------------------------------------------------------------
# default_cam_layer
# --------------------------------------------------------------------------------------------

EXPECTED_LAYERS = {
    "tiny_cnn": "relu2",
    "tf2onnx_nhwc": "model/conv2d_1/Relu:0",  # NCHW, before tf2onnx's Transpose to NHWC
    "grayscale_cnn": "ReLU114_Output_0",  # Reshape -> Gemm: the last MaxPool's input
    "dynamic_spatial": "classifier",  # the 1x1 class conv that GlobalAveragePool consumes
    "paddle_style_constants": "pool2d_1.tmp_0",  # GlobalAveragePool consumes the MaxPool output
}


@pytest.mark.parametrize("name", sorted(EXPECTED_LAYERS))
def test_default_cam_layer_on_test_models(name):
    m = onnxviz.Model.from_proto(getattr(tm, name)())
    assert default_cam_layer(m) == EXPECTED_LAYERS[name]
    assert EXPECTED_LAYERS[name] in spatial_layers(m)


EXPECTED_LIGHT = {
    "light_resnet50.onnx": ("r171", "Relu"),  # Relu -> AveragePool 7x7 -> 1x1
    "light_squeezenet.onnx": ("r64", "Relu"),  # conv -> relu -> GlobalAveragePool
    "light_vgg19.onnx": ("r35", "Relu"),  # last MaxPool's input, before Flatten -> Gemm
    "light_densenet121.onnx": ("r907", "Relu"),
    "light_inception_v1.onnx": ("r137", "Concat"),
}


@pytest.mark.parametrize("path", tm.light_model_paths(), ids=lambda p: p.name)
def test_default_cam_layer_on_light_models(path):
    m = onnxviz.Model.load(path)
    layer = default_cam_layer(m)
    shape = m.infer_shapes()[layer].shape
    assert len(shape) == 4 and shape[2] > 1 and shape[3] > 1
    assert m.graph.producer[layer].op_type in ("Relu", "Concat")
    if path.name in EXPECTED_LIGHT:
        name, op = EXPECTED_LIGHT[path.name]
        assert layer == name and m.graph.producer[layer].op_type == op


def test_default_cam_layer_without_a_spatial_map_says_to_pass_a_layer():
    m = onnxviz.Model.from_proto(tm.non_image_mlp())
    with pytest.raises(TargetError) as info:
        default_cam_layer(m)
    assert "--layer" in (info.value.hint or "")


def test_default_cam_layer_without_a_pooling_head_lists_candidates():
    """A fully convolutional output (no pooling or flatten): the hint names the candidates."""
    proto = tm.dynamic_spatial()
    nodes = [n for n in proto.graph.node if n.op_type not in ("GlobalAveragePool", "Flatten")]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("classifier", TensorProto.FLOAT, ["N", 5, "h", "w"]))
    m = onnxviz.Model.from_proto(proto)
    with pytest.raises(TargetError) as info:
        default_cam_layer(m)
    assert "--layer" in info.value.hint and "'relu2'" in info.value.hint


# --------------------------------------------------------------------------------------------
# Against Captum on exported PyTorch models
# --------------------------------------------------------------------------------------------


def _captum():
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    from tests import torch_models

    return torch, captum_attr, torch_models


@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_matches_captum_layergradcam_on_exported_resnet(tmp_path, relu):
    torch, captum_attr, torch_models = _captum()
    module = torch_models.build("resnet", seed=3)
    m = onnxviz.Model.load(torch_models.export(module, tmp_path / "resnet.onnx", opset=13))
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ours = GradCAM(relu=relu, dtype="float64").explain(m, x, target=[3, 7])
    ref = (
        captum_attr.LayerGradCam(module.double(), module.layer3)
        .attribute(torch.from_numpy(x).double(), target=[3, 7], relu_attributions=relu)
        .detach()
        .numpy()[:, 0]
    )
    err = np.abs(ours.attributions - ref).max() / np.abs(ref).max()
    print(f"LayerGradCam relu={relu}: relative error {err:.2e}")
    assert ours.attributions.shape == ref.shape and err < 1e-3, err


@pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's notes on hooks and requires_grad
def test_guided_gradcam_matches_captum_with_bilinear_upsampling(tmp_path):
    torch, captum_attr, torch_models = _captum()
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.relu1 = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.relu2 = nn.ReLU()
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            h = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
            return self.fc(torch.flatten(self.gap(h), 1))

    torch.manual_seed(0)
    net = Net().eval()
    m = onnxviz.Model.load(torch_models.export(net, tmp_path / "net.onnx", opset=13))
    x = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ours = GuidedGradCAM(dtype="float64").explain(m, x, target=[1, 4])
    net = net.double()
    ref = (
        captum_attr.GuidedGradCam(net, net.relu2)
        .attribute(torch.from_numpy(x).double(), target=[1, 4], interpolate_mode="bilinear")
        .detach()
        .numpy()
    )
    err = np.abs(ours.attributions - ref).max() / np.abs(ref).max()
    print(f"GuidedGradCam: relative error {err:.2e}")
    assert err < 1e-3, err
