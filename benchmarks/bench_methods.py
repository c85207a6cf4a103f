"""Attribution methods as multiples of one onnxruntime forward pass of the same model, same run.

For each model (default ResNet-50 at 224x224, one image) this times, on the same input:
  ort_fwd        onnxruntime forward (the unit of every ratio)
  gradcam        Grad-CAM on the default CAM layer (one engine pass: forward + backward to the layer)
  saliency       |dS/dx| (one forward + backward to the input)
  ig             Integrated Gradients, 50 steps (Gauss-Legendre, zero baseline)
  smoothgrad     SmoothGrad, 50 noisy samples
  scorecam       Score-CAM (one onnxruntime forward per channel of the layer: 2048 on ResNet-50)
Each figure is the median of --repeat runs after one warm-up run; the unit is measured again
(median of 5) right before each row, and the row's ratio uses it, so load drifting over a long run
does not skew the later ratios (the "fwd ms" column shows it). The "best" column is the row's best
run over the best unit run right before or after it. The "paired" column is the issue's goal read
literally, "N forward passes' worth of time": each timed run of the row follows a loop of as many
back-to-back forwards as the row lasts (the warm-up tells how many), and the column is the median
over those pairs of run / (loop / forwards in it). This VM switches between speeds for seconds at a
time; a loop lasting as long as the row goes through the same mix of phases as the row, where a
best single forward catches the fastest phase only (best-over-best overstates multi-second rows by
~10% here). The goal verdict uses "paired". A method whose warm-up already
takes longer than --budget seconds (Score-CAM: thousands of forwards) is not repeated: its
warm-up is the figure and the "runs" column says 1.

The zoo models are benchmarks/zoo.py's (the onnx wheel's light models have a fixed batch of 1,
so IG and SmoothGrad go through the engine one row at a time; MobileNet-V2 has a dynamic batch).

Where torch and captum are installed, the same methods are also timed on a torchvision-style
ResNet-50 built here with torch.nn (Bottleneck blocks [3, 4, 6, 3], random weights, eval mode),
exported with the TorchScript exporter (opset 17, dynamic batch) to a temporary directory:
  ort_fwd        onnxruntime forward of the export (the unit of both tools' ratios)
  onnxviz        the methods above on the export (IG and SmoothGrad rows --batch-size at a time)
  captum         Saliency, IntegratedGradients (n_steps=50, each --captum-batches as
                 internal_batch_size), NoiseTunnel(Saliency) SmoothGrad (nt_samples=50, each
                 --captum-batches as nt_samples_batch_size) and LayerGradCam on the torch module
  torch          Grad-CAM written as pytorch-grad-cam does it: hooks on layer4 record the
                 activation and its gradient (forward + backward), weights = mean gradient,
                 ReLU, bilinear upsampling and min-max scaling; the hooks are removed afterwards
torch runs with torch.set_num_threads(2), onnxruntime and numpy with their defaults (all cores).

Usage: python benchmarks/bench_methods.py [--models resnet50[,vgg19,densenet121,mobilenet_v2]]
           [--methods gradcam,saliency,ig,smoothgrad,scorecam] [--repeat 3] [--forward numpy]
           [--batch-size 16] [--captum-batches 16,50] [--budget 60] [--no-torch] [--quick]
--quick is a smoke check of a minute or two: 8 IG steps and SmoothGrad samples, one run after the
warm-up, no Score-CAM unless --methods names it, Captum batches of 8 only.

Goals (issue 4), for ResNet-50 at 224x224 on one image: IG with 50 steps and SmoothGrad with 50
samples under 110 forward passes' worth each, Grad-CAM under 4. The goal column is left empty
for other step counts (--quick). The load average is printed at the start and the end; above
1.5 on this 2-core machine the figures are unreliable (other processes share the cores).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from zoo import MODELS

from onnxviz.methods.base import Method
from onnxviz.methods.registry import get_method
from onnxviz.model import Model

#: Load average above which the figures are flagged as unreliable (the target machine has 2 cores).
BUSY_LOAD = 1.5
#: Issue 4: the most a method may cost, in forward passes, at its paper settings.
GOALS = {"gradcam": 4.0, "ig": 110.0, "smoothgrad": 110.0}
#: Steps / samples at which the goals are stated.
GOAL_STEPS = 50


# --------------------------------------------------------------------------------------------
# Timing and printing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    seconds: float  # the median
    runs: int
    best: float


def timed(fn: Callable[[], object], repeat: int, budget: float) -> Timing:
    """Median of ``repeat`` runs after a warm-up; the warm-up alone when it exceeds ``budget``."""
    t = time.perf_counter()
    fn()  # warm-up: sessions, shape caches, first-touch of buffers
    first = time.perf_counter() - t
    if first > budget:
        return Timing(first, 1, first)
    times = [_seconds(fn) for _ in range(repeat)]
    return Timing(statistics.median(times), repeat, min(times))


def _seconds(fn: Callable[[], object], calls: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


class Table:
    """Rows timed and printed one by one (a full run takes many minutes).

    The unit, onnxruntime's forward, is measured again right before each row (median of
    ``UNIT_RUNS``) and that row's ratio uses it: on a shared machine the load drifts over minutes,
    and a unit measured once at the start would skew every later ratio by the drift. This kind
    of VM also switches between speeds for seconds at a time (the same forward takes 40 or 75 ms),
    so the "best" column divides the row's best run by the best unit run measured right before
    and right after it (timeit's rule), and the "paired" column divides each run by the mean
    forward of a loop of forwards lasting as long as the row, run right before it (the median of
    those pairs); the goal verdict uses "paired"."""

    UNIT_RUNS = 5
    COLUMNS = (
        f"{'tool':<9}{'method':<22}{'settings':<32}{'seconds':>9}{'fwd ms':>8}{'x fwd':>9}{'best':>8}{'paired':>8}{'goal':>9}{'runs':>6}"
    )

    def __init__(self, title: str, unit: Callable[[], object], repeat: int, budget: float) -> None:
        self.unit = unit
        self.repeat = repeat
        self.budget = budget
        print(f"\n{title}")
        print(self.COLUMNS)
        print("-" * len(self.COLUMNS))
        self.time("ort", "forward (the unit)", "", unit, repeat=10)

    def time(
        self,
        tool: str,
        method: str,
        settings: str,
        fn: Callable[[], object],
        goal: float | None = None,
        *,
        repeat: int | None = None,
    ) -> None:
        before = timed(self.unit, self.UNIT_RUNS, float("inf"))
        t = time.perf_counter()
        fn()  # warm-up: sessions, shape caches, first-touch of buffers
        first = time.perf_counter() - t
        runs = self.repeat if repeat is None else repeat
        times, paired = [first], []
        if first <= self.budget:
            # As many back-to-back forwards as the row lasts, right before each run of the row.
            calls = max(1, round(first / before.seconds))
            times = []
            for _ in range(runs):
                loop = _seconds(self.unit, calls) / calls
                times.append(_seconds(fn))
                paired.append(times[-1] / loop)
        after = timed(self.unit, self.UNIT_RUNS, float("inf"))
        seconds = statistics.median(times)
        unit = before.seconds
        ratio = seconds / unit
        best = min(times) / min(before.best, after.best)
        pair = statistics.median(paired) if paired else float("nan")
        verdict = ""
        if goal is not None:
            decided = pair if paired else ratio
            verdict = f"<{goal:g} {'ok' if decided < goal else 'NO'}"
        print(
            f"{tool:<9}{method:<22}{settings:<32}{seconds:>9.3f}{unit * 1e3:>8.1f}{ratio:>8.1f}x{best:>7.1f}x"
            f"{pair:>7.1f}x{verdict:>9}{len(times):>6}",
            flush=True,
        )


# --------------------------------------------------------------------------------------------
# onnxviz methods
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One onnxviz row: a registry method with its constructor parameters."""

    key: str  # the --methods name
    method: str  # the registry name
    params: dict[str, Any]
    settings: str
    goal: float | None


def onnxviz_cases(methods: list[str], steps: int, forwards: list[str], batch_size: int | None) -> Iterator[Case]:
    batch = {} if batch_size is None else {"batch_size": batch_size}
    goal_ok = steps == GOAL_STEPS
    for key in methods:
        if key == "gradcam":
            yield Case(key, "gradcam", dict(batch), "default layer", GOALS["gradcam"])
        elif key == "scorecam":
            yield Case(key, "scorecam", {}, "default layer, 32 masks/run", None)
        elif key in ("saliency", "ig", "smoothgrad"):
            for fwd in forwards:
                params: dict[str, Any] = {"forward": fwd, **batch}
                if key == "saliency":
                    yield Case(key, "saliency", params, f"forward={fwd}", None)
                elif key == "ig":
                    yield Case(key, "integrated_gradients", {"steps": steps, **params},
                               f"{steps} steps, forward={fwd}", GOALS["ig"] if goal_ok else None)
                else:
                    yield Case(key, "smoothgrad", {"samples": steps, **params},
                               f"{steps} samples, forward={fwd}", GOALS["smoothgrad"] if goal_ok else None)
        else:
            raise SystemExit(f"unknown method {key!r}; choose from gradcam,saliency,ig,smoothgrad,scorecam")


def run_onnxviz(table: Table, model: Model, x: np.ndarray, cases: list[Case]) -> None:
    for case in cases:
        method: Method = get_method(case.method)(**case.params)
        count = case.params.get("steps", case.params.get("samples"))
        label = case.key if count is None else f"{case.key}-{count}"
        table.time("onnxviz", label, case.settings, lambda method=method: method.explain(model, x), case.goal)


# --------------------------------------------------------------------------------------------
# Torch side: a torchvision-style ResNet-50, its export, Captum and hook-based Grad-CAM
# --------------------------------------------------------------------------------------------


def build_resnet50(seed: int = 0) -> Any:
    """torchvision's ResNet-50 layout (v1.5: stride on the 3x3 conv) with torch.nn only.

    torchvision is not installable beside the CPU torch wheel used here, so the module is written
    out: stem 7x7/2 + max-pool, Bottleneck blocks [3, 4, 6, 3] of widths 64-512 (x4 expansion),
    global average pool, 1000-way linear. Kaiming init as torchvision; BatchNorm running statistics
    come from one training-mode pass over random images, so activations stay in a sane range.
    """
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin: int, width: int, stride: int = 1) -> None:
            super().__init__()
            cout = width * self.expansion
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + identity)

    class ResNet50(nn.Module):
        def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 1000) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            cin = 64
            stages = []
            for i, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512))):
                stage = []
                for b in range(blocks):
                    stage.append(Bottleneck(cin, width, stride=2 if b == 0 and i > 0 else 1))
                    cin = width * Bottleneck.expansion
                stages.append(nn.Sequential(*stage))
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = ResNet50()
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average: one pass sets the statistics
        module.train()
        with torch.no_grad():
            module(torch.rand(4, 3, 224, 224))
    return module.eval()


def hook_gradcam(module: Any, layer: Any, x: Any, target: int) -> Any:
    """Grad-CAM as pytorch-grad-cam computes it: a forward hook keeps the layer's output and a
    tensor hook its gradient; one forward, one backward of the target logit. The hooks are
    removed before returning, so nothing stays on the module."""
    import torch
    import torch.nn.functional as F

    store: dict[str, Any] = {}

    def keep_grad(g: Any) -> None:
        store["g"] = g.detach()

    def keep_output(_m: Any, _i: Any, out: Any) -> None:
        store["a"] = out.detach()
        out.register_hook(keep_grad)

    handle = layer.register_forward_hook(keep_output)
    try:
        module.zero_grad(set_to_none=True)
        logits = module(x)
        logits[:, target].sum().backward()
    finally:
        handle.remove()
    with torch.no_grad():
        weights = store["g"].mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * store["a"]).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        lo = cam.amin(dim=(1, 2), keepdim=True)
        hi = cam.amax(dim=(1, 2), keepdim=True)
        return (cam - lo) / (hi - lo + 1e-7)


def run_torch(args: argparse.Namespace, methods: list[str], steps: int, forwards: list[str]) -> None:
    try:
        import captum  # noqa: F401
        import torch
    except ImportError as e:
        print(f"\n(torch/captum section skipped: {e})")
        return
    from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency

    # Captum sets requires_grad on the input itself and says so on every call.
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")

    from tests.torch_models import export

    torch.set_num_threads(2)
    module = build_resnet50()
    with tempfile.TemporaryDirectory() as tmp:
        path = export(module, Path(tmp) / "resnet50.onnx", opset=17, input_shape=(1, 3, 224, 224))
        model = Model.load(path)
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        target = int(module(xt).argmax())
    table = Table(
        f"torch ResNet-50 (torch.nn, random weights) exported at opset 17, dynamic batch, 1x3x224x224; "
        f"torch threads {torch.get_num_threads()}",
        lambda: model.run(x),
        args.repeat,
        args.budget,
    )

    def torch_forward() -> None:
        with torch.no_grad():
            module(xt)

    table.time("torch", "forward", "no_grad", torch_forward, repeat=10)

    cases = list(onnxviz_cases(methods, steps, forwards, args.batch_size))
    run_onnxviz(table, model, x, cases)

    goal_ok = steps == GOAL_STEPS
    batches = [int(b) for b in args.captum_batches.split(",") if b]
    sigma = float(0.15 * (x.max() - x.min()))  # onnxviz SmoothGrad's default noise, as an absolute stdev
    for key in methods:
        if key == "gradcam":
            layer_gc = LayerGradCam(module, module.layer4)
            table.time("captum", "LayerGradCam", "layer4, no upsampling",
                       lambda layer_gc=layer_gc: layer_gc.attribute(xt, target=target), GOALS["gradcam"])
            table.time("torch", "Grad-CAM (hooks)", "layer4, pytorch-grad-cam style",
                       lambda: hook_gradcam(module, module.layer4, xt, target), GOALS["gradcam"])
        elif key == "saliency":
            sal = Saliency(module)
            table.time("captum", "Saliency", "abs=True", lambda sal=sal: sal.attribute(xt, target=target))
        elif key == "ig":
            ig = IntegratedGradients(module)
            for b in batches:
                table.time("captum", f"IntegratedGrad-{steps}", f"internal_batch_size={b}",
                           lambda b=b, ig=ig: ig.attribute(xt, target=target, n_steps=steps, internal_batch_size=b),
                           GOALS["ig"] if goal_ok else None)
        elif key == "smoothgrad":
            nt = NoiseTunnel(Saliency(module))
            for b in batches:
                table.time("captum", f"NoiseTunnel SG-{steps}", f"nt_samples_batch_size={b}",
                           lambda b=b, nt=nt: nt.attribute(xt, nt_type="smoothgrad", nt_samples=steps,
                                                          nt_samples_batch_size=b, stdevs=sigma, target=target,
                                                          abs=False),
                           GOALS["smoothgrad"] if goal_ok else None)
        # scorecam: Captum has none; pytorch-grad-cam's runs the same number of forwards.


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def banner() -> Iterator[None]:
    start = os.getloadavg()[0]
    print(f"load average at start: {load()}")
    if start > BUSY_LOAD:
        print(f"WARNING: load average {start:.2f} > {BUSY_LOAD}: other processes share the cores, "
              "figures are unreliable (ratios less so than seconds, being measured in the same run)")
    t = time.perf_counter()
    try:
        yield
    finally:
        print(f"\nload average at end:   {load()}; wall time {time.perf_counter() - t:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50", help=f"comma list of {','.join(MODELS)}; '' for none")
    parser.add_argument("--methods", default=None, help="comma list of gradcam,saliency,ig,smoothgrad,scorecam")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs after the warm-up (default 3)")
    parser.add_argument("--forward", default="numpy", help="gradient methods' forward: numpy, onnxruntime or both")
    parser.add_argument("--batch-size", type=int, default=None, help="onnxviz rows per pass (library default)")
    parser.add_argument("--captum-batches", default=None, help="Captum internal batch sizes (default 16,50)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds above which a warm-up is the figure")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch/Captum section")
    parser.add_argument("--quick", action="store_true", help="smoke check: 8 steps, 1 run, no Score-CAM")
    args = parser.parse_args(argv)

    steps = 8 if args.quick else GOAL_STEPS
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    args.captum_batches = args.captum_batches or ("8" if args.quick else "16,50")
    default_methods = "gradcam,saliency,ig,smoothgrad" + ("" if args.quick else ",scorecam")
    methods = [m for m in (args.methods or default_methods).split(",") if m]
    forwards = [f for f in args.forward.split(",") if f]
    cases = list(onnxviz_cases(methods, steps, forwards, args.batch_size))

    with banner():
        print(f"numpy {np.__version__}, onnxruntime {__import__('onnxruntime').__version__}; "
              f"repeat {args.repeat} after a warm-up, budget {args.budget:g} s")
        for name in (m for m in args.models.split(",") if m):
            model = Model.from_proto(MODELS[name]())
            shape = [1 if not isinstance(d, int) or d <= 0 else d for d in model.inputs[0].shape]
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            table = Table(f"{name} (benchmarks/zoo.py), input {'x'.join(map(str, shape))}",
                          lambda model=model, x=x: model.run(x), args.repeat, args.budget)
            run_onnxviz(table, model, x, cases)
        if not args.no_torch:
            run_torch(args, methods, steps, forwards)
    return 0


if __name__ == "__main__":
    sys.exit(main())
