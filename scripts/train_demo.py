"""Train, export and verify the bundled demo CNN (``onnxviz/data/demo``).

The demo model must be a *real* trained network, small enough to ship (< 2 MB), quick to
regenerate on a laptop CPU, and reproducible bit for bit. Nothing is downloaded: the data set
is drawn on the fly from a seeded ``numpy.random.Generator``.

Data: 64x64 RGB images of eight classes that need different features -- three stripe
orientations and a checkerboard (oriented frequency detectors), and four outline or filled
shapes (disc, ring, square outline, triangle: curvature, corners, edge pairs). Foreground and
background colours are random and independent of the class, so the network has to learn
shape and orientation, not colour; position, size, rotation, a background gradient and pixel
noise vary too. Every image is quantised to uint8 before training, so the sample PNGs are
exactly what the network saw.

Model: conv(7x7, stride 2) -> BN -> ReLU -> max-pool -> conv(3x3) -> BN -> ReLU -> max-pool ->
conv(3x3) -> ReLU -> global average pool -> linear. Inputs use the "imagenet" preset
(x / 255, then (x - mean) / std). The ONNX graph outputs pre-softmax logits; the exporter folds
each BatchNorm into the preceding Conv in eval mode.

Usage::

    python scripts/train_demo.py --out onnxviz/data/demo [--epochs N] [--seed S]
        [--filter-grid /tmp/filters.png]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

IMAGE_SIZE = 64
CLASSES = (
    "stripes_horizontal",
    "stripes_vertical",
    "stripes_diagonal",
    "checkerboard",
    "disc",
    "ring",
    "square_outline",
    "triangle",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPSET = 17
N_TRAIN = 16_000
N_HELDOUT = 2_000
# The held-out set is drawn from a different seed than the training set, so no image is shared.
HELDOUT_SEED_OFFSET = 1_000_003
FIRST_LAYER_INIT_SCALE = 0.02
LABEL_SMOOTHING = 0.1

# Pixel-centre coordinates, shared by every renderer.
_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5

# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------
# Each renderer returns a signed distance in pixels (positive inside the foreground). Turning
# it into coverage with a one-pixel ramp anti-aliases every edge, so the network sees no
# staircase artefacts and its first-layer filters have no reason to become jagged.

Renderer = Callable[[np.random.Generator], np.ndarray]


def _rotated(cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates in a frame centred at (cx, cy) and rotated by *angle* radians."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = _XX - cx, _YY - cy
    return c * dx + s * dy, -s * dx + c * dy


def _stripes(rng: np.random.Generator, angle: float) -> np.ndarray:
    # *angle* is the direction in which intensity varies: 0 gives vertical stripes.
    angle += math.radians(rng.uniform(-10.0, 10.0))
    period = rng.uniform(6.0, 16.0)
    u, _ = _rotated(0.0, 0.0, angle)
    phase = 2.0 * math.pi * u / period + rng.uniform(0.0, 2.0 * math.pi)
    # sin(phase) * period / 2pi approximates the distance to the nearest zero crossing.
    return np.sin(phase) * period / (2.0 * math.pi)


def render_stripes_horizontal(rng: np.random.Generator) -> np.ndarray:
    return _stripes(rng, math.pi / 2.0)


def render_stripes_vertical(rng: np.random.Generator) -> np.ndarray:
    return _stripes(rng, 0.0)


def render_stripes_diagonal(rng: np.random.Generator) -> np.ndarray:
    return _stripes(rng, math.pi / 4.0 if rng.random() < 0.5 else -math.pi / 4.0)


def render_checkerboard(rng: np.random.Generator) -> np.ndarray:
    cell = rng.uniform(5.0, 12.0)
    u, v = _rotated(
        rng.uniform(0.0, IMAGE_SIZE), rng.uniform(0.0, IMAGE_SIZE), math.radians(rng.uniform(-10.0, 10.0))
    )
    fu, fv = u / cell, v / cell
    du = cell * np.abs(fu - np.round(fu))
    dv = cell * np.abs(fv - np.round(fv))
    parity = (np.floor(fu) + np.floor(fv)) % 2.0
    return np.minimum(du, dv) * np.where(parity == 0.0, 1.0, -1.0)


def _centre(rng: np.random.Generator, extent: float) -> tuple[float, float]:
    """A random centre that keeps a shape of half-extent *extent* inside the image."""
    lo, hi = extent + 2.0, IMAGE_SIZE - extent - 2.0
    return rng.uniform(lo, hi), rng.uniform(lo, hi)


def render_disc(rng: np.random.Generator) -> np.ndarray:
    r = rng.uniform(7.0, 20.0)
    cx, cy = _centre(rng, r)
    return r - np.hypot(_XX - cx, _YY - cy)


def render_ring(rng: np.random.Generator) -> np.ndarray:
    r = rng.uniform(10.0, 22.0)
    thickness = rng.uniform(2.5, 5.0)
    cx, cy = _centre(rng, r + thickness / 2.0)
    return thickness / 2.0 - np.abs(np.hypot(_XX - cx, _YY - cy) - r)


def render_square_outline(rng: np.random.Generator) -> np.ndarray:
    half = rng.uniform(9.0, 20.0)
    thickness = rng.uniform(2.5, 5.0)
    cx, cy = _centre(rng, half * math.sqrt(2.0))
    u, v = _rotated(cx, cy, rng.uniform(0.0, math.pi / 2.0))
    cheb = np.maximum(np.abs(u), np.abs(v))
    return np.minimum(half - cheb, cheb - (half - thickness))


def render_triangle(rng: np.random.Generator) -> np.ndarray:
    radius = rng.uniform(11.0, 24.0)  # circumradius; the inradius is radius / 2
    cx, cy = _centre(rng, radius)
    u, v = _rotated(cx, cy, rng.uniform(0.0, 2.0 * math.pi))
    # Equilateral triangle: inside all three half-planes whose normals are 120 degrees apart.
    dists = [radius / 2.0 - (u * math.cos(a) + v * math.sin(a)) for a in (0.0, 2.0 * math.pi / 3.0, 4.0 * math.pi / 3.0)]
    return np.minimum(np.minimum(dists[0], dists[1]), dists[2])


RENDERERS: dict[str, Renderer] = {
    "stripes_horizontal": render_stripes_horizontal,
    "stripes_vertical": render_stripes_vertical,
    "stripes_diagonal": render_stripes_diagonal,
    "checkerboard": render_checkerboard,
    "disc": render_disc,
    "ring": render_ring,
    "square_outline": render_square_outline,
    "triangle": render_triangle,
}
assert tuple(RENDERERS) == CLASSES  # a developer invariant of this script, not user input


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background colours, far enough apart in RGB for the shape to be visible."""
    while True:
        fg, bg = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(fg - bg) >= 0.4:
            return fg, bg


def render_image(rng: np.random.Generator, label: int) -> np.ndarray:
    """One HxWx3 uint8 image of class *label*."""
    coverage = np.clip(RENDERERS[CLASSES[label]](rng) + 0.5, 0.0, 1.0)[..., None]
    fg, bg = _colour_pair(rng)
    # A gentle linear illumination gradient on the background, so "flat" is not a cue.
    gx, gy = rng.uniform(-0.15, 0.15, 2)
    ramp = (gx * (_XX - IMAGE_SIZE / 2) + gy * (_YY - IMAGE_SIZE / 2)) / IMAGE_SIZE
    image = bg + ramp[..., None] + coverage * (fg - bg)
    # Pixel noise is white, so responding to it costs a filter in proportion to its
    # high-frequency energy: noisy inputs push the first layer towards smooth kernels.
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.10), image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """*n* images (N, H, W, 3) uint8 with balanced labels (N,) int64, fully determined by *seed*."""
    rng = np.random.Generator(np.random.PCG64(seed))
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = np.stack([render_image(rng, int(label)) for label in labels])
    return images, labels


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class DemoNet(nn.Module):
    """A three-conv CNN with a 7x7 first layer, large enough to show recognisable filters."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(64, n_classes)
        # BatchNorm makes the first conv scale-invariant, so a small start costs nothing in the
        # forward pass; it lets the learned structure dominate instead of the random init's
        # pixel noise, which weight decay alone would take far longer to remove.
        with torch.no_grad():
            self.features[0].weight.mul_(FIRST_LAYER_INIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW with the "imagenet" preset: x / 255, then (x - mean) / std."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def predict(model: nn.Module, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Logits (N, n_classes) in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(model(torch.from_numpy(normalise(images[i : i + batch]))).numpy())
    return np.concatenate(out)


def train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    seed: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    log: Callable[[str], None],
) -> None:
    """SGD with Nesterov momentum and a one-cycle schedule; the batch order comes from *seed*."""
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps_per_epoch = len(images) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    order_rng = np.random.Generator(np.random.PCG64(seed + 1))
    # Label smoothing keeps the logits moderate (|z| < ~10), which makes softmax saliency and
    # attributions on the demo better behaved.
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    for epoch in range(epochs):
        model.train()
        order = order_rng.permutation(len(images))
        total, correct, loss_sum = 0, 0, 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x = torch.from_numpy(normalise(images[idx]))
            y = torch.from_numpy(labels[idx])
            logits = model(x)
            loss = loss_fn(logits, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            total += len(idx)
        log(f"epoch {epoch + 1:2d}/{epochs}  loss {loss_sum / total:.4f}  train acc {correct / total:.4f}")


# ---------------------------------------------------------------------------------------------
# Export and verification
# ---------------------------------------------------------------------------------------------


def export_onnx(model: nn.Module, path: Path, doc_string: str) -> None:
    model.eval()
    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        # dynamo=False is deliberate: the TorchScript exporter folds BatchNorm into Conv and
        # yields the plain Conv/Relu/MaxPool graph the viewer is meant to show.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    proto.doc_string = doc_string
    proto.producer_name = "onnxviz scripts/train_demo.py"
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "classes", json.dumps(list(CLASSES))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": normalise(images)})[0]


def filter_grid(weights: np.ndarray, scale: int = 12, gap: int = 2) -> Image.Image:
    """First-layer kernels (C_out, 3, k, k) as an RGB grid; each kernel scaled so grey is zero."""
    n, _, k, _ = weights.shape
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    cell = k * scale
    grid = np.full((rows * (cell + gap) + gap, cols * (cell + gap) + gap, 3), 255, np.uint8)
    for i, w in enumerate(weights):
        w = w.transpose(1, 2, 0)
        w = 0.5 + 0.5 * w / max(float(np.abs(w).max()), 1e-12)
        tile = np.kron(np.round(w * 255.0).astype(np.uint8), np.ones((scale, scale, 1), np.uint8))
        r, c = divmod(i, cols)
        grid[gap + r * (cell + gap) : gap + r * (cell + gap) + cell, gap + c * (cell + gap) : gap + c * (cell + gap) + cell] = tile
    return Image.fromarray(grid)


def first_conv_weights(path: Path) -> np.ndarray:
    """The first Conv's kernel from the exported graph (BatchNorm already folded in)."""
    proto = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    return inits[conv.input[1]]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory, e.g. onnxviz/data/demo")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--filter-grid", type=Path, default=None, help="also save the first-layer filters as a PNG")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, flush=True)

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)

    start = time.perf_counter()
    train_seed, heldout_seed = args.seed, args.seed + HELDOUT_SEED_OFFSET
    x_train, y_train = make_dataset(N_TRAIN, train_seed)
    x_test, y_test = make_dataset(N_HELDOUT, heldout_seed)
    log(f"data: {N_TRAIN} train (seed {train_seed}), {N_HELDOUT} held-out (seed {heldout_seed}) "
        f"in {time.perf_counter() - start:.1f}s")

    model = DemoNet(len(CLASSES))
    t_train = time.perf_counter()
    train(model, x_train, y_train, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size,
          lr=args.lr, weight_decay=args.weight_decay, log=log)
    train_seconds = time.perf_counter() - t_train

    torch_logits = predict(model, x_test)
    pred = torch_logits.argmax(1)
    accuracy = float((pred == y_test).mean())
    per_class = {name: float((pred[y_test == k] == k).mean()) for k, name in enumerate(CLASSES)}
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    np.add.at(confusion, (y_test, pred), 1)

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    doc = (
        f"onnxviz demo CNN: classifies 64x64 RGB images of {len(CLASSES)} synthetic patterns "
        f"({', '.join(CLASSES)}). Input 'image' float32 NCHW RGB, x/255 then ImageNet mean/std; "
        f"output 'logits' pre-softmax. Held-out accuracy {accuracy:.4f}. Made by scripts/train_demo.py."
    )
    export_onnx(model, onnx_path, doc)

    # The exported graph must reproduce torch, logit for logit, and hence its accuracy.
    ort_logits = onnx_logits(onnx_path, x_test)
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    ort_accuracy = float((ort_logits.argmax(1) == y_test).mean())
    log(f"onnxruntime vs torch: max |logit diff| {max_diff:.2e}, accuracy {ort_accuracy:.4f}")
    if max_diff >= 1e-4 or ort_accuracy != accuracy:
        print(f"error: the exported model disagrees with torch (max diff {max_diff:.2e})", file=sys.stderr)
        return 1

    # One held-out sample per class: the first one the model gets right, in held-out order.
    samples = {}
    probs = np.exp(torch_logits - torch_logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for k, name in enumerate(CLASSES):
        i = int(np.flatnonzero((y_test == k) & (pred == k))[0])
        Image.fromarray(x_test[i], mode="RGB").save(args.out / f"{name}.png", optimize=True)
        samples[name] = {"file": f"{name}.png", "heldout_index": i, "probability": round(float(probs[i, k]), 4)}

    metadata = {
        "name": "onnxviz-demo",
        "description": doc,
        "classes": list(CLASSES),
        "input": {
            "name": "image",
            "layout": "NCHW",
            "channels": "RGB",
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
            "dtype": "float32",
            "value_range": [0, 255],
            "preset": "imagenet",
            "scale": 1.0 / 255.0,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "output": {"name": "logits", "kind": "logits", "softmax_applied": False},
        "training": {
            "script": "scripts/train_demo.py",
            "command": f"python scripts/train_demo.py --out {args.out.as_posix()} --epochs {args.epochs} --seed {args.seed}",
            "seed": args.seed,
            "train_samples": N_TRAIN,
            "train_data_seed": train_seed,
            "heldout_samples": N_HELDOUT,
            "heldout_data_seed": heldout_seed,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": "SGD(momentum=0.9, nesterov=True)",
            "lr_schedule": f"OneCycleLR(max_lr={args.lr}, pct_start=0.2)",
            "weight_decay": args.weight_decay,
            "loss": f"cross-entropy, label_smoothing={LABEL_SMOOTHING}",
            "first_layer_init_scale": FIRST_LAYER_INIT_SCALE,
            "torch_threads": 2,
            "deterministic_algorithms": True,
        },
        "heldout_accuracy": round(accuracy, 4),
        "per_class_accuracy": {k: round(v, 4) for k, v in per_class.items()},
        "confusion_matrix": {"rows": "true class", "cols": "predicted class", "counts": confusion.tolist()},
        "onnx_vs_torch_max_abs_logit_diff": float(f"{max_diff:.2e}"),
        "samples": samples,
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "opset": OPSET,
        "model_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
    }
    (args.out / "model.json").write_text(json.dumps(metadata, indent=2) + "\n")

    if args.filter_grid is not None:
        filter_grid(first_conv_weights(onnx_path)).save(args.filter_grid)
        log(f"first-layer filters: {args.filter_grid}")

    log("per-class held-out accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in per_class.items()))
    log(f"held-out accuracy {accuracy:.4f}; training {train_seconds:.0f}s, total {time.perf_counter() - start:.0f}s; "
        f"model.onnx {onnx_path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
