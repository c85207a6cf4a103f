"""Speed and memory of the gradient engine, as ratios to onnxruntime's forward in the same run.

For each model and batch size, on the same inputs:
  ort_fwd        onnxruntime forward (the unit of every ratio)
  np_fwd         numpy engine forward
  np_grad        numpy forward + input gradient of one class score
  hybrid_grad    onnxruntime forward with taps + numpy backward (forward="onnxruntime")
  torch_grad     PyTorch autograd through onnxviz's torch adapter (when torch is installed)
  ortgrad        (--ortgrad) the compiled forward+backward model (onnxviz.backends.ortgrad) as
                 Model.value_and_grad runs it: one onnxruntime run, or two halves of the batch
                 at once when the rows are independent (Model.rows_independent, checked in the
                 warm-up); seed given as an array (built once, outside the timing)
Peak memory is what tracemalloc sees of numpy allocations during one call.

Usage: python benchmarks/bench_gradients.py [--models resnet50,vgg19,densenet121,mobilenet_v2]
                                            [--batches 1,8] [--repeat 3] [--forward-only]
                                            [--threads N] [--profile]
Goals (issue 3): np_grad within 3x, np_fwd within 1.5x of ort_fwd.

--forward-only  only ort_fwd and np_fwd, timed interleaved (each run of one next to a run of the
                other, so load drifting on a shared machine hits both alike); np_fwd is then the
                median of the per-pair ratios
--threads 1     onnxruntime with one intra-op thread and every time as this thread's CPU time
                (far less sensitive to other processes); run it as
                OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gradients.py --threads 1 ...
                so that numpy's BLAS is single-threaded too
--profile       after each row, the numpy forward's time per step kind (a conv with what the
                engine fused into it, MaxPool, ...) summed over the graph
"""

from __future__ import annotations

import argparse
import functools
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


CLOCK: Callable[[], float] = time.perf_counter


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up (sessions, caches)
    times = []
    for _ in range(repeat):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return statistics.median(times)


def paired(unit: Callable[[], object], fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median time of ``unit`` and median of the per-pair ratios ``fn / unit``, run alternately."""
    unit()
    fn()
    units, ratios = [], []
    for _ in range(repeat):
        t = CLOCK()
        unit()
        u = CLOCK() - t
        t = CLOCK()
        fn()
        ratios.append((CLOCK() - t) / u)
        units.append(u)
    return statistics.median(units), statistics.median(ratios)


def step_profile(model: Model, feeds: dict[str, np.ndarray], repeat: int) -> str:
    """The numpy forward's time per step kind, e.g. ``Conv 3x3/1+BatchNormalization+Relu``."""
    from onnxviz.backends.numpy import engine

    totals: dict[str, float] = {}

    def kind(step: object, value: Callable[[str], np.ndarray]) -> str:
        nodes = step.nodes  # type: ignore[attr-defined]
        name = "+".join(n.op_type for n in nodes)
        head = nodes[0]
        if head.op_type == "Conv":
            w, attrs = value(head.inputs[1]), head.attrs
            depthwise = attrs.get("group", 1) > 1 and attrs.get("group", 1) == value(head.inputs[0]).shape[1]
            size = "x".join(str(k) for k in w.shape[2:])
            stride = (attrs.get("strides") or [1])[0]
            name = f"Conv {'dw' if depthwise else ''}{size}/{stride}" + name[len("Conv") :]
        return name

    def timing(run: Callable[..., object], lookup: Callable[..., Callable[[str], np.ndarray]]) -> Callable[..., object]:
        def wrapped(step: object, values: object, *rest: object) -> object:
            t = CLOCK()
            out = run(step, values, *rest)
            key = kind(step, lookup(step, values))
            totals[key] = totals.get(key, 0.0) + CLOCK() - t
            return out

        return wrapped

    def from_args(step: object, args: object) -> Callable[[str], np.ndarray]:
        inputs = list(step.nodes[0].inputs)  # type: ignore[attr-defined]
        return lambda name: args[inputs.index(name)]  # type: ignore[index]

    saved = engine.run_fused, engine.run_head
    engine.run_fused = timing(saved[0], lambda step, value: value)  # type: ignore[assignment]
    engine.run_head = timing(saved[1], from_args)  # type: ignore[assignment]
    try:
        for _ in range(repeat):
            model.engine.run(feeds)
    finally:
        engine.run_fused, engine.run_head = saved
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / repeat * 1e3:.1f}" for k, v in ranked if v / repeat >= 5e-5) + " (ms a run)"


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
    parser.add_argument("--forward-only", action="store_true", help="only ort_fwd and np_fwd, interleaved")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    parser.add_argument("--profile", action="store_true", help="numpy forward time per step kind")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.thread_time if args.threads == 1 else time.perf_counter
    try:
        if args.no_torch:
            raise ImportError
        from onnxviz.backends.torch import TorchBackend

        import torch  # noqa: F401
    except ImportError:
        TorchBackend = None  # type: ignore[assignment,misc]

    header = f"{'model':<14}{'batch':>6}{'ort_fwd s':>11}{'np_fwd':>9}"
    if not args.forward_only:
        header += f"{'np_grad':>9}{'hybrid':>9}{'torch':>9}{'np_peak MB':>12}"
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

            ort_run: Callable[[], object] = functools.partial(model.run, feeds)
            np_run = functools.partial(model.engine.run, feeds)
            if args.threads:
                import onnxruntime

                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = args.threads
                session = onnxruntime.InferenceSession(
                    model.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
                )
                ort_run = functools.partial(session.run, None, feeds)
            if args.forward_only:
                ort, ratio = paired(ort_run, np_run, args.repeat)
                print(f"{name:<14}{batch:>6}{ort:>11.4f}{ratio:>8.2f}x", flush=True)
                if args.profile:
                    print("    " + step_profile(model, feeds, args.repeat), flush=True)
                continue
            ort = timed(ort_run, args.repeat)
            np_fwd = timed(np_run, args.repeat)
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
                seed_array = seed(model.run(feeds)[out])
                og_t = timed(lambda: model.value_and_grad(feeds, {out: seed_array}, [inp], engine="ortgrad"),
                             args.repeat)
                line += f"{og_t / ort:>8.2f}x"
            print(line, flush=True)
            if args.profile:
                print("    " + step_profile(model, feeds, args.repeat), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
