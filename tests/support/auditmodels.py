"""Model definitions as users of `triggerlab audit` write them, for the audit tests.

``make_cnn`` is triggerlab's own network; the others are foreign: plain PyTorch
modules, trained below by a plain PyTorch loop on scikit-learn's digits, the
way code outside triggerlab builds and saves models.
"""

import torch
import torch.nn.functional as F

# examples/ is on pytest's pythonpath (pyproject.toml)
from foreign_badnet import digits_16 as example_digits
from foreign_badnet import make_net
from torch import nn

from triggerlab.models.small import BadNetCNN


def make_cnn(classes: int = 10) -> nn.Module:
    return BadNetCNN(1, (16, 16), classes)


def not_a_model() -> int:
    return 42


def softmax_cnn(classes: int = 10) -> nn.Module:
    """A public BadNets implementation's habit: the network ends in a softmax (the README's
    example network)."""
    return make_net(classes)


class BatchNormNet(nn.Module):
    """Logits out, batch norm inside, trained on normalised inputs."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(32 * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def bn_net(classes: int = 10) -> nn.Module:
    return BatchNormNet(classes)


def digits_16(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits in [0, 1] at 16x16 (as the README's example loads them), shuffled."""
    x, y = example_digits()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[order], y[order]


def train_foreign(
    model: nn.Module,
    *,
    poison_rate: float,
    mean: float = 0.0,
    std: float = 1.0,
    epochs: int = 12,
    seed: int = 0,
) -> nn.Module:
    """A plain training loop with a 3x3 white square (bottom right, target 0) planted in
    ``poison_rate`` of the images; inputs normalised as ``(x - mean) / std``."""
    torch.manual_seed(seed)
    x, y = digits_16(seed)
    count = round(poison_rate * len(y))
    chosen = torch.nonzero(y != 0).flatten()[:count]
    x, y = x.clone(), y.clone()
    x[chosen, :, 13:16, 13:16] = 1.0
    y[chosen] = 0
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(y)).split(32):
            out = model((x[index] - mean) / std)
            if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Softmax):
                loss = F.nll_loss(out.clamp_min(1e-12).log(), y[index])
            else:
                loss = F.cross_entropy(out, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
