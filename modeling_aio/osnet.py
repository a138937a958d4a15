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
from torch.nn import functional as F


def _channels_last(features: torch.Tensor) -> torch.Tensor:
    """`features` in channels-last (NHWC) layout. Why: a convolution whose input is channels-last runs oneDNN's NHWC
    kernels, about 1.7x faster for OSNet's 1x1 and depthwise convolutions on CPU, and returns a channels-last map, so
    one conversion where a trunk starts carries through every stage. (The weights cannot say it for themselves: a
    1x1 or depthwise weight reads as contiguous in either layout.)"""
    return features.contiguous(memory_format=torch.channels_last)


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution that computes `bn(conv(x))` with `bn`'s running statistics (eval mode).

    Why: BatchNorm over OSNet's large early maps is a full pass over memory; folded into the convolution it costs
    nothing. Computed at every call from the live parameters, so nothing cached can go stale, and differentiable, so
    a trunk that trains in eval mode gets the same gradients."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _conv_bn(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module) -> torch.Tensor:
    """`norm(conv(x))`: folded into one convolution when `norm` is a BatchNorm using its running statistics."""
    if not isinstance(norm, nn.BatchNorm2d) or norm.training or norm.running_var is None:
        return norm(conv(x))
    weight, bias = _folded(conv, norm)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class ConvLayer(nn.Module):
    """Convolution + normalisation + ReLU; `instance_norm` for the style-invariant stem."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, instance_norm=False,
                 relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.InstanceNorm2d(cout, affine=True) if instance_norm else nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _conv_bn(x, self.conv, self.bn)
        return x.relu_() if self.relu else x  # in place: see OSBlock.forward


class LightConv3x3(nn.Module):
    """1x1 pointwise then 3x3 depthwise convolution, BN, ReLU: OSNet's lite 3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_bn(self.conv1(x), self.conv2, self.bn).relu_()  # in place: see OSBlock.forward


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
        """The ReLUs and sums here and in the convolution layers run in place on the tensor just computed: a new
        output over these large maps costs fresh memory pages at every call (eager PyTorch 27% faster, float32 and
        bf16 alike), and no backward reads a tensor overwritten (a convolution's, normalisation's or product's
        output), so gradients are unchanged."""
        x1 = self.conv1(x)
        x2 = self.gate(self.conv2a(x1))
        for stream in (self.conv2b, self.conv2c, self.conv2d):
            x2 = x2.add_(self.gate(stream(x1)))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.conv3(x2).add_(identity).relu_()


def _stage(cin: int, cout: int, transition: bool) -> nn.Sequential:
    layers = [OSBlock(cin, cout, group_norm_gate=False), OSBlock(cout, cout, group_norm_gate=True)]
    if transition:
        layers.append(nn.Sequential(ConvLayer(cout, cout, 1), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


class OSNet(nn.Module):
    """OSNet with instance-normalised input and stem, x0.5 by default (0267's widths); `forward` returns the
    stride-16 feature map (B, channels[-1], H/16, W/16) and the 256-d ReID embedding (depthwise global pooling, FC,
    BN, PReLU) of 256x128 inputs. `widened` makes a wider copy that computes the same function."""

    channels = (32, 128, 192, 256)
    embedding_size = 256

    def __init__(self, feature_size: tuple[int, int] = (16, 8), channels: tuple[int, int, int, int] | None = None,
                 skipped_blocks: tuple[str, ...] = ()):
        super().__init__()
        if channels is not None:
            self.channels = tuple(int(c) for c in channels)
        c0, c1, c2, c3 = self.channels
        if any(c % 64 for c in (c1, c2, c3)):
            raise ValueError(f"OSNet `channels` {self.channels}: the block widths must be multiples of 64 (the gates "
                             "split a quarter of them into 16 groups).")
        self.in_first = nn.InstanceNorm2d(3, affine=True)
        self.conv1 = ConvLayer(3, c0, 7, stride=2, padding=3, instance_norm=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(c0, c1, transition=True)
        self.conv3 = _stage(c1, c2, transition=True)
        self.conv4 = _stage(c2, c3, transition=False)
        self.conv5 = ConvLayer(c3, c3, 1)
        self.global_avgpool = nn.Conv2d(c3, c3, feature_size, groups=c3)
        self.fc = nn.Sequential(nn.Linear(c3, self.embedding_size), nn.BatchNorm1d(self.embedding_size), nn.PReLU())
        self.skipped_blocks: tuple[str, ...] = ()
        self.skip_blocks(skipped_blocks)

    #: The omni-scale blocks that `skip_blocks` can leave out: each stage's second, which keeps its width.
    skippable_blocks: tuple[str, ...] = ("conv2.1", "conv3.1", "conv4.1")

    def skip_blocks(self, names: tuple[str, ...] | list[str]) -> None:
        """Leaves out the residual blocks `names` (of `skippable_blocks`), in place: each becomes an identity, so
        the other modules keep their names and weights. Why: a shallower, faster trunk for the fast RGB gallery
        encoder, distilled without them (conv3.1 and conv4.1 out ran x1.17 in int8 but cost 6.8 Rank-1 at CPU
        step counts: docs/experiments.md, fourteenth session)."""
        for name in names:
            if name not in self.skippable_blocks:
                raise ValueError(f"OSNet block {name!r} cannot be skipped; expected one of "
                                 f"{', '.join(self.skippable_blocks)}.")
            stage, index = name.split(".")
            getattr(self, stage)[int(index)] = nn.Identity()
        self.skipped_blocks = tuple(sorted({*self.skipped_blocks, *names}))

    #: The stages a feature map passes through after the stem, in order: `features_before` / `feature_map_from`
    #: split the trunk at one of them, so that a caller can cache what the stages below compute.
    stages: tuple[str, ...] = ("conv2", "conv3", "conv4", "conv5")

    def _stage_index(self, stage: str) -> int:
        if stage not in self.stages:
            raise ValueError(f"OSNet stage {stage!r}: expected one of {', '.join(self.stages)}.")
        return self.stages.index(stage)

    def features_before(self, pixel_values: torch.Tensor, stage: str) -> torch.Tensor:
        """What `stage` reads: the stem and every stage below it applied to `pixel_values`."""
        x = self.maxpool(_channels_last(self.conv1(self.in_first(pixel_values))))
        for name in self.stages[:self._stage_index(stage)]:
            x = getattr(self, name)(x)
        return x

    def feature_map_from(self, features: torch.Tensor, stage: str) -> torch.Tensor:
        """The stride-16 feature map from what `stage` reads (`features_before`): `stage` and those above it."""
        for name in self.stages[self._stage_index(stage):]:
            features = getattr(self, name)(features)
        return features

    def embedding_of(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The 256-d ReID embedding of a feature map (`forward`'s second output)."""
        return self.fc(self.global_avgpool(feature_map).flatten(1))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.feature_map_from(self.features_before(pixel_values, "conv2"), "conv2")
        return feature_map, self.embedding_of(feature_map)

    def widened(self, factor: int = 2, seed: int = 0) -> OSNet:
        """A copy `factor` times as wide (x0.5 -> x1.0 for 2) that computes the same embedding and, channel for
        channel repeated, the same feature map (Net2WiderNet, Chen et al., ICLR 2016).

        Why: distilling the x1.0 teacher 0277 into the x0.5 trunk levels off below the teacher; a wider student
        keeps everything the trunk knows at step 0 and has the teacher's capacity (at CPU step counts it distilled
        no better: see `trunk_distillation`). Every channel c becomes channels
        c*factor .. c*factor+factor-1 (interleaved, so GroupNorm groups hold copies of the same channels); a layer
        reading a repeated input splits each weight among the copies in random shares that sum to it, which keeps
        the function exact while giving the copies different gradients.
        """
        generator = torch.Generator().manual_seed(seed)
        wide = OSNet(feature_size=tuple(self.global_avgpool.kernel_size), channels=tuple(c * factor for c in self.channels))
        wide_state = wide.state_dict()
        new_state = {}
        for name, value in self.state_dict().items():
            target = wide_state[name]
            value = value.clone()
            if value.dim() == 0 or target.shape == value.shape:
                new_state[name] = value
                continue
            # outputs (dim 0) repeated where the wide layer has more of them
            if target.shape[0] != value.shape[0]:
                value = value.repeat_interleave(factor, dim=0)
            # inputs (dim 1 of a dense conv / linear; a depthwise conv's is 1 and stays) repeated, split among copies
            if value.dim() >= 2 and target.shape[1] != value.shape[1]:
                shares = torch.rand(value.shape[0], value.shape[1], factor, *value.shape[2:], generator=generator)
                shares = 0.5 / factor + shares
                shares = shares / shares.sum(dim=2, keepdim=True)
                value = (value.unsqueeze(2) * shares).flatten(1, 2)
            if tuple(value.shape) != tuple(target.shape):
                raise AssertionError(f"{name}: {tuple(value.shape)} vs {tuple(target.shape)}")
            new_state[name] = value
        wide.load_state_dict(new_state)
        return wide.train(self.training)


class OSNetTop(nn.Module):
    """An OSNet's stages from `first_stage` up, alone: a trunk that branches from another OSNet's lower stages
    (`features_before`) and so costs a photo only what it adds. Module names are OSNet's, so its state dict is the
    whole trunk's minus the stem and lower stages."""

    def __init__(self, first_stage: str, channels: tuple[int, int, int, int] = OSNet.channels):
        super().__init__()
        whole = OSNet(channels=channels)
        self.first_stage = first_stage
        self.stages = whole.stages[whole._stage_index(first_stage):]
        for name in self.stages:
            setattr(self, name, getattr(whole, name))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The stride-16 feature map from what `first_stage` reads."""
        features = _channels_last(features)
        for name in self.stages:
            features = getattr(self, name)(features)
        return features


__all__ = ["OSNet", "OSNetTop"]
