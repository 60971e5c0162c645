"""Neural Attention Distillation (NAD; Li, Lyu, Koren, Lyu, Li and Ma, ICLR 2021).

A teacher is the backdoored model fine-tuned on the defender's clean data for
``teacher_epochs``; the backdoored model (the student) is then trained on the
same clean data with cross-entropy plus, for each attention layer i,
``beta_i * AT(student_i, teacher_i)``. The attention map of a feature map F is
``A(F) = sum_c |F_c| ** p`` (p = 2), divided by its L2 norm over the spatial
positions, and AT is the mean squared difference of the two maps, as in the
authors' code (bboylyg/NAD ``at.py:22-33``). Their layers are the outputs of
their WideResNet's three residual groups (``models/wresnet.py:86-97``) with
betas 500, 1000 and 1000 (``config.py:22-24``); here the attention layers are
the model's last ``len(betas)`` stages (``attention_stages``): a ResNet's last
groups (``layer2`` to ``layer4``), a small CNN's last convolutions. The default betas
are the authors' three, and a model with fewer stages takes the last of them (the
report records the betas used); a list given in the config must have at most as many
weights as the model has stages, or the run is refused before any work.
(BackdoorBench's PreAct-ResNet18 takes the outputs of ``layer3``, ``layer4`` and the
average pooling, ``defense/nad.py: 292-305``, whose 1x1 attention map is constant.)

Retraining follows ``RetrainingSpec``: by default the run's optimiser and
augmentation at ``lr``. The preset ``authors`` is NAD's own schedule
(``main.py:143-147``, ``utils/util.py:68-79``, ``config.py:15-19``,
``data_loader.py:10-16``): 20 epochs of SGD (momentum 0.9, Nesterov, weight
decay 1e-4, batch 64) at 0.1 for two epochs and 0.01 after, with random crop
(padding 4) and horizontal flip, on 5 % clean data; the teacher is fine-tuned
for 10 epochs the same way (the README's "5~10 epochs"; BackdoorBench's
``te_epochs: 10``). Its ``Cutout(1, 3)`` is not reproduced, and NAD's README
table was measured without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from triggerlab.catalogue.defenses import NadSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, retrain, retraining
from triggerlab.defenses.repair import Retraining
from triggerlab.errors import ConfigError
from triggerlab.train.devices import model_memory_format

# The authors' weights of their WideResNet's three groups (bboylyg/NAD config.py:22-24).
DEFAULT_BETAS = (500.0, 1000.0, 1000.0)


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def attention_stages(model: nn.Module, count: int) -> list[nn.Module]:
    """A model's stages, the last ``count`` of them: the children holding convolutions of the
    first module, from the model down, with more than one container among them.

    A wrapper (an input adapter, a ``features`` sequence) is passed through, and so is a
    container beside a bare stem or head convolution (timm's ``blocks`` between
    ``conv_stem`` and ``conv_head``); a ResNet's stages are its ``layer1`` to ``layer4``; a
    small CNN, whose one container holds bare convolutions, gives those convolutions."""
    module = model
    while True:
        holders = [child for child in module.children() if _has_conv(child)]
        containers = [child for child in holders if not isinstance(child, nn.Conv2d)]
        if len(containers) != 1:
            break
        module = containers[0]
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
    recipe: Retraining,
) -> None:
    """Train ``student`` on the clean data with the task loss plus the attention losses."""
    from triggerlab.defenses.base import shuffled_batches

    optimizer = recipe.make_optimizer(student, inputs.train)
    student_tap = FeatureTap(attention_stages(student, len(betas)))
    teacher_tap = FeatureTap(attention_stages(teacher, len(betas)))
    teacher.eval()
    layout = model_memory_format(student)
    try:
        for _ in recipe.epochs_with_rate(optimizer):
            student.train()
            for x, y in shuffled_batches(
                images, targets, recipe.batch_size, inputs.device, inputs.generator, layout
            ):
                x = recipe.augment(x) if recipe.augment is not None else x
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


def stage_betas(spec: NadSpec, model: nn.Module) -> list[float]:
    """One weight per attention stage of ``model``; ConfigError when the configured weights
    outnumber its stages (none is ever dropped silently)."""
    wanted = list(spec.betas if spec.betas is not None else DEFAULT_BETAS)
    stages = len(attention_stages(model, len(wanted)))  # refuses a model without convolutions
    if spec.betas is None:
        return wanted[len(wanted) - stages :]
    if len(wanted) > stages:
        raise ConfigError(
            f"defense.betas: {len(wanted)} weights, but the model has {stages} stage(s) "
            f"with convolutions; expected at most {stages} (one per stage, for the last "
            "stages, earliest first)"
        )
    return wanted


def run_nad(spec: NadSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    clean = inputs.clean
    betas = stage_betas(spec, inputs.model)
    teacher = copy.deepcopy(inputs.model)
    teacher_inputs = copy.copy(inputs)
    teacher_inputs.model = teacher
    retrain(spec, teacher_inputs, clean.images, clean.targets, spec.teacher_epochs)
    distil(
        inputs.model,
        teacher,
        inputs,
        clean.images,
        clean.targets,
        betas=betas,
        p=spec.p,
        recipe=retraining(spec, inputs),
    )
    names = {module: name for name, module in inputs.model.named_modules()}
    report = {
        "clean_samples": len(clean),
        "teacher_epochs": spec.teacher_epochs,
        "epochs": spec.epochs,
        "lr": spec.lr,
        "attention_layers": [names[m] for m in attention_stages(inputs.model, len(betas))],
        "betas": betas,
    }
    return DefenseOutcome(report, repaired=True)
