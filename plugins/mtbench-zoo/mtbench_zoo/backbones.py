"""Feature extractors: Conv-4 (Vinyals et al. 2016; Snell et al. 2017), ResNet-12 and a small MLP for tests."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mtbench import hookimpl


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """conv3x3 -> BatchNorm -> ReLU -> 2x2 max-pool (or stride-2 conv when ``pool`` is False)."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, stride=1 if pool else 2)
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """4 x [conv3x3 64, BatchNorm, ReLU, max-pool]; 28x28 input gives a 64-d feature.

    On the CPU the network runs in channels-last layout, which is about 1.6x faster for these
    small convolutions with oneDNN (measured on 2 cores: 1,985 vs 1,218 images/s fwd+bwd at batch 80).
    """

    def __init__(self, in_shape: tuple[int, ...], hidden: int = 64, blocks: int = 4, pool: bool = True) -> None:
        super().__init__()
        channels = [in_shape[0], *([hidden] * blocks)]
        self.features = nn.Sequential(*(conv_block(a, b, pool) for a, b in zip(channels, channels[1:])))
        with torch.no_grad():
            self.out_dim = int(self.features(torch.zeros(1, *in_shape)).numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.features(x).flatten(1)


class MLP(nn.Module):
    """Flatten -> [Linear, ReLU] x len(hidden); tiny and fast for tests and synthetic data."""

    def __init__(self, in_shape: tuple[int, ...], hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        dims = [int(torch.tensor(in_shape).prod()), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResBlock12(nn.Module):
    """3 x [conv3x3, BatchNorm, LeakyReLU(0.1)] (no ReLU after the third BN) + 1x1-conv/BN shortcut, add,
    LeakyReLU, 2x2 max-pool: the ResNet-12 block of Oreshkin et al. 2018 (TADAM) and Lee et al. 2019
    (MetaOptNet), without their DropBlock regularisation."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, a in enumerate((c_in, c_out, c_out)):
            layers += [nn.Conv2d(a, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            if i < 2:
                layers.append(nn.LeakyReLU(0.1, inplace=True))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """Four :class:`ResBlock12` stages, then global average pooling: an 84x84 input gives 5x5 maps and a
    ``widths[-1]``-d feature. ``widths`` (64, 160, 320, 640) is the TADAM/MetaOptNet/RFS variant
    (12,424,320 parameters); (64, 128, 256, 512) is the narrower one of Meta-Baseline (Chen et al. 2021)."""

    def __init__(self, in_shape: tuple[int, ...], widths: tuple[int, ...] = (64, 160, 320, 640)) -> None:
        super().__init__()
        channels = [in_shape[0], *widths]
        self.features = nn.Sequential(*(ResBlock12(a, b) for a, b in zip(channels, channels[1:])),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.features(x)


def _conv4(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    model = Conv4(in_shape, **kwargs)
    return model.to(memory_format=torch.channels_last)


def _conv4_strided(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """The MAML paper's Omniglot variant: stride-2 convolutions instead of max-pooling (Finn et al. 2017)."""
    return Conv4(in_shape, pool=False, **kwargs).to(memory_format=torch.channels_last)


def _conv4_maml(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Strided Conv-4 with batch-statistics norms written with plain ops, for gradient-based meta-learning.
    Default memory layout: channels-last kernels cost float32 precision of the meta-gradient (issue 11)."""
    from .functional import MetaConv4
    return MetaConv4(in_shape, **kwargs)


def _conv4_maml_channels_last(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """``conv4-maml`` in channels-last layout on the CPU: faster oneDNN kernels, float32 meta-gradient
    error around 1e-3 instead of 3e-5 (an explicit choice, recorded as the backbone's name)."""
    from .functional import MetaConv4
    return MetaConv4(in_shape, channels_last=True, **kwargs).to(memory_format=torch.channels_last)


def _conv4_84(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """The miniImageNet Conv-4 (Vinyals et al. 2016; Snell et al. 2017): 4 x [conv3x3 64, BN, ReLU, 2x2
    max-pool]; an 84x84 RGB input leaves 64 maps of 5x5, flattened to a 1600-d feature (113,088 parameters)."""
    if len(in_shape) != 3 or min(in_shape[1:]) < 16:
        raise ValueError(f"conv4-84 needs [channels, height, width] images of at least 16 pixels, got {in_shape}")
    return Conv4(in_shape, **kwargs).to(memory_format=torch.channels_last)


def _resnet12(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    return ResNet12(in_shape, **kwargs).to(memory_format=torch.channels_last)


def _resnet12_narrow(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    return ResNet12(in_shape, widths=(64, 128, 256, 512), **kwargs).to(memory_format=torch.channels_last)


def _sine_mlp(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Finn et al. 2017 sinusoid network body: 1-40-40 with ReLU (the head adds the final 40-1 layer)."""
    return MLP(in_shape, hidden=(40, 40))


BACKBONES: dict[str, Callable[..., nn.Module]] = {"conv4": _conv4, "conv4-strided": _conv4_strided, "mlp": MLP,
                                                  "conv4-maml": _conv4_maml, "sine-mlp": _sine_mlp,
                                                  "conv4-maml-channels-last": _conv4_maml_channels_last,
                                                  "conv4-84": _conv4_84, "resnet12": _resnet12,
                                                  "resnet12-narrow": _resnet12_narrow}


@hookimpl
def register_backbones(register):
    for name, builder in BACKBONES.items():
        register(name, builder)
