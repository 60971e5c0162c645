"""Neural Attention Distillation (NAD; Li, Lyu, Koren, Lyu, Li and Ma, ICLR 2021).

A teacher is the backdoored model fine-tuned on the defender's clean data for
``teacher_epochs``; the backdoored model (the student) is then trained on the
same clean data with cross-entropy plus, for each attention layer i,
``beta_i * AT(student_i, teacher_i)``. The attention map of a feature map F is
``A(F) = sum_c |F_c| ** p`` (p = 2), divided by its L2 norm over the spatial
positions, and AT is the mean squared difference of the two maps, as in the
authors' code. Their layers are the outputs of a ResNet's last three residual
groups with betas 500, 1000 and 1000 (BackdoorBench's CIFAR-10 setting); here
the attention layers are the model's last ``len(betas)`` stages that contain
convolutions (``attention_stages``), so the same rule picks a ResNet's last
groups and a small CNN's last convolutions; a model with fewer such stages
uses the last betas.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from triggerlab.catalogue.defenses import NadSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome
from triggerlab.errors import ConfigError
from triggerlab.train.devices import model_memory_format


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def attention_stages(model: nn.Module, count: int) -> list[nn.Module]:
    """The last ``count`` direct children holding convolutions, descending through a single
    container (``features``) until there are enough, or the convolutions themselves."""
    module = model
    while True:
        holders = [child for child in module.children() if _has_conv(child)]
        if len(holders) >= count or not holders:
            break
        if len(holders) == 1 and not isinstance(holders[0], nn.Conv2d):
            module = holders[0]
            continue
        break
    if not holders:
        raise ConfigError("defense.kind: nad needs a model with convolution layers")
    return holders[-count:]


def attention_map(features: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """``[B, 1, H, W]``: the channel sum of ``|F| ** p``, L2-normalised over positions."""
    attention = features.abs().pow(p).sum(dim=1, keepdim=True)
    return attention / (attention.norm(dim=(2, 3), keepdim=True) + eps)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float) -> torch.Tensor:
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


class FeatureTap:
    """Keeps the outputs of the given modules from the last forward pass."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.outputs: list[torch.Tensor] = [torch.empty(0)] * len(modules)
        self.handles = [m.register_forward_hook(self._keeper(i)) for i, m in enumerate(modules)]

    def _keeper(self, i: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self.outputs[i] = output

        return keep

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def distil(
    student: nn.Module,
    teacher: nn.Module,
    inputs: DefenseInputs,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    betas: list[float],
    p: float,
    epochs: int,
    lr: float,
) -> None:
    """Train ``student`` on the clean data with the task loss plus the attention losses."""
    from triggerlab.defenses.base import shuffled_batches
    from triggerlab.train.loop import make_optimizer

    optimizer = make_optimizer(inputs.train.model_copy(update={"lr": lr}), student)
    student_tap = FeatureTap(attention_stages(student, len(betas)))
    teacher_tap = FeatureTap(attention_stages(teacher, len(betas)))
    betas = betas[len(betas) - len(student_tap.outputs) :]  # a shallower model: the last ones
    teacher.eval()
    layout = model_memory_format(student)
    try:
        for _ in range(epochs):
            student.train()
            for x, y in shuffled_batches(
                images, targets, inputs.train.batch_size, inputs.device, inputs.generator, layout
            ):
                with torch.no_grad():
                    teacher(x)
                loss = inputs.task.loss(student(x).float(), y)
                for beta, s, t in zip(betas, student_tap.outputs, teacher_tap.outputs, strict=True):
                    loss = loss + beta * attention_loss(s.float(), t.float(), p)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    finally:
        student_tap.remove()
        teacher_tap.remove()


def run_nad(spec: NadSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    clean = inputs.clean
    attention_stages(inputs.model, len(spec.betas))  # refuse a model without convolutions
    teacher = copy.deepcopy(inputs.model)
    teacher_inputs = copy.copy(inputs)
    teacher_inputs.model = teacher
    spec.model_copy(update={"epochs": spec.teacher_epochs}).retrain(
        teacher_inputs, clean.images, clean.targets
    )
    distil(
        inputs.model,
        teacher,
        inputs,
        clean.images,
        clean.targets,
        betas=spec.betas,
        p=spec.p,
        epochs=spec.epochs,
        lr=spec.lr,
    )
    report = {
        "clean_samples": len(clean),
        "teacher_epochs": spec.teacher_epochs,
        "epochs": spec.epochs,
        "lr": spec.lr,
        "attention_layers": len(attention_stages(inputs.model, len(spec.betas))),
    }
    return DefenseOutcome(report, repaired=True)
