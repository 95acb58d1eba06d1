"""A ResNet-18-family network for small images (CIFAR-style stem).

3×3 stride-1 stem without max-pool, four stages of basic blocks (strides 1, 2, 2, 2),
global average pooling and a linear classifier. Every ReLU is its own ``nn.ReLU``
module so that guided backpropagation can switch its backward rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cambench.models.normalization import Normalize


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet for small inputs; ``blocks=(2, 2, 2, 2)`` and ``width=64`` is ResNet-18."""

    default_target_layer = "layer4"

    def __init__(
        self,
        num_classes: int,
        width: int = 16,
        blocks: Sequence[int] = (2, 2, 2, 2),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be four positive integers, got {list(blocks)}")
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        channels = [width, 2 * width, 4 * width, 8 * width]
        in_channels = width
        for i, (n_blocks, out_channels) in enumerate(zip(blocks, channels, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(in_channels, out_channels, stride)]
            stage += [BasicBlock(out_channels, out_channels, 1) for _ in range(n_blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            in_channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (B, C, h, w)."""
        x = self.stem(self.normalize(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))
