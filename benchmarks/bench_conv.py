"""Micro benchmark: the numpy engine's Conv forward and input gradient against onnxruntime's Conv.

For every distinct conv layer of ResNet-50 at 224x224 (and DenseNet-121's growth convs and
MobileNet-style depthwise 3x3 layers),
at batch 1 and 8, prints the best-of-N wall time of our forward, of our input gradient (what
every saliency map pays per conv layer), and of onnxruntime running a one-node Conv model with
the weight as an initializer, plus the ratios to onnxruntime. Run on the target machine (2 cores)::

    python benchmarks/bench_conv.py [--batch 1 8] [--repeat 9] [--only resnet|densenet|depthwise]

On a machine shared with other busy processes, multithreaded BLAS degrades badly (its threads
wait for each other); ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_conv.py --threads 1``
compares the single-threaded kernels by this thread's CPU time (onnxruntime with one thread runs
in the calling thread), which is far less sensitive to such load.

glibc returns every freed array above its mmap threshold to the kernel, so each fresh
multi-megabyte temporary pays page faults (measured: a 144x56x56 depthwise conv 6 ms instead of
1.4 ms); onnxruntime's arena never does. ``MALLOC_MMAP_THRESHOLD_=268435456
MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment shows the engine's cost without them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from onnxviz.backends.numpy import REGISTRY, Call


@dataclass(frozen=True)
class Layer:
    name: str
    cin: int
    cout: int
    size: int
    kernel: int
    stride: int
    group: int = 1

    @property
    def pad(self) -> int:
        return self.kernel // 2


# (in channels, out channels, input size, kernel, stride): ResNet-50 v1.5 (torchvision layout).
RESNET50 = [
    Layer("conv1 7x7/2", 3, 64, 224, 7, 2),
    Layer("l1 1x1 64>64", 64, 64, 56, 1, 1),
    Layer("l1 3x3 64", 64, 64, 56, 3, 1),
    Layer("l1 1x1 64>256", 64, 256, 56, 1, 1),
    Layer("l1 1x1 256>64", 256, 64, 56, 1, 1),
    Layer("l2 1x1 256>128", 256, 128, 56, 1, 1),
    Layer("l2 3x3/2 128", 128, 128, 56, 3, 2),
    Layer("l2 down 1x1/2", 256, 512, 56, 1, 2),
    Layer("l2 3x3 128", 128, 128, 28, 3, 1),
    Layer("l2 1x1 128>512", 128, 512, 28, 1, 1),
    Layer("l2 1x1 512>128", 512, 128, 28, 1, 1),
    Layer("l3 1x1 512>256", 512, 256, 28, 1, 1),
    Layer("l3 3x3/2 256", 256, 256, 28, 3, 2),
    Layer("l3 down 1x1/2", 512, 1024, 28, 1, 2),
    Layer("l3 3x3 256", 256, 256, 14, 3, 1),
    Layer("l3 1x1 256>1024", 256, 1024, 14, 1, 1),
    Layer("l3 1x1 1024>256", 1024, 256, 14, 1, 1),
    Layer("l4 1x1 1024>512", 1024, 512, 14, 1, 1),
    Layer("l4 3x3/2 512", 512, 512, 14, 3, 2),
    Layer("l4 down 1x1/2", 1024, 2048, 14, 1, 2),
    Layer("l4 3x3 512", 512, 512, 7, 3, 1),
    Layer("l4 1x1 512>2048", 512, 2048, 7, 1, 1),
    Layer("l4 1x1 2048>512", 2048, 512, 7, 1, 1),
]

# DenseNet-121's 3x3 growth convs (128 -> 32): many more input than output channels.
DENSENET = [
    Layer("dn 3x3 128>32 @56", 128, 32, 56, 3, 1),
    Layer("dn 3x3 128>32 @28", 128, 32, 28, 3, 1),
    Layer("dn 3x3 128>32 @14", 128, 32, 14, 3, 1),
    Layer("dn 3x3 128>32 @7", 128, 32, 7, 3, 1),
]

DEPTHWISE = [
    Layer("dw3x3 144 @56", 144, 144, 56, 3, 1, 144),
    Layer("dw3x3/2 144 @56", 144, 144, 56, 3, 2, 144),
    Layer("dw3x3 384 @14", 384, 384, 14, 3, 1, 384),
    Layer("dw3x3 960 @7", 960, 960, 7, 3, 1, 960),
]


def best_ms(fns: list[Callable[[], object]], repeat: int, clock: Callable[[], float]) -> list[float]:
    """Best-of-``repeat`` milliseconds of each function, interleaved so that load from other
    processes on a shared machine hits all of them alike."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = clock()
            fn()
            best[i] = min(best[i], clock() - start)
    return [b * 1e3 for b in best]


def attrs_of(layer: Layer) -> dict[str, object]:
    return dict(kernel_shape=[layer.kernel] * 2, strides=[layer.stride] * 2,
                pads=[layer.pad] * 4, group=layer.group)


def ort_session(layer: Layer, w: np.ndarray, batch: int, threads: int) -> Callable[[np.ndarray], object]:

    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, layer.cin, layer.size, layer.size])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs_of(layer))
    graph = helper.make_graph([node], "conv", [x_info], [y_info], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})


def run(layers: list[Layer], batches: list[int], repeat: int, threads: int) -> None:
    fwd = REGISTRY.get_forward("Conv", 17)
    rule = REGISTRY.get_vjp("Conv", 17)
    assert fwd is not None and rule is not None
    rng = np.random.default_rng(0)
    print(f"{'layer':<18}{'N':>3}{'fwd ms':>9}{'dX ms':>9}{'ort ms':>9}{'fwd/ort':>9}{'dX/ort':>8}")
    totals = {b: [0.0, 0.0, 0.0] for b in batches}
    for batch in batches:
        for layer in layers:
            x = rng.standard_normal((batch, layer.cin, layer.size, layer.size), dtype=np.float32)
            w = rng.standard_normal((layer.cout, layer.cin // layer.group, layer.kernel, layer.kernel),
                                    dtype=np.float32)
            attrs = attrs_of(layer)
            y = fwd(x, w, **attrs)
            assert y.dtype == np.float32
            gy = rng.standard_normal(y.shape, dtype=np.float32)
            call = Call("Conv", (x, w), (y,), attrs, (True, False), "bench", 17)
            assert rule(call, gy)[0].dtype == np.float32
            sess = ort_session(layer, w, batch, threads)
            t_fwd, t_dx, t_ort = best_ms(
                [lambda: fwd(x, w, **attrs), lambda: rule(call, gy), lambda: sess(x)], repeat,
                time.thread_time if threads == 1 else time.perf_counter)
            for i, t in enumerate((t_fwd, t_dx, t_ort)):
                totals[batch][i] += t
            print(f"{layer.name:<18}{batch:>3}{t_fwd:>9.2f}{t_dx:>9.2f}{t_ort:>9.2f}"
                  f"{t_fwd / t_ort:>9.2f}{t_dx / t_ort:>8.2f}", flush=True)
    for batch, (f, d, o) in totals.items():
        print(f"{'TOTAL':<18}{batch:>3}{f:>9.2f}{d:>9.2f}{o:>9.2f}{f / o:>9.2f}{d / o:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--only", choices=["resnet", "densenet", "depthwise"])
    parser.add_argument("--threads", type=int, default=0,
                        help="onnxruntime intra-op threads (0 = one per core); for a 1-thread "
                        "comparison also set OPENBLAS_NUM_THREADS=1 for numpy")
    args = parser.parse_args()
    layers = {"resnet": RESNET50, "densenet": DENSENET, "depthwise": DEPTHWISE}.get(
        args.only, RESNET50 + DENSENET + DEPTHWISE)
    run(layers, args.batch, args.repeat, args.threads)


if __name__ == "__main__":
    main()
