"""torch.optim's Adam and SGD-with-momentum updates written out on stacked tensors: the leading
axis holds the members of a stack, each with its own learning rate (and momentum), which one
``torch.optim`` optimiser cannot give them. Stacked models (``stacked.py``) and stacked heads on
cached features (``heads.py``) both step with these; the caller adds L2 weight decay to the
gradient first, as ``torch.optim`` does."""

from __future__ import annotations

import math

import torch

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which make_optimizer keeps
ADAM_EPS = 1e-8


def adam_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    lr: torch.Tensor,
    step: int,
) -> None:
    """Adam's ``step``-th update (1-based) in place, with ``lr`` broadcast over the members."""
    beta1, beta2 = ADAM_BETAS
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denominator = exp_avg_sq.sqrt().div_(math.sqrt(1 - beta2**step)).add_(ADAM_EPS)
    param.addcdiv_(exp_avg * (lr / (1 - beta1**step)), denominator, value=-1.0)


def momentum_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    buffer: torch.Tensor,
    momentum: torch.Tensor | float,
    lr: torch.Tensor,
    first: bool,
) -> None:
    """SGD with momentum in place: the buffer starts as the first gradient (as torch's), so a
    member without momentum steps along its gradient."""
    if first:
        buffer.copy_(grad)
    else:
        buffer.mul_(momentum).add_(grad)
    param.sub_(lr * buffer)
