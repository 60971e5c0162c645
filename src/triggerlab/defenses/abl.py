"""Anti-Backdoor Learning (ABL; Li, Lyu, Koren, Lyu, Li and Ma, NeurIPS 2021).

A training-time defence: it replaces the run's training with its own, on the
same poisoned training set and from the same initial weights, and needs no
clean data. Backdoored samples are learnt much faster than clean ones, so:

1. **Isolation.** Train for ``isolation_epochs`` with local gradient ascent
   (LGA): the batch loss L is replaced by ``sign(L - gamma) * L``, which
   holds the loss of easy samples near ``gamma`` (0.5) while the backdoor's
   loss falls below it (``isolation_loss: flooding`` is the authors' code's
   default, ``|L - gamma| + gamma``: the same gradient). The ``isolation_ratio``
   (1 %) of training samples with the lowest loss are isolated as suspects.
2. **Fine-tuning** (the authors' ``finetuning_ascent_model``): train on the
   other samples for ``finetune_epochs``, to raise clean accuracy.
3. **Unlearning.** For ``unlearn_epochs``, gradient ascent on the isolated
   samples (minimise ``-CE``) with SGD at ``unlearn_lr`` (5e-4, momentum 0.9).

Isolation and fine-tuning use the run's optimiser and batch size at a
constant rate, ``lr`` (the run's unless set). The rate matters: the authors
isolate with SGD at 0.1, fast enough that the backdoor is learnt before the
clean task; on the digits, Adam at the default 0.002 learns the clean digits
first and isolates no poisoned sample, at 0.01 most of them. Fine-tuning
augments its batches with the run's ``train.augment``; isolation and unlearning
do not, as in the authors' code (bboylyg/ABL: isolation reads the poisoned set
through ``ToTensor`` only, ``data_loader.py:54-56``; ``backdoor_unlearning.py:
159-169`` crops and flips the other samples and not the isolated ones).

The isolated samples are also reported as a poisoned-sample detector (score:
minus the isolation loss).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from triggerlab.catalogue.defenses import AblSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, shuffled_batches
from triggerlab.errors import ConfigError
from triggerlab.train.devices import model_memory_format, to_input
from triggerlab.train.loop import EVAL_BATCH_SIZE, make_optimizer
from triggerlab.train.optimizers import Optimiser

if TYPE_CHECKING:
    from triggerlab.train.augment import Augment


def lga_loss(loss: torch.Tensor, gamma: float) -> torch.Tensor:
    """Local gradient ascent: descend above ``gamma``, ascend below it."""
    return torch.sign(loss - gamma) * loss


def flooding_loss(loss: torch.Tensor, gamma: float) -> torch.Tensor:
    """Flooding, the authors' code's default isolation loss (bboylyg/ABL
    backdoor_isolation.py, ``gradient_ascent_type == 'Flooding'``): ``|L - gamma| + gamma``,
    equal to LGA's gradient above ``gamma`` and its value shifted by ``2 gamma`` below."""
    return (loss - gamma).abs() + gamma


def train_epochs(
    model: nn.Module,
    optimizer: Optimiser,
    images: torch.Tensor,
    targets: torch.Tensor,
    epochs: int,
    inputs: DefenseInputs,
    objective: str,
    gamma: float = 0.0,
    augment: Augment | None = None,
) -> None:
    """``epochs`` passes minimising CE (``descend``), LGA (``lga``), Flooding (``flooding``)
    or -CE (``ascend``)."""
    layout = model_memory_format(model)
    for _ in range(epochs):
        model.train()
        for x, y in shuffled_batches(
            images, targets, inputs.train.batch_size, inputs.device, inputs.generator, layout
        ):
            x = augment(x) if augment is not None else x
            loss = F.cross_entropy(model(x).float(), y)
            if objective == "lga":
                loss = lga_loss(loss, gamma)
            elif objective == "flooding":
                loss = flooding_loss(loss, gamma)
            elif objective == "ascend":
                loss = -loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def sample_losses(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Cross-entropy ``[N]`` of every sample, in evaluation mode, on the CPU."""
    model.eval()
    layout = model_memory_format(model)
    losses = []
    for start in range(0, images.shape[0], EVAL_BATCH_SIZE):
        x = to_input(images[start : start + EVAL_BATCH_SIZE], device, layout)
        y = targets[start : start + EVAL_BATCH_SIZE].to(device)
        losses.append(F.cross_entropy(model(x).float(), y, reduction="none").cpu())
    return torch.cat(losses)


def isolate(losses: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the isolated samples (the lowest losses) and of the others.

    The count is the authors' ``int(N * ratio)`` (bboylyg/ABL ``backdoor_isolation.py:59``),
    but at least one: below ``1 / ratio`` samples the authors isolate none."""
    count = max(1, int(losses.numel() * ratio))
    order = torch.argsort(losses, stable=True)
    return order[:count], order[count:]


def run_abl(spec: AblSpec, inputs: DefenseInputs) -> DefenseOutcome:
    if inputs.fresh_model is None:
        raise ConfigError("defense.kind: abl trains its own model and needs the run's model")
    training = inputs.training
    images, targets = training.images, training.targets
    model = inputs.fresh_model()
    recipe = inputs.train.model_copy(update={"lr": spec.lr or inputs.train.lr})
    optimizer = make_optimizer(recipe, model)
    epochs = spec.isolation_epochs
    objective = spec.isolation_loss
    train_epochs(model, optimizer, images, targets, epochs, inputs, objective, spec.gamma)
    losses = sample_losses(model, images, targets, inputs.device)
    isolated, others = isolate(losses, spec.isolation_ratio)
    if spec.finetune_epochs:
        x, y, epochs = images[others], targets[others], spec.finetune_epochs
        augment = inputs.augment()
        train_epochs(model, optimizer, x, y, epochs, inputs, "descend", augment=augment)
    unlearner = torch.optim.SGD(model.parameters(), lr=spec.unlearn_lr, momentum=0.9)
    x, y, epochs = images[isolated], targets[isolated], spec.unlearn_epochs
    train_epochs(model, unlearner, x, y, epochs, inputs, "ascend")
    inputs.model.load_state_dict(model.state_dict())
    flags = torch.zeros(len(training), dtype=torch.bool)
    flags[isolated] = True
    report = {
        "clean_samples": 0,
        "isolated": int(isolated.numel()),
        "epochs": spec.isolation_epochs + spec.finetune_epochs + spec.unlearn_epochs,
    }
    return DefenseOutcome(report, repaired=True, sample_scores=(-losses.double(), flags))
