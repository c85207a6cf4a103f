"""Feature visualization by optimization (Lucid's ``render_vis``) and DeepDream, in numpy.

One optimization step of :func:`visualize`::

    params --param--> image [0,1] --transforms--> (resize to the model size) --preprocess--> x
    x --engine (only the subgraph the objective reads)--> tensors --objective--> value, seeds

and the way back: the engine's gradient w.r.t. the model input, the preprocessing's VJP, the
transforms' adjoints, plus the seeds of image regularizers, the parametrization's VJP, then one
Adam *ascent* step. Randomness comes from one generator (or an int seed): two child seeds are
drawn from it, one for the initial parameters (image ``i`` takes the ``i``-th block of draws)
and one for the transform draws (one draw per step for the whole batch), so results are
reproducible from the seed and a gallery in one batch equals separate runs started from the
same parameters (see :func:`visualize`).

Redirected ReLU (Lucid's ``redirected_relu_grad``, in the sign convention of ascent): for the
first ``redirect_relu_steps`` steps every Relu's VJP is replaced, for that call only, by

* ``g_X = g_Y * (Y > 0)`` (the ordinary rule) for a batch element where that is not all zero;
* otherwise ``g_X = g_Y * ((Y > 0) | (g_Y > 0))``: at a dead unit the gradient passes when
  following it would *raise* the unit's input (towards activity), and is blocked when it
  would push it further down.

DeepDream (:func:`dream`) follows the Caffe notebook: octaves, jitter by rolling, steps of
``step_size / mean|g|`` in 8-bit pixel units, detail carried from octave to octave.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, TargetError
from ..inputs import Preprocess
from .objectives import IMAGE, Objective, as_objective, layer_l2
from .param import ModelInput, Parametrization, make_param
from .transforms import Resize, Transform, compose, resize_bilinear, standard_transforms

if TYPE_CHECKING:
    from ..backends.numpy.registry import Call
    from ..model import Model

__all__ = [
    "Adam",
    "AdamState",
    "Visualization",
    "VisualizationSettings",
    "dream",
    "evaluate",
    "model_at_size",
    "redirected_relu_vjp",
    "visualize",
]

Progress = Callable[[int, np.ndarray], None]
RngLike = np.random.Generator | int


# --------------------------------------------------------------------------------------------
# Adam


@dataclass(frozen=True)
class AdamState:
    """First and second moment estimates and the step count."""

    m: np.ndarray
    v: np.ndarray
    t: int = 0


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015) with TensorFlow's defaults, as a gradient *ascent* step."""

    lr: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, params: np.ndarray) -> AdamState:
        return AdamState(np.zeros_like(params), np.zeros_like(params), 0)

    def step(self, params: np.ndarray, grad: np.ndarray, state: AdamState) -> tuple[np.ndarray, AdamState]:
        """``params + lr * m_hat / (sqrt(v_hat) + eps)`` and the new state (inputs untouched)."""
        params = np.array(params)
        new = self.update(params, grad, AdamState(np.array(state.m), np.array(state.v), state.t))
        return params, new

    def update(self, params: np.ndarray, grad: np.ndarray, state: AdamState) -> AdamState:
        """:meth:`step` in place: ``params``, ``state.m`` and ``state.v`` are overwritten (one
        scratch array, no temporaries); returns the state with the new step count."""
        t = state.t + 1
        m, v = state.m, state.v
        tmp = np.multiply(grad, 1.0 - self.beta1, dtype=m.dtype)
        m *= self.beta1
        m += tmp
        np.square(grad, out=tmp, dtype=m.dtype)
        tmp *= 1.0 - self.beta2
        v *= self.beta2
        v += tmp
        # lr * (m / c1) / (sqrt(v / c2) + eps) = lr * sqrt(c2) / c1 * m / (sqrt(v) + eps * sqrt(c2))
        c1, c2 = 1.0 - self.beta1**t, math.sqrt(1.0 - self.beta2**t)
        np.sqrt(v, out=tmp)
        tmp += self.eps * c2
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr * c2 / c1
        params += tmp.astype(params.dtype, copy=False)
        return AdamState(m, v, t)


# --------------------------------------------------------------------------------------------
# Redirected ReLU


def redirected_relu_vjp(call: Call, gY: np.ndarray) -> tuple[np.ndarray]:
    """Lucid's redirected ReLU gradient (see the module docstring for the exact rule)."""
    y = call.outputs[0]
    live = y > 0
    normal = gY * live
    if y.ndim == 0:
        return (normal,)
    redirected = gY * (live | (gY > 0))
    n = y.shape[0]
    has = np.any(normal.reshape(n, -1) != 0, axis=1).reshape((n,) + (1,) * (y.ndim - 1))
    return (np.where(has, normal, redirected).astype(gY.dtype, copy=False),)


# --------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class VisualizationSettings:
    """Everything needed to reproduce a run (with the same model and objective)."""

    objective: str
    param: str
    size: tuple[int, int]
    steps: int
    lr: float
    transforms: tuple[str, ...]
    batch: int
    seed: int | None
    init_seed: int
    transform_seed: int
    redirect_relu_steps: int
    dtype: str
    input_name: str
    preprocess: Mapping[str, object]
    seconds: float


@dataclass(frozen=True)
class Visualization:
    """Result of :func:`visualize`.

    ``images``: ``N x H x W x C`` in [0, 1] (C = the model's channels); ``inputs``: the same
    images as the model takes them (layout, size, normalisation, dtype), i.e. exactly what
    ``final`` was measured on; ``history``: ``(steps, N)`` objective per image at each step (on
    that step's transformed image); ``final``: objective per image on ``inputs`` (no transforms);
    ``params``: the final parameters.
    """

    images: np.ndarray
    inputs: np.ndarray
    history: np.ndarray
    final: np.ndarray
    params: np.ndarray
    settings: VisualizationSettings = field(repr=False)


# --------------------------------------------------------------------------------------------
# Helpers


def split_rng(rng: RngLike) -> tuple[int | None, int, int]:
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        seed: int | None = int(rng)
        gen = np.random.default_rng(seed)
    elif isinstance(rng, np.random.Generator):
        seed, gen = None, rng
    else:
        raise InputError(
            f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}",
            hint="e.g. rng=np.random.default_rng(0)",
        )
    init_seed, transform_seed = (int(v) for v in gen.integers(0, 2**63 - 1, size=2))
    return seed, init_seed, transform_seed


def image_input(
    model: Model, input_name: str | None, preprocess: Preprocess | None, size: tuple[int, int] | None
) -> tuple[Any, Preprocess, tuple[int, int], bool]:
    """``(input info, preprocess, image size, whether the model fixes the size)``."""
    if len(model.inputs) != 1:
        raise InputError(
            f"the model has {len(model.inputs)} inputs; feature visualization needs a single image input",
            hint="export the image branch as its own model",
        )
    info = model.input(input_name)
    if preprocess is None:
        preprocess = Preprocess.from_model(info)
    fixed = _static_size(preprocess, info)
    if fixed is not None:
        if size is not None and tuple(size) != fixed:
            raise InputError(
                f"size {size[0]}x{size[1]} does not match model input {info.name!r}, fixed at {fixed[0]}x{fixed[1]}, "
                "and the objective's tensors are not computed by a fully convolutional part of the model",
                hint="omit the size: the model fixes it (or choose a layer before the first Flatten/Reshape/Gemm)",
            )
        return info, preprocess, fixed, True
    hw = size if size is not None else (preprocess.size or (128, 128))
    return info, preprocess, (int(hw[0]), int(hw[1])), False


#: How much Lucid's standard transforms enlarge an image (pad 12 a side, jitter 8 and 4): the
#: size a fixed-size model's convolutional part is checked to run at before it renders natively.
TRANSFORM_MARGIN = 12


def model_at_size(
    model: Model,
    obj: Objective,
    input_name: str | None,
    preprocess: Preprocess | None,
    size: tuple[int, int] | None,
    *,
    margin: int = 0,
) -> tuple[Model, Preprocess | None]:
    """For a model exported at a fixed size: the fully convolutional part the objective reads,
    with free spatial dims, and the original model's preprocessing, when it is asked to render
    at another ``size`` or to take images that transforms enlarge (``margin`` > 0: Lucid's
    transforms pad 12 pixels a side, jitter 8 and 4), so that the transformed images reach the
    layer as they are instead of being resized back to the model's size (Lucid renders at its
    parametrization's size whatever the training size). The part is checked to reproduce the
    model at its own size and to run at ``size + margin``. Unchanged when the model's size is
    free, when nothing changes the size, or when the part does not run at other sizes (then
    :func:`image_input` explains a size that differs, and transforms end with a resize)."""
    if len(model.inputs) != 1 or not obj.tensors:
        return model, preprocess
    info = model.input(input_name)
    pre = preprocess if preprocess is not None else Preprocess.from_model(info)
    fixed = _static_size(pre, info)
    if fixed is None:
        return model, preprocess
    target = fixed if size is None else (int(size[0]), int(size[1]))
    if target == fixed and margin <= 0:
        return model, preprocess
    axes = (2, 3) if pre.layout == "NCHW" else (1, 2)
    free = model.size_free(obj.tensors, axes, (target[0] + margin, target[1] + margin))
    if free is None:
        return model, preprocess
    return free, (pre if size is not None else dataclasses.replace(pre, size=fixed))


def _static_size(preprocess: Preprocess, info: Any) -> tuple[int, int] | None:
    shape = info.shape or ()
    dims = shape[2:4] if preprocess.layout == "NCHW" else shape[1:3]
    if len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims):
        return (int(dims[0]), int(dims[1]))
    return None


class Evaluator:
    """One engine call per evaluation: all objective terms, seeds, and the input gradient."""

    def __init__(self, model: Model, objective: Objective, input_name: str, dtype: Any, forward: str) -> None:
        self.model = model
        self.objective = objective
        self.input_name = input_name
        self.dtype = dtype
        self.forward = forward
        #: tensor shapes seen per model-input shape: linear terms' seeds are then built before
        #: the forward pass, which spares the engine a forward to evaluate a seed function
        self._shapes: dict[tuple[int, ...], dict[str, tuple[int, ...]]] = {}

    def __call__(
        self, x: np.ndarray, image: np.ndarray | None, rules: Mapping[str, Any] | None, grad: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(values per image, d/dx, d/dimage)`` for model input ``x`` (and image regularizers)."""
        obj = self.objective
        n = x.shape[0]
        total = np.zeros(n)
        gx = None
        names = obj.tensors
        if names:
            collected: dict[str, np.ndarray] = {}

            def seed_for(name: str) -> Callable[[np.ndarray], np.ndarray]:
                def seed(value: np.ndarray) -> np.ndarray:
                    vals, s = obj.evaluate_tensor(name, value)
                    collected[name] = vals
                    return s

                return seed

            if grad:
                known = self._shapes.get(x.shape, {})
                seeds: dict[str, Any] = {}
                for name in names:
                    array = obj.seed_array(name, known[name], self.dtype) if name in known else None
                    seeds[name] = array if array is not None else seed_for(name)
                res = self.model.value_and_grad(
                    {self.input_name: x}, seeds, (self.input_name,), dtype=self.dtype, rules=rules,
                    forward=self.forward, independent_rows=True,
                )
                gx = res.grads[self.input_name]
                for name in names:
                    if name not in collected:
                        collected[name] = obj.evaluate_tensor(name, res.values[name])[0]
                self._shapes[x.shape] = {name: tuple(res.values[name].shape) for name in names}
            else:
                vals = self.model.evaluate({self.input_name: x}, names, dtype=self.dtype)
                for name in names:
                    seed_for(name)(vals[name])
            for name in names:
                total += collected[name]
        gimg = None
        if obj.uses_image and image is not None:
            vals, gimg = obj.evaluate_tensor(IMAGE, image)
            total += vals
        return total, gx, gimg


def evaluate(
    model: Model,
    objective: Objective,
    inputs: np.ndarray,
    *,
    images: np.ndarray | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Objective value per image for model inputs ``inputs`` (image regularizers read ``images``)."""
    obj = as_objective(objective)
    name = model.inputs[0].name
    vals, _, _ = Evaluator(model, obj, name, dtype, "numpy")(inputs, images, None, grad=False)
    return vals


# --------------------------------------------------------------------------------------------
# visualize


def visualize(
    model: Model,
    objective: Objective,
    *,
    rng: RngLike,
    param: str | Parametrization = "fft",
    size: tuple[int, int] | None = None,
    steps: int = 512,
    lr: float = 0.05,
    transforms: str | Sequence[Transform] | None = "standard",
    redirect_relu_steps: int = 16,
    batch: int | None = None,
    progress: Progress | None = None,
    dtype: Any = np.float32,
    preprocess: Preprocess | None = None,
    input_name: str | None = None,
    init: np.ndarray | None = None,
    forward: str = "numpy",
) -> Visualization:
    """Maximize ``objective`` over images (Lucid ``render_vis`` defaults).

    ``param``: ``"fft"`` (Fourier, decorrelated colour, sigmoid), ``"pixel"``, or a
    :class:`~onnxviz.maximize.param.Parametrization`. ``size``: the image size (default: the model's
    static input size, else 128x128). ``transforms``: ``"standard"`` (Lucid's list),
    ``None``/``()`` for none, or a sequence of transforms; the transformed (enlarged) images
    reach the model at their own size, as in Lucid. On a model exported at a fixed size that
    holds when the objective's tensors come from a part of the model that runs at any size
    (convolutions, pooling, global pooling; :func:`model_at_size`, checked to reproduce the
    model at its size), which also lets such a model render at another ``size``; otherwise a
    final bilinear :class:`~onnxviz.maximize.transforms.Resize` back to the model's size is
    appended. ``preprocess``: how [0, 1]
    images map to the model input; by default :meth:`Preprocess.from_model` (layout and channels
    from the input, ``imagenet`` value range and mean/std). ``batch``: number of images; by
    default the objective's (``channel(t, [c0..c7])`` gives 8) or 1. ``init``: starting
    parameters (e.g. one block of a batch's init, to rerun one image of a gallery alone).
    ``progress(step, values)`` is called after each step with the per-image objective.

    Reproducible from ``rng``: an int seed (recorded in the settings) or a Generator.
    """
    obj = as_objective(objective)
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    if transforms == "standard":
        tlist: tuple[Transform, ...] = standard_transforms()
    elif transforms is None:
        tlist = ()
    elif isinstance(transforms, str):
        raise InputError(f"unknown transforms {transforms!r}", hint="use 'standard', None or a list")
    else:
        tlist = tuple(transforms)
    model, preprocess = model_at_size(model, obj, input_name, preprocess, size, margin=TRANSFORM_MARGIN if tlist else 0)
    info, pre, hw, fixed = image_input(model, input_name, preprocess, size)
    n = batch if batch is not None else (obj.batch or 1)
    if obj.batch is not None and n != obj.batch:
        raise TargetError(
            f"the objective asks for a batch of {obj.batch} images, batch={n} was given",
            hint="omit batch, or give as many channels as images",
        )
    dtype = np.dtype(dtype)
    seed, init_seed, transform_seed = split_rng(rng)
    p: Parametrization = make_param(param, hw[0], hw[1], pre.channels) if isinstance(param, str) else param
    if (p.height, p.width, p.channels) != (hw[0], hw[1], pre.channels):
        raise InputError(
            f"the parametrization makes {p.height}x{p.width}x{p.channels} images, the model takes "
            f"{hw[0]}x{hw[1]}x{pre.channels}"
        )
    if fixed:
        tlist = tlist + (Resize(hw),)
    mi = ModelInput(pre)
    in_dtype = info.dtype if info.dtype.kind == "f" else np.dtype(np.float32)
    evaluator = Evaluator(model, obj, info.name, dtype, forward)

    if init is not None:
        params = np.array(init, dtype=dtype)
        if params.shape[0] != n:
            raise InputError(f"init has {params.shape[0]} images, the batch is {n}")
    else:
        params = p.init(n, np.random.default_rng(init_seed)).astype(dtype)
    t_rng = np.random.default_rng(transform_seed)
    adam = Adam(lr)
    state = adam.init(params)
    redirect = {"Relu": redirected_relu_vjp}
    history = np.zeros((steps, n))
    start = time.perf_counter()
    for step in range(steps):
        image, p_vjp = p.forward(params)
        timg, t_vjp = compose(tlist, image, t_rng)
        x = mi.forward(timg).astype(in_dtype, copy=False)
        rules = redirect if step < redirect_relu_steps else None
        vals, gx, gimg = evaluator(x, image, rules)
        g = t_vjp(mi.vjp(gx.astype(dtype, copy=False))) if gx is not None else np.zeros_like(image)
        if gimg is not None:
            g = g + gimg
        state = adam.update(params, p_vjp(g.astype(dtype, copy=False)), state)  # params in place
        history[step] = vals
        if progress is not None:
            progress(step, vals)
    images, _ = p.forward(params)
    images = np.ascontiguousarray(images, dtype=np.float32)
    inputs = mi.forward(images.astype(dtype)).astype(in_dtype)
    final, _, _ = evaluator(inputs, images.astype(dtype), None, grad=False)
    settings = VisualizationSettings(
        objective=obj.describe(),
        param=param if isinstance(param, str) else type(param).__name__,
        size=hw,
        steps=steps,
        lr=lr,
        transforms=tuple(repr(t) for t in tlist),
        batch=n,
        seed=seed,
        init_seed=init_seed,
        transform_seed=transform_seed,
        redirect_relu_steps=redirect_relu_steps,
        dtype=dtype.name,
        input_name=info.name,
        preprocess=pre.describe(),
        seconds=time.perf_counter() - start,
    )
    return Visualization(images, inputs, history, final, params, settings)


# --------------------------------------------------------------------------------------------
# DeepDream


def _zoom(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out, _ = resize_bilinear(img[None], size)
    return out[0]


def dream(
    model: Model,
    image: np.ndarray,
    *,
    rng: RngLike,
    layers: str | Sequence[str] | None = None,
    objective: Objective | None = None,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps_per_octave: int = 10,
    step_size: float = 1.5,
    jitter: int = 32,
    preprocess: Preprocess | None = None,
    input_name: str | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """DeepDream as the Caffe notebook: returns the dreamed ``H x W x C`` image in [0, 1].

    ``image``: ``H x W x C`` in [0, 1] with the model's channel count. The objective is
    ``objective`` or the sum of :func:`layer_l2` over ``layers`` (Caffe's ``objective_L2``; the
    scale does not matter, the step is normalised). Octave ``k`` works at ``1/octave_scale**k``
    of the image size (bilinear zoom); each step rolls the image by a random offset in
    ``-jitter..jitter``, takes ``step_size / mean|g| * g`` with ``step_size`` in 8-bit pixel
    units (Caffe's data is 0..255), rolls back and clips to [0, 1]. The detail (image minus the
    octave's base) is carried up to the next octave. Models with a fixed input size see each
    octave's image resized to that size (and the gradient through the adjoint of that resize).
    """
    if objective is None:
        if layers is None:
            raise TargetError("dream needs layers or an objective", hint="e.g. layers='relu3'")
        names = [layers] if isinstance(layers, str) else list(layers)
        objective = sum((layer_l2(name) for name in names), Objective())
    obj = as_objective(objective)
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    info, pre, model_hw, fixed = image_input(model, input_name, preprocess, None)
    if img.shape[2] != pre.channels:
        raise InputError(f"the image has {img.shape[2]} channels, the model takes {pre.channels}")
    _, _, roll_seed = split_rng(rng)
    r = np.random.default_rng(roll_seed)
    mi = ModelInput(pre)
    in_dtype = info.dtype if info.dtype.kind == "f" else np.dtype(np.float32)
    evaluator = Evaluator(model, obj, info.name, dtype, "numpy")

    bases = [img]
    for _ in range(octaves - 1):
        h, w = bases[-1].shape[:2]
        bases.append(_zoom(bases[-1], (max(1, round(h / octave_scale)), max(1, round(w / octave_scale)))))
    detail = np.zeros_like(bases[-1])
    src = bases[-1]
    for k, base in enumerate(bases[::-1]):
        h, w = base.shape[:2]
        if k > 0:
            detail = _zoom(detail, (h, w))
        src = base + detail
        for _ in range(steps_per_octave):
            oy, ox = (int(v) for v in r.integers(-jitter, jitter + 1, size=2))
            rolled = np.roll(np.roll(src, ox, axis=1), oy, axis=0)
            if fixed and (h, w) != model_hw:
                fed, back = resize_bilinear(rolled[None], model_hw)
            else:
                fed, back = rolled[None], (lambda g: g)
            x = mi.forward(fed.astype(dtype)).astype(in_dtype)
            _, gx, gimg = evaluator(x, fed.astype(dtype), None)
            g = np.zeros_like(fed)
            if gx is not None:
                g = g + mi.vjp(gx.astype(np.float64))
            if gimg is not None:
                g = g + gimg
            g = back(g)[0]
            scale = float(np.abs(g).mean())
            if scale > 0:
                rolled = rolled + (step_size / 255.0) / scale * g
            src = np.roll(np.roll(rolled, -ox, axis=1), -oy, axis=0)
            src = np.clip(src, 0.0, 1.0)
        detail = src - base
    return src.astype(np.float32)
