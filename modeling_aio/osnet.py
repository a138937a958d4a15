"""OSNet-AIN-style person ReID CNN (Zhou et al., ICCV 2019 / TPAMI 2021) in the exact layout of Intel Open Model
Zoo's `person-reidentification-retail-0267` (Apache-2.0), so its weights load by name.

AIO uses it as a pretrained image tokenizer: its last feature map (stride 16) pooled to a small grid, plus its
256-d global ReID embedding, become the image tokens that the frozen shared encoder fuses. Module names mirror the
ONNX initializer names (`conv2.0.conv2b.1.conv1.weight`, `conv2.1.gate.gn.weight`, ...).
This file imports only torch so that it travels inside checkpoints for remote-code loading.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvLayer(nn.Module):
    """Convolution + normalisation + ReLU; `instance_norm` for the style-invariant stem."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, instance_norm=False,
                 relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.InstanceNorm2d(cout, affine=True) if instance_norm else nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


class LightConv3x3(nn.Module):
    """1x1 pointwise then 3x3 depthwise convolution, BN, ReLU: OSNet's lite 3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Aggregation gate shared by the four streams: pooled channel descriptor -> (FC-ReLU-FC | GroupNorm) -> sigmoid."""

    def __init__(self, channels: int, group_norm: bool, reduction: int = 16):
        super().__init__()
        if group_norm:
            self.gn = nn.GroupNorm(16, channels, eps=1e-9)  # the ONNX graph's MeanVarianceNormalization epsilon
        else:
            self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
            self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        if hasattr(self, "gn"):
            weights = self.gn(pooled)
        else:
            weights = self.fc2(torch.relu(self.fc1(pooled)))
        return x * torch.sigmoid(weights)


class OSBlock(nn.Module):
    """Omni-scale residual block: four streams of 1-4 lite 3x3 convolutions fused by a shared channel gate."""

    def __init__(self, cin: int, cout: int, group_norm_gate: bool):
        super().__init__()
        mid = cout // 4
        self.conv1 = ConvLayer(cin, mid, 1)
        self.conv2a = LightConv3x3(mid)
        self.conv2b = nn.Sequential(*[LightConv3x3(mid) for _ in range(2)])
        self.conv2c = nn.Sequential(*[LightConv3x3(mid) for _ in range(3)])
        self.conv2d = nn.Sequential(*[LightConv3x3(mid) for _ in range(4)])
        self.gate = ChannelGate(mid, group_norm_gate)
        self.conv3 = ConvLayer(mid, cout, 1, relu=False)
        self.downsample = ConvLayer(cin, cout, 1, relu=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = sum(self.gate(stream(x1)) for stream in (self.conv2a, self.conv2b, self.conv2c, self.conv2d))
        identity = self.downsample(x) if self.downsample is not None else x
        return torch.relu(self.conv3(x2) + identity)


def _stage(cin: int, cout: int, transition: bool) -> nn.Sequential:
    layers = [OSBlock(cin, cout, group_norm_gate=False), OSBlock(cout, cout, group_norm_gate=True)]
    if transition:
        layers.append(nn.Sequential(ConvLayer(cout, cout, 1), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


class OSNet(nn.Module):
    """OSNet x0.5 with instance-normalised input and stem; `forward` returns the stride-16 feature map (B, 256,
    H/16, W/16) and the 256-d ReID embedding (depthwise global pooling, FC, BN, PReLU) of 256x128 inputs."""

    channels = (32, 128, 192, 256)

    def __init__(self, feature_size: tuple[int, int] = (16, 8)):
        super().__init__()
        c0, c1, c2, c3 = self.channels
        self.in_first = nn.InstanceNorm2d(3, affine=True)
        self.conv1 = ConvLayer(3, c0, 7, stride=2, padding=3, instance_norm=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(c0, c1, transition=True)
        self.conv3 = _stage(c1, c2, transition=True)
        self.conv4 = _stage(c2, c3, transition=False)
        self.conv5 = ConvLayer(c3, c3, 1)
        self.global_avgpool = nn.Conv2d(c3, c3, feature_size, groups=c3)
        self.fc = nn.Sequential(nn.Linear(c3, c3), nn.BatchNorm1d(c3), nn.PReLU())

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(self.in_first(pixel_values)))
        feature_map = self.conv5(self.conv4(self.conv3(self.conv2(x))))
        embedding = self.fc(self.global_avgpool(feature_map).flatten(1))
        return feature_map, embedding


__all__ = ["OSNet"]
