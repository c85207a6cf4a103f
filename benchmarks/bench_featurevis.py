"""Speed of feature visualization: one optimization step vs one onnxruntime forward.

For each model and layer: one step of :func:`onnxviz.maximize.visualize`'s loop for a batch of
16 channels (FFT parameters at 128x128 -> image -> Lucid's standard transforms -> model input ->
forward + backward to the input through the layer -> transform/param VJPs -> Adam), as a ratio
to ONE onnxruntime forward of the same batch and size through the same layer (the model
pruned to the nodes the layer depends on, batch made dynamic). Both the step and the
forward run on that truncated model, so only the subgraph up to the layer counts on each side.

Both models are truncated at the layer, which leaves a fully convolutional network, and run at
128x128 natively with free spatial dims: for MobileNet-V2 (benchmarks/zoo.py, random weights)
that is its export; the light ResNet-50 (onnx wheel) is exported at a fixed 224x224, and
``visualize(..., size=(128, 128))`` renders such a model the same way (``Model.size_free``).
``--fixed-size`` times the light ResNet-50 instead at its 224x224, the 128x128 image resized
(bilinear, a final ``Resize`` transform), which is what ``visualize`` does without a size.

Then the time of a 16-channel gallery of 512 steps (Lucid's default) on ResNet-50's middle
layers is extrapolated from the measured step (x 512), for the numpy forward and for the
``forward="onnxruntime"`` variant (onnxruntime forward with taps + numpy backward).

Steps are timed after ``--warmup`` steps (default 24), in the steady state a long run is in.
Under each row, the step's parts (median ms over the timed steps, clocked inside the same
steps): the parametrization's forward and VJP, the transforms' forward and VJP, the model-input
mapping both ways, Adam, their sum (the numpy side) and, in parentheses, the compiled
onnxruntime forward + backward between them.

Usage: python benchmarks/bench_featurevis.py [--repeat 2] [--batch 16] [--size 128] [--warmup 24] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo import MODELS

from onnxviz.batching import free_size
from onnxviz.inputs import Preprocess
from onnxviz.maximize import Adam, channel
from onnxviz.maximize.optimize import Evaluator
from onnxviz.maximize.param import ModelInput, make_param
from onnxviz.maximize.transforms import Resize, compose, standard_transforms
from onnxviz.model import Model
from onnxviz.report.featurevis import conv_outputs


def timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):  # sessions, caches, compiled models for every input size seen
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def truncate(proto: onnx.ModelProto, layer: str, *, dynamic_hw: bool) -> Model:
    """The model up to ``layer`` (its only output), with a dynamic batch (and spatial dims):
    :func:`onnxviz.batching.free_size`, which ``visualize`` uses for the same cut."""
    graph = Model.from_proto(proto, check=False).graph
    return Model(free_size(proto, graph, [layer], (2, 3) if dynamic_hw else ()))


#: the parts of one step, in order; the one in parentheses is onnxruntime's, the rest numpy's
PARTS = ("param fwd", "transforms fwd", "input fwd", "(fwd+bwd)", "input vjp", "transforms vjp", "param vjp", "adam")


def one_step(
    model: Model, layer: str, batch: int, size: int, forward: str
) -> tuple[Callable[[], None], tuple[int, int], dict[str, list[float]]]:
    """A closure doing one optimization step (state carried across calls), the model's size, and
    the seconds each part of each call took (:data:`PARTS`), appended per call."""
    info = model.inputs[0]
    pre = Preprocess.from_model(info, size=None)
    fixed = pre.size
    hw = fixed if fixed is not None else (size, size)
    p = make_param("fft", size, size, pre.channels)
    tlist = standard_transforms() + ((Resize(hw),) if (size, size) != tuple(hw) else ())
    mi = ModelInput(pre)
    evaluator = Evaluator(model, channel(layer, list(range(batch))), info.name, np.float32, forward)
    rng = np.random.default_rng(0)
    params = p.init(batch, rng).astype(np.float32)
    adam = Adam(0.05)
    state = [adam.init(params)]
    parts: dict[str, list[float]] = {name: [] for name in PARTS}

    def step() -> None:  # visualize's loop body, with a clock between the parts
        clock = [time.perf_counter()]

        def tick(name: str) -> None:
            clock.append(time.perf_counter())
            parts[name].append(clock[-1] - clock[-2])

        image, p_vjp = p.forward(params)
        tick("param fwd")
        timg, t_vjp = compose(tlist, image, rng)
        tick("transforms fwd")
        x = mi.forward(timg).astype(np.float32, copy=False)
        tick("input fwd")
        _, gx, _ = evaluator(x, image, None)
        tick("(fwd+bwd)")
        gi = mi.vjp(gx.astype(np.float32, copy=False))
        tick("input vjp")
        g = t_vjp(gi)
        tick("transforms vjp")
        gp = p_vjp(g.astype(np.float32, copy=False))
        tick("param vjp")
        state[0] = adam.update(params, gp, state[0])
        tick("adam")

    return step, hw, parts


def breakdown(parts: dict[str, list[float]]) -> str:
    """Median milliseconds per part, and the numpy side's total."""
    ms = {name: statistics.median(v) * 1e3 for name, v in parts.items() if v}
    numpy_side = sum(v for name, v in ms.items() if not name.startswith("("))
    return "  ".join(f"{name} {v:.1f}" for name, v in ms.items()) + f"  | numpy side {numpy_side:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=512, help="gallery length for the extrapolation")
    parser.add_argument("--quick", action="store_true", help="one layer per model")
    parser.add_argument("--fixed-size", action="store_true", help="ResNet-50 at its fixed 224x224 (image resized)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=24,
        help="steps before timing: random scales give models with dynamic spatial dims about a "
        "dozen input sizes, each compiled once (the steady state is what a 512-step run sees)",
    )
    args = parser.parse_args(argv)
    print(f"cpus {os.cpu_count()}, load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    header = (
        f"{'model':<13}{'layer':<10}{'channels':>9}{'model in':>10}{'ort_fwd s':>11}{'step s':>9}"
        f"{'step/fwd':>10}{'hybrid s':>10}{'hyb/fwd':>9}"
    )
    print(header)
    print("-" * len(header))
    extrapolate: list[tuple[str, float, float]] = []
    for name in ("mobilenet_v2", "resnet50"):
        proto = MODELS[name]()
        convs = conv_outputs(Model.from_proto(proto).graph)
        n = len(convs)
        picks = [n // 2] if args.quick else sorted({n // 3, n // 2, (2 * n) // 3})
        for i in picks:
            layer = convs[i]
            model = truncate(proto, layer, dynamic_hw=not (args.fixed_size and name == "resnet50"))
            step, hw, parts = one_step(model, layer, args.batch, args.size, "numpy")
            x = np.random.default_rng(0).standard_normal((args.batch, 3, *hw)).astype(np.float32)
            out = model.run(x)[layer]
            ort = timed(functools.partial(model.run, x), args.repeat)
            for _ in range(args.warmup):
                step()
            for v in parts.values():
                v.clear()
            t_step = timed(step, args.repeat, 0)
            hstep, _, _ = one_step(model, layer, args.batch, args.size, "onnxruntime")
            t_h = timed(hstep, args.repeat, args.warmup)
            print(
                f"{name:<13}{layer:<10}{out.shape[1]:>9}{f'{hw[0]}x{hw[1]}':>10}{ort:>11.3f}{t_step:>9.2f}"
                f"{t_step / ort:>9.1f}x{t_h:>10.2f}{t_h / ort:>8.1f}x",
                flush=True,
            )
            print(f"  step parts, ms (median): {breakdown(parts)}", flush=True)
            if name == "resnet50":
                extrapolate.append(
                    (
                        f"{layer} ({i + 1}/{n} conv outputs, {out.shape[1]} ch, {out.shape[2]}x{out.shape[3]})",
                        t_step,
                        t_h,
                    )
                )
    print()
    if args.fixed_size:
        print(
            f"ResNet-50 (light): the {args.size}x{args.size} FFT image is resized (bilinear) to the model's fixed "
            "224x224, as visualize does for fixed-size models without a size."
        )
    else:
        print(f"Both models run at {args.size}x{args.size} natively (spatial dims freed on the truncated model).")
    print(f"Extrapolated {args.batch}-channel gallery of {args.steps} steps on ResNet-50 (step time x {args.steps}):")
    for label, t_step, t_h in extrapolate:
        print(
            f"  {label}: {t_step * args.steps / 60:.1f} min (numpy forward), {t_h * args.steps / 60:.1f} min "
            "(onnxruntime forward + numpy backward)"
        )
    print(f"load average at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
