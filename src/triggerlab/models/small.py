"""Small CNNs written out plainly: the BadNets reference network and LeNet-5."""

from __future__ import annotations

import torch
from torch import nn


def _flat_features(features: nn.Module, in_channels: int, image_size: tuple[int, int]) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, in_channels, *image_size)).numel()


class BadNetCNN(nn.Module):
    """The network of the public BadNets implementation reference 002 builds on.

    conv 5x5 (16) - ReLU - avg-pool 2 - conv 5x5 (32) - ReLU - avg-pool 2 -
    FC 512 - ReLU - FC outputs. It returns logits: the loss applies its own
    softmax, so none is applied here.

    ``output_softmax`` reproduces a quirk of reference 002's code (and of the
    implementation it builds on): the network ends in a softmax and its
    cross-entropy applies log-softmax again, so training minimises the cross-entropy
    of ``softmax(softmax(z))``, whose gradient stays small once the first softmax
    saturates (docs/references.md, reference 002). Off by default: it is the
    reference's defect, offered only to measure what it did.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_outputs: int,
        width: int = 16,
        hidden: int = 512,
        output_softmax: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(output_softmax, bool):
            raise TypeError(f"output_softmax must be true or false, got {output_softmax!r}")
        self.output_softmax = output_softmax
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
        )
        flat = _flat_features(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))
        return logits.softmax(dim=-1) if self.output_softmax else logits


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, the usual modern reading.

    conv 5x5 (6, padded to keep 28x28) - pool - conv 5x5 (16) - pool -
    FC 120 - FC 84 - FC outputs.
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_outputs: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        flat = _flat_features(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
