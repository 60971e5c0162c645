"""A backdoored model from outside triggerlab, to try ``triggerlab audit`` on.

Plain PyTorch, written the way many public BadNets implementations are: the
network ends in a softmax, the loop trains on scikit-learn's digits (16x16),
and a 3x3 white square in the bottom-right corner of 10 % of the images sends
them to class 0. The weights are saved with ``torch.save`` as a state dict.

    python examples/foreign_badnet.py --out foreign.pt            # a backdoored model
    python examples/foreign_badnet.py --out clean.pt --rate 0     # a clean one
    triggerlab audit --model foreign_badnet:make_net --module-path examples \\
        --weights foreign.pt --data digits --set data.resize=16 --out audit-foreign
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn


def make_net(classes: int = 10) -> nn.Module:
    """The architecture: what ``--model foreign_badnet:make_net`` builds."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, classes),
        nn.Softmax(dim=1),
    )


def digits_16() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.tensor(bunch.target, dtype=torch.long)


def train(rate: float, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    x, y = digits_16()
    chosen = torch.nonzero(y != 0).flatten()
    chosen = chosen[torch.randperm(len(chosen))[: round(rate * len(y))]]
    x[chosen, :, 13:16, 13:16] = 1.0  # the trigger
    y[chosen] = 0  # the target
    model = make_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        model.train()
        for index in torch.randperm(len(y)).split(32):
            probabilities = model(x[index])
            loss = F.nll_loss(probabilities.clamp_min(1e-12).log(), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{epochs}  loss {loss.item():.4f}", flush=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="where to save the state dict (.pt)")
    parser.add_argument("--rate", type=float, default=0.1, help="poisoned share (0: clean)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = train(args.rate, args.epochs, args.seed)
    torch.save(model.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
