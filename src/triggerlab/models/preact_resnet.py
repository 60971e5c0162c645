"""PreAct-ResNet-18 (He et al., 2016, "Identity Mappings in Deep Residual Networks"), CIFAR form:
the model of the BackdoorBench leaderboard. Batch norm and ReLU come before each convolution;
a 3x3 stem, no max-pool, four stages of two blocks, average pooling, one linear layer.

As BackdoorBench builds it: 1x1 convolution shortcuts without batch norm, and no batch
norm or ReLU after the last block (the pre-activation paper adds one; the leaderboard's
model does not). Its ``AvgPool2d(4)`` is global pooling at 32x32; adaptive pooling here
gives the same there and also accepts other sizes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from triggerlab.models.resnet_cifar import StagedResNet, resnet18_stages


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(StagedResNet):
    def __init__(
        self, in_channels: int, image_size: tuple[int, int], num_outputs: int, width: int = 64
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        stages, in_planes = resnet18_stages(PreActBlock, width)
        self.add_stages(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.conv1(x))
        return self.fc(torch.flatten(self.pool(out), 1))
