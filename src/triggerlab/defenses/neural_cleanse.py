"""Neural Cleanse (Wang et al., 2019): reverse-engineer a trigger per class, flag outliers.

For each class t, optimise a mask ``m`` and a pattern ``p`` (sigmoid-parametrised,
in [0, 1]) so that clean images stamped with them, ``x' = (1 - m) x + m p``, are
classified as t, while keeping the mask small:
``loss = cross_entropy(model(x'), t) + cost * mean(m)``. A backdoor target
needs a far smaller mask than the other classes. With the masks' L1 norms,
``anomaly index = |l1 - median| / (1.4826 * MAD)``; a class with a below-median
norm and an index above 2 is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, RetrainingSpec
from triggerlab.devices import to_input
from triggerlab.plots.run_figures import reversed_triggers_png

CONSISTENCY = 1.4826  # makes the median absolute deviation estimate a normal distribution's std


@dataclass
class ReversedTrigger:
    target: int
    mask: torch.Tensor  # [1, H, W] in [0, 1]
    pattern: torch.Tensor  # [C, H, W] in [0, 1]
    l1: float
    success: float  # share of clean non-target images it sends to the target

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask, pattern = self.mask.to(x), self.pattern.to(x)
        return (1 - mask) * x + mask * pattern


def reverse_trigger(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: int,
    steps: int,
    cost: float,
    device: torch.device,
    generator: torch.Generator,
    batch_size: int = 64,
    lr: float = 0.1,
) -> ReversedTrigger:
    """Optimise the smallest mask and pattern that turn clean images into class ``target``."""
    _, channels, height, width = images.shape
    mask_logit = torch.full((1, height, width), -3.0, device=device, requires_grad=True)
    pattern_logit = torch.zeros((channels, height, width), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=lr)
    wanted = torch.full((batch_size,), target, device=device)
    model.eval()
    for _ in range(steps):
        index = torch.randint(images.shape[0], (batch_size,), generator=generator)
        x = to_input(images[index], device)
        mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        logits = model((1 - mask) * x + mask * pattern)
        loss = F.cross_entropy(logits, wanted) + cost * mask.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    mask = torch.sigmoid(mask_logit).detach().cpu()
    pattern = torch.sigmoid(pattern_logit).detach().cpu()
    trigger = ReversedTrigger(target, mask, pattern, float(mask.sum()), 0.0)
    others = labels != target
    with torch.no_grad():
        stamped = trigger.apply(to_input(images[others], device).cpu()).to(device)
        trigger.success = float((model(stamped).argmax(dim=1).cpu() == target).float().mean())
    return trigger


def anomaly_indices(norms: torch.Tensor) -> torch.Tensor:
    """``|l1 - median| / (1.4826 * MAD)`` for every class's mask norm."""
    median = _median(norms)
    mad = _median((norms - median).abs()).clamp_min(1e-12)
    return (norms - median).abs() / (CONSISTENCY * mad)


def _median(values: torch.Tensor) -> torch.Tensor:
    """The middle value; the mean of the two middle ones for an even count, unlike torch.median."""
    return torch.quantile(values.double(), 0.5)


def flagged_classes(norms: torch.Tensor, threshold: float = 2.0) -> list[int]:
    """Classes with a mask below the median and an anomaly index above ``threshold``."""
    index = anomaly_indices(norms)
    median = _median(norms)
    return [c for c in range(norms.numel()) if norms[c] < median and index[c] > threshold]


def scan(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    steps: int,
    cost: float,
    device: torch.device,
    generator: torch.Generator,
) -> list[ReversedTrigger]:
    """A reversed trigger for every class, with the model's weights left untouched."""
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        return [
            reverse_trigger(model, images, labels, c, steps, cost, device, generator)
            for c in range(num_classes)
        ]
    finally:
        for p, flag in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(flag)


def unlearning_set(
    images: torch.Tensor, triggers: list[ReversedTrigger], share: float, generator: torch.Generator
) -> torch.Tensor:
    """Clean uint8 images with ``share`` of them stamped by the flagged classes' reversed triggers.

    Their labels stay the true ones, so training on them unlearns the trigger.
    """
    stamped = images.clone()
    chosen = torch.randperm(images.shape[0], generator=generator)[: round(share * images.shape[0])]
    for number, index in enumerate(chosen.tensor_split(len(triggers))):
        x = images[index].float() / 255.0
        stamped[index] = (triggers[number].apply(x) * 255.0).round().clamp(0, 255).byte()
    return stamped


@dataclass
class CleanseScan:
    """A reversed trigger per class, their mask norms, anomaly indices and the flagged classes."""

    triggers: list[ReversedTrigger]
    norms: list[float]
    anomaly_index: list[float]
    flagged: list[int]

    def figure(self, class_names: tuple[str, ...]) -> bytes:
        return reversed_triggers_png(self.triggers, self.anomaly_index, class_names)


def scan_and_flag(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    steps: int,
    cost: float,
    device: torch.device,
    generator: torch.Generator,
) -> CleanseScan:
    """Reverse a trigger for every class and flag the outliers among their mask norms."""
    triggers = scan(model, images, labels, num_classes, steps, cost, device, generator)
    norms = torch.tensor([t.l1 for t in triggers])
    return CleanseScan(
        triggers, norms.tolist(), anomaly_indices(norms).tolist(), flagged_classes(norms)
    )


class NeuralCleanseSpec(RetrainingSpec):
    """Reverse-engineer a trigger per class, flag outliers, and unlearn their triggers."""

    kind: Literal["neural_cleanse"] = "neural_cleanse"
    needs_classes = True
    steps: int = Field(300, ge=1, description="optimisation steps per class")
    cost: float = Field(3.0, gt=0.0, description="weight of the mask's mean in the loss")
    unlearn: bool = Field(True, description="fine-tune with the flagged classes' reversed triggers")

    def run(self, inputs: DefenseInputs) -> DefenseOutcome:
        assert inputs.clean is not None
        clean, task = inputs.clean, inputs.task
        found = scan_and_flag(
            inputs.model,
            clean.images,
            clean.targets,
            task.num_outputs,
            steps=self.steps,
            cost=self.cost,
            device=inputs.device,
            generator=inputs.generator,
        )
        report = {
            "clean_samples": len(clean),
            "l1": found.norms,
            "anomaly_index": found.anomaly_index,
            "reversed_success": [t.success for t in found.triggers],
            "flagged": found.flagged,
        }
        outcome = DefenseOutcome(
            report,
            suspect_classes=found.flagged,
            class_anomaly=found.anomaly_index,
            figures={"reversed_triggers.png": found.figure(task.class_names)},
        )
        if self.unlearn and found.flagged:
            stamped = [found.triggers[c] for c in found.flagged]
            images = unlearning_set(clean.images, stamped, 0.2, inputs.generator)
            self.retrain(inputs, images, clean.targets)
            outcome.repaired = True
            report["epochs"] = self.epochs
        return outcome
