"""Small PyTorch versions of real CNN architectures, and their export to ONNX.

Each architecture keeps the structural habits that make its export interesting for onnxviz
(skip additions, depthwise convs, squeeze-excitation broadcasts, concatenations, permuted
LayerNorm, adaptive pooling, dropout) at a size that exports and runs in well under a second.
Only ``torch`` is used (no torchvision), and nothing is downloaded: weights come from a seed.

The file imports without torch: the module classes then derive from ``object`` and
``build``/``export`` raise ``ModuleNotFoundError``. Tests skip with
``pytest.importorskip("torch")`` before calling them.

Exports use the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), which is what
most ONNX files in the wild were made with; its lowering depends on the opset, e.g.
``Hardswish`` is ``HardSigmoid`` + ``Mul`` before opset 14 and ``HardSwish`` after,
``LayerNorm`` is a ``ReduceMean``/``Sub``/``Pow``/``Sqrt``/``Div`` chain before opset 17 and
``LayerNormalization`` from 17, and ``GELU`` is always the ``Erf`` formula below opset 20.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import torch
    from torch import nn

    _Module: Any = nn.Module
except ImportError:  # the definitions below must still import without torch
    torch = None
    nn = None
    _Module = object

#: Opsets every architecture is exported at (``torch.onnx.export(dynamo=False)`` tops out at 20).
OPSETS: tuple[int, ...] = (11, 13, 17, 18)
INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 32, 32)
NUM_CLASSES = 10


def _require_torch() -> None:
    if torch is None:
        raise ModuleNotFoundError("tests.torch_models needs PyTorch (pip install torch)")


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> Any:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


# --------------------------------------------------------------------------------------------
# ResNet (He et al. 2016): basic blocks, BN, identity and projected skips, maxpool stem
# --------------------------------------------------------------------------------------------


class BasicBlock(_Module):
    """Two 3x3 conv-BN and a skip: identity, or a 1x1 strided conv-BN when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: Any) -> Any:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(_Module):
    """ResNet-18's layout at width 16-64 with one block per stage: 32x32 -> 16 -> 8 -> 4."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.layer3 = BasicBlock(32, 64, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Any) -> Any:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# MobileNetV3 (Howard et al. 2019): inverted residuals, depthwise conv, HardSwish, SE/HardSigmoid
# --------------------------------------------------------------------------------------------


class SqueezeExcitation(_Module):
    """Global pool, 1x1 reduce, activation, 1x1 expand, gate; the gate scales x by broadcast."""

    def __init__(
        self,
        channels: int,
        squeezed: int,
        gate: Callable[[], Any],
        act: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.act = act() if act is not None else nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate()

    def forward(self, x: Any) -> Any:
        scale = self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))
        return x * scale


class InvertedResidual(_Module):
    """MobileNetV3's bneck: 1x1 expand, kxk depthwise, optional SE, 1x1 linear projection."""

    def __init__(
        self,
        cin: int,
        expanded: int,
        cout: int,
        k: int,
        stride: int,
        use_se: bool,
        act: Callable[[], Any],
    ) -> None:
        super().__init__()
        layers: list[Any] = []
        if expanded != cin:
            layers += [_conv_bn(cin, expanded, 1), act()]
        layers += [_conv_bn(expanded, expanded, k, stride, groups=expanded), act()]
        if use_se:
            layers.append(SqueezeExcitation(expanded, max(8, expanded // 4), nn.Hardsigmoid))
        layers.append(_conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: Any) -> Any:
        out = self.block(x)
        return out + x if self.use_residual else out


class TinyMobileNetV3(_Module):
    """A three-bneck MobileNetV3-Small with its Hardswish stem, last conv and classifier."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 16, 3, stride=2),
            nn.Hardswish(),
            InvertedResidual(16, 16, 16, 3, 1, True, nn.ReLU),
            InvertedResidual(16, 48, 24, 3, 2, False, nn.ReLU),
            InvertedResidual(24, 72, 24, 5, 1, True, nn.Hardswish),
            _conv_bn(24, 96, 1),
            nn.Hardswish(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(96, 64), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(64, num_classes)
        )

    def forward(self, x: Any) -> Any:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------
# EfficientNet (Tan & Le 2019): MBConv with SiLU and a Sigmoid SE gate
# --------------------------------------------------------------------------------------------


class MBConv(_Module):
    """EfficientNet's MBConv: expand (ratio > 1), depthwise, SE with SiLU/Sigmoid, project, skip."""

    def __init__(self, cin: int, cout: int, expand_ratio: int, k: int, stride: int) -> None:
        super().__init__()
        expanded = cin * expand_ratio
        layers: list[Any] = []
        if expand_ratio != 1:
            layers += [_conv_bn(cin, expanded, 1), nn.SiLU()]
        layers += [
            _conv_bn(expanded, expanded, k, stride, groups=expanded),
            nn.SiLU(),
            # EfficientNet's SE squeezes with SiLU where MobileNetV3's uses ReLU.
            SqueezeExcitation(expanded, max(1, cin // 4), nn.Sigmoid, act=nn.SiLU),
            _conv_bn(expanded, cout, 1),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: Any) -> Any:
        out = self.block(x)
        return out + x if self.use_residual else out


class TinyEfficientNet(_Module):
    """EfficientNet-B0's stem, three MBConv stages (ratios 1, 4, 4; kernels 3, 3, 5) and head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 16, 3, stride=2),
            nn.SiLU(),
            MBConv(16, 16, 1, 3, 1),
            MBConv(16, 24, 4, 3, 2),
            MBConv(24, 24, 4, 5, 1),
            _conv_bn(24, 64, 1),
            nn.SiLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: Any) -> Any:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------
# DenseNet (Huang et al. 2017): BN-ReLU-Conv bottlenecks concatenated, transitions
# --------------------------------------------------------------------------------------------


class DenseLayer(_Module):
    """BN-ReLU-1x1 conv (bottleneck) then BN-ReLU-3x3 conv; output concatenated to its input."""

    def __init__(self, cin: int, growth: int, bn_size: int = 2) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, bn_size * growth, 1, bias=False),
            nn.BatchNorm2d(bn_size * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: Any) -> Any:
        return torch.cat([x, self.layers(x)], 1)


class TinyDenseNet(_Module):
    """Two dense blocks (growth 8) around a transition (BN-ReLU-1x1 conv-AvgPool, halving width)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        growth = 8
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            *[DenseLayer(16 + i * growth, growth) for i in range(3)],
            nn.BatchNorm2d(40),
            nn.ReLU(inplace=True),
            nn.Conv2d(40, 20, 1, bias=False),
            nn.AvgPool2d(2),
            *[DenseLayer(20 + i * growth, growth) for i in range(2)],
            nn.BatchNorm2d(36),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(36, num_classes)

    def forward(self, x: Any) -> Any:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------
# ConvNeXt (Liu et al. 2022): depthwise 7x7, LayerNorm over channels via permute, GELU, layer scale
# --------------------------------------------------------------------------------------------


class ChannelsLayerNorm(_Module):
    """LayerNorm over the channel axis of an NCHW tensor, written as permute-LayerNorm-permute."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: Any) -> Any:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(_Module):
    """dwconv 7x7, (NHWC) LayerNorm, Linear 4x, GELU, Linear, layer scale, (NCHW) + skip."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Any) -> Any:
        out = self.dwconv(x).permute(0, 2, 3, 1)
        out = self.pwconv2(self.act(self.pwconv1(self.norm(out))))
        return x + (self.gamma * out).permute(0, 3, 1, 2)


class TinyConvNeXt(_Module):
    """ConvNeXt-T's patchify stem (4x4, stride 4); two stages, LayerNorm + 2x2 conv between."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 4, stride=4),
            ChannelsLayerNorm(24),
            ConvNeXtBlock(24),
            ConvNeXtBlock(24),
            ChannelsLayerNorm(24),
            nn.Conv2d(24, 48, 2, stride=2),
            ConvNeXtBlock(48),
        )
        self.norm = nn.LayerNorm(48, eps=1e-6)
        self.head = nn.Linear(48, num_classes)

    def forward(self, x: Any) -> Any:
        return self.head(self.norm(self.features(x).mean([-2, -1])))


# --------------------------------------------------------------------------------------------
# VGG (Simonyan & Zisserman 2015): conv-ReLU stacks, maxpool, adaptive pool, Linear + Dropout
# --------------------------------------------------------------------------------------------


class TinyVGG(_Module):
    """VGG's conv stacks, AdaptiveAvgPool2d((2, 2)) and three-Linear classifier with Dropout."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        # 4x4 -> 2x2: the exporter lowers this to a fixed AveragePool (kernel 2, stride 2).
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(32 * 2 * 2, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(64, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: Any) -> Any:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


ARCHITECTURES: dict[str, type] = {
    "resnet": TinyResNet,
    "mobilenetv3": TinyMobileNetV3,
    "efficientnet": TinyEfficientNet,
    "densenet": TinyDenseNet,
    "convnext": TinyConvNeXt,
    "vgg": TinyVGG,
}


def _randomize_statistics(module: Any, generator: Any) -> None:
    """Give normalisation layers non-trivial parameters, as a trained network has.

    Fresh BatchNorm is the identity in eval mode (mean 0, var 1, weight 1, bias 0), which would hide
    any mistake in folding it; fresh ConvNeXt layer scale is 1e-6, which would hide the blocks.
    """

    def uniform(t: Any, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    def normal(t: Any, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=generator) * std)

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                normal(m.running_mean, 0.2)
                uniform(m.running_var, 0.5, 2.0)
                uniform(m.weight, 0.5, 1.5)
                normal(m.bias, 0.1)
            elif isinstance(m, nn.LayerNorm):
                uniform(m.weight, 0.5, 1.5)
                normal(m.bias, 0.1)
            elif isinstance(m, ConvNeXtBlock):
                uniform(m.gamma, 0.1, 1.0)


def build(name: str, *, seed: int = 0) -> Any:
    """Architecture ``name`` (a key of ``ARCHITECTURES``) with weights from ``seed``, in eval mode.

    Uses a forked global RNG, so building does not disturb the caller's ``torch`` random state.
    """
    _require_torch()
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}"
        ) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = cls()
    _randomize_statistics(module, torch.Generator().manual_seed(seed + 1))
    return module.eval()


def export(
    module: Any,
    path: str | Path,
    *,
    opset: int,
    dynamic_batch: bool = True,
    input_shape: Sequence[int] = INPUT_SHAPE,
) -> Path:
    """Export ``module`` with the TorchScript exporter; input ``input``, output ``output``.

    With ``dynamic_batch`` the first axis of both is the symbolic ``batch``. The module must be in
    eval mode (exporting a training-mode module would bake batch statistics and dropout
    differently); it is not modified.
    """
    _require_torch()
    if module.training:
        raise ValueError("export() needs a module in eval mode; call .eval() first")
    path = Path(path)
    example = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
    dynamic_axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # The legacy exporter is deprecated in favour of dynamo=True; it is the one we want here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return path
