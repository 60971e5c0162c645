"""ResNet-18 in the CIFAR form (He et al., 2016): 3x3 stem, no max-pool, four stages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS_PER_STAGE = 2
_FLAT_BLOCK = re.compile(r"layers\.(\d+)\.")


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
) -> tuple[list[nn.Sequential], int]:
    """ResNet-18's four stages of two blocks (``block(in_planes, planes, stride)``), widths
    ``width`` to ``8 * width``, halving the resolution from the second; and the output width."""
    stages = []
    in_planes = width
    for stage, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
        blocks: list[nn.Module] = []
        for index in range(BLOCKS_PER_STAGE):
            blocks.append(block(in_planes, planes, 2 if stage > 0 and index == 0 else 1))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return stages, in_planes


class StagedResNet(nn.Module):
    """A ResNet whose stages are the attributes ``layer1`` to ``layer4``, as torchvision and
    BackdoorBench name them: defences that act on a stage's output (NAD's attention) find them.

    Until stages existed the eight blocks were one ``layers`` sequence; a state dict saved
    then (keys ``layers.<i>.``) still loads: its keys are renamed to ``layer<s>.<j>.``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_pre_hook(_rename_flat_blocks)

    def add_stages(self, stages: list[nn.Sequential]) -> None:
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def stages(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def renamed_flat_blocks(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``state`` with keys of the former flat block sequence (``<prefix>layers.<i>.``) renamed
    to the stage that block now belongs to (``<prefix>layer<i // 2 + 1>.<i % 2>.``)."""
    renamed = {}
    for key, value in state.items():
        match = _FLAT_BLOCK.match(key, len(prefix)) if key.startswith(prefix) else None
        if match is not None:
            stage, index = divmod(int(match.group(1)), BLOCKS_PER_STAGE)
            key = f"{prefix}layer{stage + 1}.{index}.{key[match.end() :]}"
        renamed[key] = value
    return renamed


def _rename_flat_blocks(
    _module: nn.Module, state: dict[str, Any], prefix: str, *_args: object
) -> None:
    """load_state_dict's pre-hook: rename, in place, the keys of a state dict saved with the
    flat block sequence."""
    renamed = renamed_flat_blocks(state, prefix)
    if renamed.keys() != state.keys():
        state.clear()
        state.update(renamed)


class CifarResNet18(StagedResNet):
    def __init__(
        self, in_channels: int, image_size: tuple[int, int], num_outputs: int, width: int = 64
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, in_planes = resnet18_stages(BasicBlock, width)
        self.add_stages(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))
