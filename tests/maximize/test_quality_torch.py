"""Quality bar on a CNN trained here with PyTorch (issue 5), exported as most ONNX files are.

The data: 32x32 RGB images of six classes (vertical, horizontal and both diagonal sine
gratings, Gaussian blobs, checkerboards; random period, phase, position, colour, moderate
contrast, white noise), made with a seeded numpy generator, 400 per class for training and
64 per class held out. The network: three conv-BN-ReLU blocks (16, 32, 48 channels, 2x2 max
pooling between), global average pooling and a linear head, 19,350 parameters, trained on one
thread for 4 epochs (Adam, one-cycle learning rate) on the inputs onnxviz makes by default
(imagenet preset), then exported by ``tests.torch_models.export`` (TorchScript exporter,
opset 17, dynamic batch; BatchNorm folded into the convs, fixed 32x32 spatial dims).
Held-out accuracy 0.995.

Measured on the middle block's ReLU output (16 x 16 x 32) with Lucid's defaults (FFT
parametrization, decorrelated colour, standard transforms, Adam 0.05, 128 steps), at this
commit:

* channel gallery (channels 0-7): activation over the best of the held-out images and 64
  random images, 2.06-3.07 (median 2.72); high-frequency energy share 0.15-0.24, white
  noise 0.81;
* neuron (the centre unit of channels 0-3): 16-23% of the image's deviation from grey lies
  in the unit's 8x8 receptive field (6.25% of the image), 60-63% within 4 px of it;
* class models (Simonyan, as the report makes them) of 4 classes: logit over the best
  held-out image of the class, 2.10-3.83;
* ``onnxviz report`` on the export shows the tiles.

The module takes 12-14 s on one core of a quiet machine (the training fixture 5-8 s, each
optimization 1-3 s), up to 25 s on a busy shared 2-core one.

The export fixes its input at 32x32, but every objective here reads a part of the network that
runs at any size (convolutions, pooling, global pooling), so :func:`onnxviz.maximize.visualize`
feeds the transforms' enlarged images natively, as Lucid does. Before that (each step's image
resized back to 32x32) the gallery reached 1.40-2.48 (median 1.95), HF share 0.08-0.16.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from onnxviz import Model, imaging, load
from onnxviz.cli.main import main
from onnxviz.inputs import Preprocess
from onnxviz.maximize import (
    Visualization,
    channel,
    class_logit,
    l2,
    neuron,
    visualize,
)
from onnxviz.maximize.param import ModelInput
from onnxviz.receptive import field_box, receptive_fields
from tests import torch_models
from tests.maximize.test_quality import (
    CHANNELS,
    _random_images,
    high_frequency_share,
)

pytestmark = pytest.mark.torch

SIZE = 32
#: Stripes are named by their orientation in the image (rows go down).
CLASSES = (
    "vertical stripes",
    "stripes /",
    "horizontal stripes",
    "stripes \\",
    "blobs",
    "checkerboard",
)
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 64
EPOCHS = 4
BATCH = 64
#: Optimization steps of the channel gallery and the neuron and class models.
STEPS = 128
#: The classes whose Simonyan class models are optimized.
CLASS_MODELS = (0, 2, 4, 5)


# --------------------------------------------------------------------------------------------
# data, model, training


def pattern_images(
    rng: np.random.Generator, per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(images N x 32 x 32 x 3 in [0, 1], labels)``, ``per_class`` images of each class.

    Each image is a pattern ``t`` in [0, 1] (a sine grating within 8 degrees of its class's
    orientation, period 5-12 px, random phase; 1-3 Gaussian blobs, sigma 2.5-5 px, at random
    positions; a checkerboard with 4-8 px cells at a random offset) drawn along a random colour
    direction around a random mean colour (0.3-0.7 per channel) at a contrast of 0.15-0.4,
    plus white noise (std 0.01-0.04). Contrast stays moderate, as in photographs: no image is
    a saturated pattern.
    """
    labels = rng.permutation(np.repeat(np.arange(len(CLASSES)), per_class))
    n = len(labels)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    t = np.zeros((n, SIZE, SIZE))
    g = np.flatnonzero(labels < 4)
    theta = np.deg2rad(45.0 * labels[g] + rng.uniform(-8, 8, len(g)))[:, None, None]
    period = rng.uniform(5, 12, len(g))[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, len(g))[:, None, None]
    u = xx * np.cos(theta) + yy * np.sin(theta)
    t[g] = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)
    b = np.flatnonzero(labels == 4)
    for j in range(3):
        cy, cx = rng.uniform(4, SIZE - 4, (2, len(b), 1, 1))
        sigma = rng.uniform(2.5, 5, (len(b), 1, 1))
        on = (rng.uniform(size=(len(b), 1, 1)) < 0.6) | (j == 0)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        t[b] = np.maximum(t[b], blob * on)
    c = np.flatnonzero(labels == 5)
    cell = rng.integers(4, 9, (len(c), 1, 1))
    oy, ox = rng.integers(0, 8, (2, len(c), 1, 1))
    t[c] = ((yy + oy) // cell + (xx + ox) // cell) % 2
    mean = rng.uniform(0.3, 0.7, (n, 1, 1, 3))
    direction = rng.uniform(-1, 1, (n, 1, 1, 3))
    direction /= np.abs(direction).max(axis=3, keepdims=True)
    contrast = rng.uniform(0.15, 0.4, (n, 1, 1, 1))
    noise = rng.standard_normal((n, SIZE, SIZE, 3)) * rng.uniform(
        0.01, 0.04, (n, 1, 1, 1)
    )
    images = mean + (t[..., None] - 0.5) * contrast * direction + noise
    return np.clip(images, 0, 1).astype(np.float32), labels


class PatternCNN(torch.nn.Module):
    """Three 3x3 conv-BN-ReLU blocks (16, 32, 48 channels) with 2x2 max pooling between them,
    global average pooling and a linear head: 19,350 parameters."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        nn = torch.nn
        layers: list[Any] = []
        for cin, cout in ((3, 16), (16, 32), (32, 48)):
            if layers:
                layers.append(nn.MaxPool2d(2))
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(48, num_classes)

    def forward(self, x: Any) -> Any:
        return self.head(self.features(x).mean((2, 3)))


def train(x: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> Any:
    """``PatternCNN`` trained on model inputs ``x`` (Adam with a one-cycle learning rate
    peaking at 0.01, batches of 64), in eval mode.

    Seeded, on one thread (the caller's thread count and global RNG are restored).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = PatternCNN()
            opt = torch.optim.Adam(net.parameters())
            xs, ys = torch.from_numpy(x), torch.from_numpy(labels)
            steps = EPOCHS * -(-len(xs) // BATCH)
            schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 0.01, total_steps=steps)
            order = torch.Generator().manual_seed(seed + 1)
            net.train()
            for _ in range(EPOCHS):
                for idx in torch.randperm(len(xs), generator=order).split(BATCH):
                    loss = torch.nn.functional.cross_entropy(net(xs[idx]), ys[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    schedule.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@dataclass(frozen=True)
class Trained:
    path: Path
    model: Model
    #: held-out images (N x 32 x 32 x 3 in [0, 1]) and their labels
    images: np.ndarray
    labels: np.ndarray
    accuracy: float
    #: the middle conv block's ReLU output (16 x 16 x 32)
    layer: str
    logits: str

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """Images in [0, 1] as the model takes them (the report's default preprocessing)."""
        return ModelInput(Preprocess.from_model(self.model.input())).forward(images)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    rng = np.random.default_rng(0)
    train_images, train_labels = pattern_images(rng, TRAIN_PER_CLASS)
    test_images, test_labels = pattern_images(rng, TEST_PER_CLASS)
    # Trained on exactly what onnxviz feeds an NCHW float input by default: the imagenet
    # preset, (v/255 - mean) / std.
    pre = Preprocess(layout="NCHW", channels=3, size=(SIZE, SIZE))
    net = train(ModelInput(pre).forward(train_images), train_labels)
    path = torch_models.export(
        net, tmp_path_factory.mktemp("trained") / "patterns.onnx", opset=17
    )
    model = load(path)
    assert Preprocess.from_model(model.input()) == pre
    x = ModelInput(pre).forward(test_images)
    logits = model.run(x)["output"]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    relus = [n.outputs[0] for n in model.graph.nodes if n.op_type == "Relu"]
    assert len(relus) == 3
    accuracy = float(np.mean(logits.argmax(axis=1) == test_labels))
    return Trained(path, model, test_images, test_labels, accuracy, relus[1], "output")


@pytest.fixture(scope="module")
def gallery(trained: Trained) -> Visualization:
    """8 channels of the middle ReLU with Lucid's defaults, in one batch."""
    return visualize(
        trained.model, channel(trained.layer, CHANNELS), rng=0, steps=STEPS
    )


def energy_share(
    images: np.ndarray, box: tuple[int, int, int, int], grow: int = 0
) -> np.ndarray:
    """Per image, the share of ``sum (image - 0.5)^2`` (the deviation from the mid-grey the
    optimization starts from) inside ``image[y0:y1, x0:x1]`` grown by ``grow`` pixels."""
    y0, y1, x0, x1 = box
    energy = np.square(images - 0.5).sum(axis=3)
    rows = slice(max(y0 - grow, 0), y1 + grow)
    cols = slice(max(x0 - grow, 0), x1 + grow)
    return energy[:, rows, cols].sum(axis=(1, 2)) / energy.sum(axis=(1, 2))


def orientation_ratio(image: np.ndarray) -> float:
    """Spectral energy at ``|fx| > |fy|`` over that at ``|fy| > |fx|`` (mean removed): above 1
    for vertical stripes (which vary along x), below 1 for horizontal ones."""
    power = np.abs(np.fft.fft2(image - image.mean(axis=(0, 1)), axes=(0, 1))) ** 2
    f = np.abs(np.fft.fftfreq(image.shape[0]))
    fy, fx = f[:, None], f[None, :]
    power = power.sum(axis=2)
    return float(power[fx > fy].sum() / power[fy > fx].sum())


# --------------------------------------------------------------------------------------------
# tests


def test_the_network_learned_the_patterns(trained: Trained) -> None:
    """Held-out accuracy 0.995 (382 of 384) at this commit; the export matches torch."""
    assert trained.accuracy > 0.95, f"held-out accuracy {trained.accuracy:.3f}"


def test_gallery_beats_real_and_random_images(
    trained: Trained, gallery: Visualization
) -> None:
    """Each channel's activation (mean over space) on its optimized image over the best of
    the 384 held-out images and 64 random ones (32 uniform, 32 1/f noise): measured 2.76,
    2.69, 3.07, 2.06, 2.95, 3.06, 2.16, 2.15 (1.40-2.48 when each step's image was resized
    back to 32x32, see the module docstring). Training on two threads instead of one
    (another float32 summation order) moves them by up to 0.15; other training seeds give a
    unit or two whose optimum is a near-uniform colour, which the data already comes close
    to (ratios 0.6-0.95), hence counts rather than a minimum only."""
    layer, model = trained.layer, trained.model
    randoms = _random_images(np.random.default_rng(1))
    real = model.run(trained.inputs(trained.images), [layer])[layer]
    rand = model.run(trained.inputs(randoms), [layer])[layer]
    best_real = real.mean(axis=(2, 3))[:, CHANNELS].max(axis=0)
    best_rand = rand.mean(axis=(2, 3))[:, CHANNELS].max(axis=0)
    ratio = gallery.final / np.maximum(np.maximum(best_real, best_rand), 1e-6)
    msg = f"activation / best of held-out and random images: {ratio.round(2)}"
    assert ratio.min() > 1.1 and np.median(ratio) > 1.7, msg
    assert np.count_nonzero(ratio > 1.5) >= 6, msg
    # the optimization did the work: the objective rose from the first steps to the last
    assert np.all(
        gallery.history[-8:].mean(axis=0) > 2 * gallery.history[:8].mean(axis=0)
    )


def test_gallery_is_structured(gallery: Visualization) -> None:
    """Share of spectral energy above half the Nyquist radius: measured 0.15-0.24 (mean
    0.19) on the 8 images, 0.81 for white noise (0.08-0.16 when each step's image was
    resized back to 32x32, which low-passes it)."""
    shares = np.array([high_frequency_share(im) for im in gallery.images])
    white = high_frequency_share(
        np.random.default_rng(2).uniform(0, 1, (SIZE, SIZE, 3))
    )
    assert white > 0.7
    assert shares.max() < 0.35 and shares.mean() < 0.27, shares.round(3)


def test_neuron_pattern_lives_in_its_receptive_field(
    trained: Trained, gallery: Visualization
) -> None:
    """The centre unit (8, 8) of channels 0-3 of the middle ReLU, Lucid's defaults.

    Its receptive field (onnxviz.receptive) is the 8x8 box rows/cols 13-20, 6.25% of the
    image, and the gradient of the unit w.r.t. the image spans exactly that box. The
    optimized images put 16-23% of their deviation from grey inside the box (2.5-3.6 times
    its area) and 60-63% inside the box grown by 4 px (25% of the image): the pattern is a
    blob at the field's scale, spread by the transforms' jitter. The channel gallery, whose
    objective averages over space, puts 5.6% in the box, as a uniform spread would.
    """
    model, layer = trained.model, trained.layer
    rf = receptive_fields(model)[layer]
    assert rf.exact and rf.size == (8, 8) and rf.stride == (2, 2)
    box = field_box(rf, 8, 8, (SIZE, SIZE))
    assert box == (13, 21, 13, 21)
    chans = [0, 1, 2, 3]
    vis = visualize(model, neuron(layer, chans), rng=0, steps=STEPS)

    seed = np.zeros((len(chans), 32, 16, 16), dtype=np.float32)
    seed[np.arange(len(chans)), chans, 8, 8] = 1.0
    grad = model.value_and_grad(vis.inputs, {layer: seed}).grads[model.inputs[0].name]
    support = np.abs(grad).sum(axis=(0, 1)) > 0
    rows, cols = (
        np.flatnonzero(support.any(axis=1)),
        np.flatnonzero(support.any(axis=0)),
    )
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == box

    area = 64 / SIZE**2
    inside = energy_share(vis.images, box)
    near = energy_share(vis.images, box, grow=4)
    assert np.all(inside > 2 * area), inside.round(3)
    assert np.all(near > 0.45), near.round(3)
    assert energy_share(gallery.images, box).mean() < 1.5 * area


def test_class_models_beat_the_best_real_image(trained: Trained) -> None:
    """Simonyan et al.'s class model as the report makes it (logit minus 1.0 x mean
    (x - 0.5)^2, pixel parametrization, no transforms, 128 steps) for vertical stripes,
    horizontal stripes, blobs and checkerboard: the logit reached over the best held-out
    image of that class, measured 3.83, 3.50, 2.10, 3.39; each image is classified as its
    class. The stripe classes show their orientation: spectral energy along x over along y
    2.92 for vertical stripes, 0.22 for horizontal ones."""
    classes = list(CLASS_MODELS)
    objective = class_logit(trained.logits, classes) - 1.0 * l2()
    vis = visualize(
        trained.model, objective, rng=0, param="pixel", transforms=None, steps=STEPS
    )
    logits = trained.model.run(vis.inputs)[trained.logits]
    real = trained.model.run(trained.inputs(trained.images))[trained.logits]
    best = np.array([real[trained.labels == k, k].max() for k in classes])
    ratio = logits[np.arange(len(classes)), classes] / best
    assert np.all(ratio > 1.5), ratio.round(2)
    assert logits.argmax(axis=1).tolist() == classes
    vertical, horizontal = (classes.index(k) for k in (0, 2))
    assert orientation_ratio(vis.images[vertical]) > 1.8
    assert orientation_ratio(vis.images[horizontal]) < 0.5


def test_report_shows_the_trained_models_visualizations(
    trained: Trained, tmp_path: Path
) -> None:
    """``onnxviz report`` on the export with two held-out PNGs (vertical stripes, blobs):
    the feature-visualization section has the middle ReLU's 2 channel tiles and 3 class-model
    tiles (the inputs' top classes first), each an inline PNG of at least 96 px."""
    inputs = []
    for k in (0, 4):
        path = tmp_path / f"class{k}.png"
        imaging.save_png(trained.images[trained.labels == k][0], path)
        inputs += ["--input", str(path)]
    out = tmp_path / "report.html"
    argv = [
        "report", str(trained.path), *inputs, "--methods", "none", "-o", str(out), "-q",
        "--featurevis-layers", trained.layer, "--featurevis-channels", "2",
        "--featurevis-steps", "8",
    ]  # fmt: skip
    assert main(argv) == 0
    html = out.read_text()
    section = html[html.index('id="featurevis"') :]
    assert "Class models" in section and f"of {trained.layer}" in section
    tiles = re.findall(
        r'<figure class="thumb fv-tile">(.*?)</figure>', section, re.DOTALL
    )
    assert len(tiles) == 2 + 3
    labels = [re.findall(r"<strong>(.*?)</strong>", t) for t in tiles]
    assert labels[2:4] == [["class 0"], ["class 4"]], labels
    for tile in tiles:
        m = re.search(r'src="data:image/png;base64,([^"]+)"', tile)
        assert m is not None
        png = base64.b64decode(m.group(1))
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and min(width, height) >= 96
        assert "activation" in tile and "best input" in tile
