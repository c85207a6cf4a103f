"""Class activation maps: a weighted sum of one layer's feature maps, upsampled to the image.

Notation: ``A`` is the layer's activation ``(N, C, h, w)``, ``g = dS/dA`` the gradient of the
target score ``S`` (the pre-softmax logit when the model outputs logits, else whatever the output
holds) with respect to it. Every CAM here returns

- ``attributions``: the map ``(N, h, w)`` at the layer's resolution, after the final ReLU when
  ``relu=True`` (the default, as pytorch-grad-cam, which clips every CAM at 0);
- ``maps``: the attributions upsampled bilinearly (half-pixel centres, as cv2.resize) to the
  input's ``H, W`` and then min-max scaled to [0, 1] per sample (pytorch-grad-cam scales before
  resizing; scaling after makes the displayed map span exactly [0, 1]).

The layer defaults to :func:`~onnxviz.methods.layers.default_cam_layer` (the last spatial map
before global pooling). Layer tensors are read as ``(N, C, h, w)`` whatever the input's layout:
in tf2onnx models the convolutions run in NCHW after the exporter's Transpose, and that NCHW
tensor is what the default layer names. Gradient CAMs get ``A`` and ``g`` from one pass of the
numpy engine (``value_and_grad(wrt=[layer], values=[layer])``); Eigen-, Score- and Ablation-CAM
only run forward passes in onnxruntime.
"""

from __future__ import annotations

import abc
import warnings
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper

from ..errors import TargetError
from ..model import Model
from .base import (
    Explanation,
    Method,
    TargetSpec,
    bilinear_matrix,
    channel_axis,
    chunks,
    fixed_batch,
    image_size,
    reduce_channels,
    run_output,
    scale_maps,
    take_rows,
    upsample_maps,
)
from .gradient import guided_relu_vjp
from .layers import default_cam_layer, spatial_layers

__all__ = [
    "AblationCAM",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "ablation_model",
    "activations_and_gradients",
]


def _check_layer(model: Model, layer: str, value: np.ndarray) -> None:
    if value.ndim != 4:
        candidates = spatial_layers(model)
        raise TargetError(
            f"CAM layer {layer!r} has shape {list(value.shape)}; a CAM needs a rank-4 (N, C, h, w) feature map",
            hint="pass --layer with one of " + ", ".join(repr(c) for c in candidates[-5:])
            if candidates
            else "this model has no rank-4 feature map",
        )


def _step(model: Model, batch_size: int) -> int:
    """Samples per pass: ``batch_size``, or the model's fixed batch size when it declares one."""
    return fixed_batch(model) or max(1, int(batch_size))


class _CAM(Method):
    """What every CAM shares: the layer, the final ReLU, and turning ``(N, h, w)`` into maps."""

    variant_text: ClassVar[str]

    def __init__(self, layer: str | None = None, *, relu: bool = True) -> None:
        self.layer = layer
        self.relu = relu

    def _layer(self, model: Model, target: TargetSpec) -> str:
        return self.layer or default_cam_layer(model, target.output)

    @property
    def variant(self) -> str:
        return self.variant_text + ("" if self.relu else "; no final ReLU")

    def _result(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        layer: str,
        cam: np.ndarray,
        scores: np.ndarray,
        trust: dict[str, Any] | None = None,
    ) -> Explanation:
        if self.relu:
            cam = np.maximum(cam, 0)
        maps = scale_maps(upsample_maps(cam.astype(np.float64), image_size(model, feeds, input_name)))
        return Explanation(
            method=self.name,
            variant=self.variant,
            attributions=cam,
            maps=maps,
            signed=not self.relu,
            output=target.output,
            targets=target.classes,
            scores=scores,
            input_name=input_name,
            params=self.params,
            layer=layer,
            trust=trust or {},
        )


# ------------------------------------------------------------------------------------------
# Gradient-weighted CAMs
# ------------------------------------------------------------------------------------------


def activations_and_gradients(
    model: Model,
    feeds: dict[str, np.ndarray],
    layer: str,
    target: TargetSpec,
    *,
    dtype: Any = np.float32,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``A``, ``g = dS/dA`` and the target scores ``S``, from one engine pass per chunk."""
    n = next(iter(feeds.values())).shape[0]
    acts, grads, scores = [], [], []
    for s in chunks(n, _step(model, batch_size)):
        rows = np.arange(s.start, s.stop)
        part = take_rows(feeds, rows)
        fixed = target.seed_array(rows, dtype)
        result = model.value_and_grad(
            part,
            {target.output: (lambda v, rows=rows: target.seed(v, rows)) if fixed is None else fixed},
            wrt=[layer],
            values=[layer],
            dtype=dtype,
            independent_rows=True,
        )
        a = result.values[layer]
        _check_layer(model, layer, a)
        acts.append(a)
        grads.append(result.grads[layer])
        scores.append(target.score(result.values[target.output], rows))
    return np.concatenate(acts), np.concatenate(grads), np.concatenate(scores)


class _GradientCAM(_CAM):
    """A CAM computed from ``A`` and ``g``; subclasses give :meth:`cam`."""

    needs_gradients = True

    def __init__(
        self,
        layer: str | None = None,
        *,
        relu: bool = True,
        dtype: str = "float32",
        batch_size: int = 16,
    ) -> None:
        super().__init__(layer, relu=relu)
        self.dtype = np.dtype(dtype).name
        self.batch_size = batch_size

    @staticmethod
    @abc.abstractmethod
    def cam(A: np.ndarray, g: np.ndarray) -> np.ndarray:
        """``(N, C, h, w)`` activations and gradients -> ``(N, h, w)`` map before the ReLU."""

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        layer = self._layer(model, target)
        A, g, scores = activations_and_gradients(
            model, feeds, layer, target, dtype=self.dtype, batch_size=self.batch_size
        )
        return self._result(model, feeds, input_name, target, layer, self.cam(A, g), scores)


class GradCAM(_GradientCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017, eqs. 1-2).

    ``w_c = mean_hw g_c``; ``cam = ReLU(sum_c w_c A_c)``. With ``relu=True`` (default) this is
    pytorch-grad-cam's ``GradCAM``; ``relu=False`` is Captum's ``LayerGradCam`` with its default
    ``relu_attributions=False`` (the same sum without the ReLU).
    """

    name = "gradcam"
    variant_text = "Grad-CAM: ReLU(sum_c mean_hw(g_c) A_c) (pytorch-grad-cam; Captum LayerGradCam with relu_attributions=True)"

    @property
    def variant(self) -> str:
        if self.relu:
            return self.variant_text
        return "Grad-CAM without ReLU: sum_c mean_hw(g_c) A_c (Captum LayerGradCam, relu_attributions=False)"

    @staticmethod
    def cam(A: np.ndarray, g: np.ndarray) -> np.ndarray:
        w = g.mean(axis=(2, 3), keepdims=True)
        return (w * A).sum(axis=1)


class GradCAMPlusPlus(_GradientCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018), eq. 19 under the exponential-output assumption.

    ``alpha = g^2 / (2 g^2 + (sum_hw A) g^3 + eps)``, 0 where ``g == 0``; ``w_c = sum_hw ReLU(g)
    alpha``; ``cam = ReLU(sum_c w_c A_c)``. Exactly pytorch-grad-cam's ``GradCAMPlusPlus``
    (including its ``eps = 1e-6`` in the denominator): the gradients of the raw score stand in
    for those of ``exp(S)``, which the paper's closed form assumes.
    """

    name = "gradcam++"
    variant_text = "Grad-CAM++ eq. 19 (exponential output), alpha = g^2/(2g^2 + sum_hw(A) g^3 + 1e-6) (pytorch-grad-cam)"
    eps: ClassVar[float] = 1e-6

    @staticmethod
    def cam(A: np.ndarray, g: np.ndarray) -> np.ndarray:
        g2 = g * g
        g3 = g2 * g
        sum_a = A.sum(axis=(2, 3), keepdims=True)
        alpha = g2 / (2 * g2 + sum_a * g3 + GradCAMPlusPlus.eps)
        alpha = np.where(g != 0, alpha, 0)
        w = (np.maximum(g, 0) * alpha).sum(axis=(2, 3), keepdims=True)
        return (w * A).sum(axis=1)


class XGradCAM(_GradientCAM):
    """XGrad-CAM (Fu et al., BMVC 2020, eq. 11): ``w_c = sum_hw (g_c A_c) / (sum_hw A_c + eps)``;
    ``cam = ReLU(sum_c w_c A_c)``, as pytorch-grad-cam's ``XGradCAM`` (``eps = 1e-7``)."""

    name = "xgradcam"
    variant_text = "XGrad-CAM: w_c = sum_hw(g A) / (sum_hw A + 1e-7) (pytorch-grad-cam)"
    eps: ClassVar[float] = 1e-7

    @staticmethod
    def cam(A: np.ndarray, g: np.ndarray) -> np.ndarray:
        w = (g * A).sum(axis=(2, 3), keepdims=True) / (A.sum(axis=(2, 3), keepdims=True) + XGradCAM.eps)
        return (w * A).sum(axis=1)


class LayerCAM(_GradientCAM):
    """LayerCAM (Jiang et al., IEEE TIP 2021, eq. 5): ``cam = ReLU(sum_c ReLU(g_c) * A_c)``, a
    per-position weight instead of a per-channel one; as pytorch-grad-cam's ``LayerCAM``."""

    name = "layercam"
    variant_text = "LayerCAM: ReLU(sum_c ReLU(g_c) A_c) (pytorch-grad-cam)"

    @staticmethod
    def cam(A: np.ndarray, g: np.ndarray) -> np.ndarray:
        return (np.maximum(g, 0) * A).sum(axis=1)


class HiResCAM(_GradientCAM):
    """HiResCAM (Draelos & Carin 2020, eq. 4): ``cam = ReLU(sum_c g_c * A_c)``, the element-wise
    product without Grad-CAM's spatial averaging of ``g`` (faithful to the score for models that end
    in global average pooling and one linear layer); as pytorch-grad-cam's ``HiResCAM``."""

    name = "hirescam"
    variant_text = "HiResCAM: ReLU(sum_c g_c A_c) (pytorch-grad-cam)"

    @staticmethod
    def cam(A: np.ndarray, g: np.ndarray) -> np.ndarray:
        return (g * A).sum(axis=1)


class GuidedGradCAM(_GradientCAM):
    """Guided Grad-CAM (Selvaraju et al. 2017, sec. 3.1): guided backprop times Grad-CAM.

    Guided backprop (Springenberg et al. 2015) is the input gradient with every ``Relu``'s rule
    replaced by ``relu(g) * (X > 0)`` (``gradient.guided_relu_vjp`` as a per-call rule override
    of the numpy engine, as :class:`~onnxviz.methods.gradient.GuidedBackprop`); it is
    multiplied element-wise by the Grad-CAM map (with its ReLU, unscaled) upsampled bilinearly to
    the input. This is Captum's ``GuidedGradCam`` except that Captum upsamples with ``nearest`` by
    default. ``attributions`` has the input's shape; ``maps`` reduces the channels with
    ``reduce`` (default ``"max_abs"``, as saliency maps are shown).
    """

    name = "guided_gradcam"
    variant_text = "Guided Grad-CAM: guided backprop x bilinear-upsampled ReLU(Grad-CAM) (Captum GuidedGradCam, bilinear)"

    def __init__(
        self,
        layer: str | None = None,
        *,
        dtype: str = "float32",
        batch_size: int = 16,
        reduce: str = "max_abs",
    ) -> None:
        super().__init__(layer, relu=True, dtype=dtype, batch_size=batch_size)
        self.reduce = reduce

    cam = staticmethod(GradCAM.cam)

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        layer = self._layer(model, target)
        size = image_size(model, feeds, input_name)
        axis = channel_axis(model, input_name)
        A, g, scores = activations_and_gradients(
            model, feeds, layer, target, dtype=self.dtype, batch_size=self.batch_size
        )
        cam = np.maximum(self.cam(A, g), 0)
        up = upsample_maps(cam.astype(np.float64), size)
        up = up[:, None] if axis == 1 else up[..., None]
        guided = []
        for s in chunks(feeds[input_name].shape[0], _step(model, self.batch_size)):
            rows = np.arange(s.start, s.stop)
            part = take_rows(feeds, rows)
            guided.append(
                model.value_and_grad(
                    part,
                    {target.output: lambda v, rows=rows: target.seed(v, rows)},
                    wrt=[input_name],
                    dtype=self.dtype,
                    rules={"Relu": guided_relu_vjp},
                    independent_rows=True,
                ).grads[input_name]
            )
        attributions = np.concatenate(guided) * up
        return Explanation(
            method=self.name,
            variant=self.variant_text,
            attributions=attributions,
            maps=reduce_channels(attributions, axis, self.reduce),
            signed=False,
            output=target.output,
            targets=target.classes,
            scores=scores,
            input_name=input_name,
            params=self.params,
            layer=layer,
        )


# ------------------------------------------------------------------------------------------
# Forward-only CAMs (onnxruntime)
# ------------------------------------------------------------------------------------------


def _activations(
    model: Model, feeds: dict[str, np.ndarray], layer: str, target: TargetSpec
) -> tuple[np.ndarray, np.ndarray]:
    values = model.run(feeds, [layer, target.output])
    A = values[layer]
    _check_layer(model, layer, A)
    return A, target.score(values[target.output])


class EigenCAM(_CAM):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the first principal component of the layer.

    Per sample, the activations as an ``(h*w, C)`` matrix are centred per channel and projected
    on their first right singular vector: ``cam = (A - mean_hw A) v_1`` (pytorch-grad-cam's
    ``get_2d_projection``). It uses no gradient and no class: the map is the same for every
    target. The SVD leaves the sign of ``v_1`` arbitrary (pytorch-grad-cam keeps whatever LAPACK
    returns); here it is fixed so that the map correlates positively with the mean activation over
    channels, i.e. the component points where the layer is active. Then the final ReLU.
    """

    name = "eigencam"
    needs_gradients = False
    variant_text = "Eigen-CAM: centred projection on the first principal component, sign toward the mean activation (pytorch-grad-cam's get_2d_projection)"

    def __init__(self, layer: str | None = None, *, relu: bool = True) -> None:
        super().__init__(layer, relu=relu)

    @staticmethod
    def projection(A: np.ndarray) -> np.ndarray:
        """``(N, C, h, w)`` -> ``(N, h, w)``: the sign-fixed first-component projections."""
        out = []
        for a in np.nan_to_num(A.astype(np.float64)):
            x = a.reshape(a.shape[0], -1).T  # (hw, C)
            x = x - x.mean(axis=0)
            _, _, vt = np.linalg.svd(x, full_matrices=False)
            proj = x @ vt[0]
            mean_act = a.mean(axis=0).ravel()
            if np.dot(proj, mean_act - mean_act.mean()) < 0:
                proj = -proj
            out.append(proj.reshape(a.shape[1:]))
        return np.stack(out)

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        layer = self._layer(model, target)
        A, scores = _activations(model, feeds, layer, target)
        return self._result(model, feeds, input_name, target, layer, self.projection(A), scores)


def _channel_masks(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(k, h, w)`` channels -> ``(k, H, W)`` masks: upsampled, min-max normalised per channel
    (``eps = 1e-8`` as pytorch-grad-cam's Score-CAM)."""
    ry, rx = bilinear_matrix(a.shape[1], size[0]), bilinear_matrix(a.shape[2], size[1])
    up = np.einsum("Hh,khw,Ww->kHW", ry, a.astype(np.float64), rx, optimize=True)
    lo = up.min(axis=(1, 2), keepdims=True)
    hi = up.max(axis=(1, 2), keepdims=True)
    return (up - lo) / (hi - lo + 1e-8)


def _apply_masks(x: np.ndarray, masks: np.ndarray, axis: int) -> np.ndarray:
    """Multiply images ``(k, ...)`` by spatial masks ``(k, H, W)`` over the channel axis."""
    m = masks[:, None] if axis == 1 else masks[..., None]
    return (x * m).astype(x.dtype)


class ScoreCAM(_CAM):
    """Score-CAM (Wang et al., CVPR-W 2020), pytorch-grad-cam's variant.

    Each channel ``A_c`` is upsampled to the input and min-max normalised into a mask ``M_c``; the
    target score of ``x * M_c`` is computed for every channel; ``w = softmax_c(scores)``;
    ``cam = ReLU(sum_c w_c A_c)``. The softmax goes over the channels' scores, as in
    pytorch-grad-cam (the paper subtracts a baseline score and applies the softmax to the class
    outputs instead). The masked copies run through onnxruntime ``batch_size`` at a time.
    """

    name = "scorecam"
    needs_gradients = False
    variant_text = "Score-CAM: w = softmax over channels of S(x * M_c) (pytorch-grad-cam)"

    def __init__(self, layer: str | None = None, *, relu: bool = True, batch_size: int = 32) -> None:
        super().__init__(layer, relu=relu)
        self.batch_size = batch_size

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        layer = self._layer(model, target)
        A, scores = _activations(model, feeds, layer, target)
        size = image_size(model, feeds, input_name)
        axis = channel_axis(model, input_name)
        n, c = A.shape[:2]
        pair_sample, pair_channel = np.divmod(np.arange(n * c), c)
        masked_scores = np.empty(n * c)
        for s in chunks(n * c, self.batch_size):
            rows, chans = pair_sample[s], pair_channel[s]
            masks = _channel_masks(A[rows, chans], size)
            batch = take_rows(feeds, rows)
            batch[input_name] = _apply_masks(batch[input_name], masks, axis)
            masked_scores[s] = target.score(run_output(model, batch, target.output), rows)
        logits = masked_scores.reshape(n, c)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        cam = (w[:, :, None, None] * A).sum(axis=1)
        return self._result(model, feeds, input_name, target, layer, cam, scores, {"channel_weights": w})


def ablation_model(model: Model, layer: str, channels: int, dtype: np.dtype) -> tuple[Model, str]:
    """A copy of ``model`` whose ``layer`` is multiplied by a new input ``(N, C, 1, 1)`` before
    any consumer sees it, so channels can be ablated in onnxruntime, many samples per run.
    Returns the model and the name of the mask input."""
    proto = onnx.ModelProto()
    proto.CopyFrom((model.batch_free or model).proto)
    g = proto.graph
    mask, masked = f"{layer}__onnxviz_channel_mask", f"{layer}__onnxviz_ablated"
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == layer:
                node.input[i] = masked
    position = 0
    for k, node in enumerate(g.node):
        if layer in node.output:
            position = k + 1
            break
    g.node.insert(position, helper.make_node("Mul", [layer, mask], [masked], name=f"{layer}__onnxviz_ablate"))
    batch = fixed_batch(model) or "onnxviz_batch"
    g.input.append(
        helper.make_tensor_value_info(mask, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), [batch, channels, 1, 1])
    )
    return Model.from_proto(proto, check=False), mask


class AblationCAM(_CAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020, eq. 3): ``w_c = (S - S_c) / S``, where ``S_c``
    is the target score with channel ``c`` of the layer set to zero; ``cam = ReLU(sum_c w_c A_c)``.

    pytorch-grad-cam computes the same weights; it zeroes the channel when the layer's minimum is
    0 (after a ReLU, the usual case) and uses a very negative value otherwise, where this class
    always zeroes, as the paper does. The ablation runs in onnxruntime on a copy of the model that
    multiplies the layer by an extra per-sample channel-mask input, ``batch_size`` ablations per
    run.
    """

    name = "ablationcam"
    needs_gradients = False
    variant_text = "Ablation-CAM: w_c = (S - S with channel c zeroed) / S (paper; pytorch-grad-cam when the layer's min is 0)"

    def __init__(self, layer: str | None = None, *, relu: bool = True, batch_size: int = 32) -> None:
        super().__init__(layer, relu=relu)
        self.batch_size = batch_size

    def _explain(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        input_name: str,
        target: TargetSpec,
        rng: np.random.Generator,
    ) -> Explanation:
        layer = self._layer(model, target)
        A, scores = _activations(model, feeds, layer, target)
        n, c = A.shape[:2]
        ablated, mask_name = ablation_model(model, layer, c, A.dtype)
        pair_sample, pair_channel = np.divmod(np.arange(n * c), c)
        ablated_scores = np.empty(n * c)
        for s in chunks(n * c, self.batch_size):
            rows, chans = pair_sample[s], pair_channel[s]
            batch = take_rows(feeds, rows)
            mask = np.ones((len(rows), c, 1, 1), dtype=A.dtype)
            mask[np.arange(len(rows)), chans] = 0
            batch[mask_name] = mask
            ablated_scores[s] = target.score(run_output(ablated, batch, target.output), rows)
        s_abl = ablated_scores.reshape(n, c)
        denom = scores.astype(np.float64)[:, None]
        if np.any(denom == 0):
            warnings.warn(
                "Ablation-CAM: a target score is exactly 0; its weights are left unnormalised (S - S_c)",
                stacklevel=2,
            )
            denom = np.where(denom == 0, 1.0, denom)
        w = (scores[:, None] - s_abl) / denom
        cam = (w[:, :, None, None] * A).sum(axis=1)
        return self._result(model, feeds, input_name, target, layer, cam, scores, {"channel_weights": w})
