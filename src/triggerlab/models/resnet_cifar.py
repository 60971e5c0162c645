"""ResNet-18 in the CIFAR form (He et al., 2016): 3x3 stem, no max-pool, four stages."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def resnet18_stages(
    block: Callable[[int, int, int], nn.Module], width: int
) -> tuple[nn.Sequential, int]:
    """ResNet-18's four stages of two blocks (``block(in_planes, planes, stride)``), widths
    ``width`` to ``8 * width``, halving the resolution from the second; and the output width."""
    blocks: list[nn.Module] = []
    in_planes = width
    for stage, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for index in range(2):
            blocks.append(block(in_planes, planes, 2 if stage > 0 and index == 0 else 1))
            in_planes = planes
    return nn.Sequential(*blocks), in_planes


class CifarResNet18(nn.Module):
    def __init__(
        self, in_channels: int, image_size: tuple[int, int], num_outputs: int, width: int = 64
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.layers, in_planes = resnet18_stages(BasicBlock, width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))
