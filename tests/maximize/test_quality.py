"""Quality bar: optimised images beat the best of many random images, and are structured.

On :func:`tests.maximize.gabor_cnn` (oriented Gabor first layer, fixed random mixing above),
a gallery of 8 ``relu2`` channels is optimised in ONE batch with Lucid's defaults (FFT
parametrization, decorrelated colour, standard transforms, Adam 0.05) for 128 steps at 32x32.
Each channel's activation on the final image is compared with the best of 64 random images:
32 uniform-noise images and 32 ``1/f`` ("natural-like") noise images. Structure: the share of
spectral energy above half the Nyquist radius (|f| > 0.25 cycles/pixel), about 0.8 for white
noise, stays low in the results.
"""

from __future__ import annotations

import numpy as np

from onnxviz import Model
from onnxviz.inputs import Preprocess
from onnxviz.maximize import channel, visualize
from onnxviz.maximize.param import ModelInput
from tests.maximize import gabor_cnn

SIZE = 32
LAYER = "relu2"
CHANNELS = list(range(8))


def _radius(size: int) -> np.ndarray:
    f = np.fft.fftfreq(size)
    return np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def _random_images(rng: np.random.Generator, n: int = 64) -> np.ndarray:
    noise = rng.uniform(0, 1, (n // 2, SIZE, SIZE, 3))
    spec = np.fft.fft2(rng.standard_normal((n // 2, SIZE, SIZE, 3)), axes=(1, 2))
    pink = np.fft.ifft2(spec / np.maximum(_radius(SIZE), 1 / SIZE)[None, :, :, None], axes=(1, 2)).real
    lo = pink.min(axis=(1, 2, 3), keepdims=True)
    hi = pink.max(axis=(1, 2, 3), keepdims=True)
    return np.concatenate([noise, (pink - lo) / (hi - lo)]).astype(np.float32)


def high_frequency_share(image: np.ndarray) -> float:
    power = np.abs(np.fft.fft2(image - image.mean(axis=(0, 1)), axes=(0, 1))) ** 2
    return float(power[_radius(image.shape[0]) > 0.25].sum() / power.sum())


def test_gallery_beats_random_images_and_is_structured() -> None:
    model = Model.from_proto(gabor_cnn(SIZE))
    vis = visualize(model, channel(LAYER, CHANNELS), rng=0, steps=128)

    randoms = _random_images(np.random.default_rng(1))
    x = ModelInput(Preprocess.from_model(model.input())).forward(randoms)
    acts = model.run(x, taps=[LAYER])[LAYER].mean(axis=(2, 3))[:, CHANNELS]
    best = acts.max(axis=0)
    ratio = vis.final / np.maximum(best, 1e-6)
    assert np.count_nonzero(ratio > 2.0) >= 6, f"activation / best of 64 random: {ratio.round(2)}"
    assert ratio.min() > 1.5, f"activation / best of 64 random: {ratio.round(2)}"
    # the objective rose during the optimization (last steps vs first steps, per image)
    assert np.all(vis.history[-8:].mean(axis=0) > 4 * vis.history[:8].mean(axis=0))

    shares = [high_frequency_share(im) for im in vis.images]
    white = high_frequency_share(randoms[0])
    assert white > 0.7
    assert max(shares) < 0.35, f"high-frequency energy share: {np.round(shares, 3)} (white noise {white:.2f})"


def test_demo_model_gallery_beats_its_own_images() -> None:
    """On the bundled demo model (a trained CNN), 8 channels of the middle ReLU optimised for 128
    steps reach activations above the best of the demo images and 64 random images (measured at
    this commit: 2.52, 1.45, 2.09, 1.33, 2.05, 3.83, 2.54, 1.40, the transformed images fed
    natively; 2.3-3.45 when they were resized back to 64x64; 512 steps gave up to 4.9), with
    low high-frequency energy (0.04-0.13)."""
    from onnxviz import load
    from onnxviz.cli.demo import demo_dir
    from onnxviz.inputs import prepare_inputs

    folder = demo_dir()
    model = load(folder / "model.onnx")
    layer = [n.outputs[0] for n in model.graph.nodes if n.op_type == "Relu"][1]
    vis = visualize(model, channel(layer, CHANNELS), rng=0, steps=128)
    real = prepare_inputs(model.inputs, sorted(str(p) for p in folder.glob("*.png")))
    randoms = np.random.default_rng(1).uniform(0, 1, (64, 64, 64, 3)).astype(np.float32)
    x = ModelInput(Preprocess.from_model(model.input())).forward(randoms)
    acts = np.concatenate([model.run(real.feeds, [layer])[layer], model.run(x, [layer])[layer]])
    best = acts.mean(axis=(2, 3))[:, CHANNELS].max(axis=0)
    ratio = vis.final / np.maximum(best, 1e-6)
    assert ratio.min() > 1.2 and np.count_nonzero(ratio > 1.5) >= 4, ratio.round(2)
    assert max(high_frequency_share(im) for im in vis.images) < 0.3
