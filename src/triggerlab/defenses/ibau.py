"""Implicit Backdoor Adversarial Unlearning (I-BAU; Zeng, Chen, Park, Mao, Jin and Jia, ICLR 2022).

A minimax problem on the defender's clean data: the inner problem finds a
universal perturbation that fools the model most, the outer one trains the
model to classify clean images carrying that perturbation correctly. Each of
``rounds`` rounds, as in the authors' code:

1. a perturbation ``delta`` (one image, zero at first) takes one SGD step (lr
   10) per clean batch on ``-CE(model(x + delta), model's own label) +
   0.001 |delta|^2``, then is projected into an L2 ball;
2. for each clean batch, the model takes one outer step (Adam) along the
   implicit hypergradient of ``CE(model(x'), y)``, where a ``portion`` of the
   batch carries ``delta``; the hypergradient counts how ``delta``, a fixed
   point of gradient descent on the inner loss (step 0.1), moves with the
   weights, through ``K`` fixed-point iterations (the authors' ``hypergrad``
   package's ``fixed_point``, rewritten here with ``torch.autograd.grad``
   because that package is not published on PyPI).

The L2 bound is the authors' 10 on normalised 32x32x3 CIFAR inputs; stated
here as ``bound`` times the norm of an all-ones image, with ``bound = 10 /
sqrt(3072) = 0.18``, so it scales with the input size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from triggerlab.catalogue.defenses import IbauSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome
from triggerlab.train.devices import model_memory_format, to_input

INNER_STEP = 0.1  # the gradient-descent map whose fixed point is the perturbation
PERTURBATION_LR = 10.0
REGULARISATION = 1e-3


def universal_perturbation(
    model: nn.Module, batches: list[torch.Tensor], radius: float
) -> torch.Tensor:
    """One pass of the inner maximisation over the clean batches, projected into the ball."""
    delta = torch.zeros_like(batches[0][:1], requires_grad=True)
    optimizer = torch.optim.SGD([delta], lr=PERTURBATION_LR)
    for x in batches:
        with torch.no_grad():
            own = model(x).argmax(dim=1)
        loss = -F.cross_entropy(model(x + delta), own) + REGULARISATION * delta.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return delta * min(1.0, radius / max(float(delta.norm()), 1e-12))


def fixed_point_hypergradient(
    inner: torch.Tensor,
    params: list[nn.Parameter],
    iterations: int,
    inner_loss: Callable[[torch.Tensor], torch.Tensor],
    outer_loss: Callable[[torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """d outer / d params when ``inner`` is a fixed point of ``w - INNER_STEP * grad inner_loss``.

    Solves ``v = J^T v + d outer / d w`` by ``iterations`` fixed-point steps, then adds
    ``(d map / d params)^T v`` to the direct gradient.
    """
    w = inner.detach().requires_grad_(True)
    outer = outer_loss(w)
    direct = torch.autograd.grad(outer, [w, *params], allow_unused=True)
    outer_w = direct[0] if direct[0] is not None else torch.zeros_like(w)
    (inner_grad,) = torch.autograd.grad(inner_loss(w), w, create_graph=True)
    mapped = w - INNER_STEP * inner_grad
    v = torch.zeros_like(w)
    for _ in range(iterations):
        (jv,) = torch.autograd.grad(mapped, w, grad_outputs=v, retain_graph=True)
        v = jv + outer_w
    through = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
    return [
        (t if t is not None else torch.zeros_like(p)) + (d if d is not None else 0)
        for p, t, d in zip(params, through, direct[1:], strict=True)
    ]


def _carrier_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, marked: torch.Tensor, d: torch.Tensor
) -> torch.Tensor:
    """The outer loss: the batch, its ``marked`` images carrying the perturbation ``d``."""
    return F.cross_entropy(model(x + marked * d), y)


def ibau(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    rounds: int,
    iterations: int,
    batch_size: int,
    lr: float,
    bound: float,
    portion: float,
    device: torch.device,
    generator: torch.Generator,
) -> list[float]:
    """Unlearn in place; returns the perturbation's L2 norm of each round."""
    model.eval()
    layout = model_memory_format(model)
    order = torch.randperm(images.shape[0], generator=generator)
    chunks = [order[s : s + batch_size] for s in range(0, images.shape[0], batch_size)]
    batches = [to_input(images[c], device, layout) for c in chunks]
    targets = [labels[c].to(device) for c in chunks]
    radius = bound * math.sqrt(batches[0][0].numel())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    norms = []

    def inner_loss(delta: torch.Tensor) -> torch.Tensor:
        out = model(batches[0] + delta)
        return -F.cross_entropy(out, targets[0]) + REGULARISATION * delta.pow(2).sum()

    for _ in range(rounds):
        delta = universal_perturbation(model, batches, radius)
        norms.append(float(delta.norm()))
        for x, y in zip(batches, targets, strict=True):
            carriers = max(1, int(x.shape[0] * portion))
            chosen = torch.randperm(x.shape[0], generator=generator)[:carriers].to(device)
            marked = torch.zeros(x.shape[0], 1, 1, 1, device=device)
            marked[chosen] = 1.0
            outer_loss = partial(_carrier_loss, model, x, y, marked)
            grads = fixed_point_hypergradient(delta, params, iterations, inner_loss, outer_loss)
            optimizer.zero_grad(set_to_none=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = torch.empty_like(p).copy_(g)  # in the parameter's memory layout
            optimizer.step()
    return norms


def run_ibau(spec: IbauSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    clean = inputs.clean
    norms = ibau(
        inputs.model,
        clean.images,
        clean.targets,
        rounds=spec.rounds,
        iterations=spec.fixed_point_iterations,
        batch_size=spec.batch_size,
        lr=spec.lr,
        bound=spec.bound,
        portion=spec.portion,
        device=inputs.device,
        generator=inputs.generator,
    )
    report = {"clean_samples": len(clean), "perturbation_norms": norms}
    return DefenseOutcome(report, repaired=True)
