"""Speed and memory of the gradient engine, as ratios to onnxruntime's forward in the same run.

For each model and batch size, on the same inputs:
  ort_fwd        onnxruntime forward (the unit of every ratio)
  np_fwd         numpy engine forward
  np_grad        numpy forward + input gradient of one class score
  hybrid_grad    onnxruntime forward with taps + numpy backward (forward="onnxruntime")
  torch_grad     PyTorch autograd through onnxviz's torch adapter (when torch is installed)
  ortgrad        (--ortgrad) one onnxruntime run of the compiled forward+backward model
                 (onnxviz.backends.ortgrad), seed given as an array (built once, outside the timing)
Peak memory is what tracemalloc sees of numpy allocations during one call.

Usage: python benchmarks/bench_gradients.py [--models resnet50,vgg19,densenet121,mobilenet_v2]
                                            [--batches 1,8] [--repeat 3]
Goals (issue 3): np_grad within 3x, np_fwd within 1.5x of ort_fwd.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo import MODELS  # noqa: E402

from onnxviz.model import Model  # noqa: E402


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up (sessions, caches)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,vgg19,densenet121,mobilenet_v2")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--ortgrad", action="store_true", help="add the compiled onnxruntime backward column")
    args = parser.parse_args(argv)
    try:
        if args.no_torch:
            raise ImportError
        from onnxviz.backends.torch import TorchBackend

        import torch  # noqa: F401
    except ImportError:
        TorchBackend = None  # type: ignore[assignment,misc]

    header = f"{'model':<14}{'batch':>6}{'ort_fwd s':>11}{'np_fwd':>9}{'np_grad':>9}{'hybrid':>9}{'torch':>9}{'np_peak MB':>12}"
    if args.ortgrad:
        header += f"{'ortgrad':>9}"
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        model = Model.from_proto(MODELS[name]())
        inp, out = model.inputs[0].name, model.outputs[0].name
        for batch in (int(b) for b in args.batches.split(",")):
            shape = [batch if not isinstance(d, int) or d <= 0 or i == 0 else d for i, d in enumerate(model.inputs[0].shape)]
            if isinstance(model.inputs[0].shape[0], int) and model.inputs[0].shape[0] == 1 and batch != 1:
                continue  # static batch of 1
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            feeds = {inp: x}

            def seed(v: np.ndarray) -> np.ndarray:
                s = np.zeros_like(v)
                s[:, 1] = 1
                return s

            ort = timed(lambda: model.run(feeds), args.repeat)
            np_fwd = timed(lambda: model.engine.run(feeds), args.repeat)
            grad = lambda: model.value_and_grad(feeds, {out: seed}, [inp], engine="numpy")  # noqa: E731
            np_grad = timed(grad, args.repeat)
            hybrid = timed(lambda: model.value_and_grad(feeds, {out: seed}, [inp], forward="onnxruntime"), args.repeat)
            torch_t = float("nan")
            if TorchBackend is not None:
                tb = TorchBackend(model.graph)
                torch_t = timed(lambda: tb.gradient(feeds, {out: seed}, inp), args.repeat)
            peak = peak_mb(grad)
            line = (
                f"{name:<14}{batch:>6}{ort:>11.4f}{np_fwd / ort:>8.2f}x{np_grad / ort:>8.2f}x"
                f"{hybrid / ort:>8.2f}x{torch_t / ort:>8.2f}x{peak:>12.0f}"
            )
            if args.ortgrad:
                from onnxviz.backends.ortgrad import OrtGradBackend

                og = OrtGradBackend(model.graph, model.proto)
                seed_array = seed(model.run(feeds)[out])
                og_t = timed(lambda: og.value_and_grad(feeds, {out: seed_array}, [inp]), args.repeat)
                line += f"{og_t / ort:>8.2f}x"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
