"""Neural Cleanse's trigger reversal (Wang et al., S&P 2019), as its authors run it.

For a class t, a mask ``m`` (one value per pixel) and a pattern ``p`` (per
channel), both squashed into [0, 1] by ``tanh(w) / (2 - eps) + 0.5``, stamp
clean images as ``x' = (1 - m) x + m p``; Adam (betas 0.5, 0.9) minimises
``cross_entropy(model(x'), t) + cost * |m|_1``. As in the authors' code:

* the search starts from a random mask and pattern, with ``cost = 0``; once
  the reversed trigger's attack success reaches ``attack_success`` (0.99) for
  ``patience`` steps, ``cost`` is set to ``init_cost``;
* after that, ``cost`` is multiplied by ``cost_multiplier`` after every
  ``patience`` steps that reach the threshold and divided by
  ``cost_multiplier ** 1.5`` after every ``patience`` steps that do not;
* the mask kept is the smallest one (L1 norm) among those that reached the
  threshold, not the last one;
* the search stops early once the cost has moved both up and down and the
  best norm has not improved for ``early_stop_patience`` steps.

One step is ``batches_per_step`` mini-batches; its attack success is the share
of those batches' stamped images classified as t. A class whose search never
reaches the threshold is reported as such (``reached`` false): its mask does
not measure how easy the class is to reach.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from triggerlab.defenses.model_outputs import OutputKind, target_loss
from triggerlab.progress import Reporter, Update, report
from triggerlab.train.devices import to_input

EPSILON = 1e-7  # keeps tanh's image strictly inside (0, 1)


@dataclass(frozen=True)
class ReversalSettings:
    steps: int = 200
    batches_per_step: int = 10
    batch_size: int = 32
    lr: float = 0.1
    init_cost: float = 1e-3
    cost_multiplier: float = 2.0
    patience: int = 5
    attack_success: float = 0.99
    early_stop_patience: int = 25
    early_stop_threshold: float = 0.99  # a best norm above 0.99 x the last best is no progress


@dataclass
class ReversedTrigger:
    target: int
    mask: torch.Tensor  # [1, H, W] in [0, 1]
    pattern: torch.Tensor  # [C, H, W] in [0, 1]
    l1: float  # the mask's L1 norm, in pixels
    success: float  # share of clean non-target images it sends to the target
    reached: bool = True  # the search reached the attack-success threshold
    steps: int = 0  # steps run
    stopped: str = "steps"  # why the search ended: steps, early stop, time budget

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask, pattern = self.mask.to(x), self.pattern.to(x)
        return (1 - mask) * x + mask * pattern


@dataclass
class CostSchedule:
    """The authors' adaptation of the mask-norm weight (see the module's docstring)."""

    settings: ReversalSettings
    cost: float = 0.0
    set_counter: int = 0
    up_counter: int = 0
    down_counter: int = 0
    moved_up: bool = False
    moved_down: bool = False

    def update(self, success: float) -> None:
        s, reached = self.settings, success >= self.settings.attack_success
        if self.cost == 0 and reached:
            self.set_counter += 1
            if self.set_counter >= s.patience:
                self.cost = s.init_cost
                self.up_counter = self.down_counter = 0
                self.moved_up = self.moved_down = False
        else:
            self.set_counter = 0
        self.up_counter = self.up_counter + 1 if reached else 0
        self.down_counter = 0 if reached else self.down_counter + 1
        if self.up_counter >= s.patience:
            self.up_counter, self.moved_up = 0, True
            self.cost *= s.cost_multiplier
        elif self.down_counter >= s.patience:
            self.down_counter, self.moved_down = 0, True
            self.cost /= s.cost_multiplier**1.5


@dataclass
class Best:
    """The smallest mask that reached the threshold so far, and the early-stop counter."""

    l1: float = math.inf
    mask: torch.Tensor | None = None
    pattern: torch.Tensor | None = None
    stale: int = 0  # steps without a clearly smaller mask, once one reached the threshold

    def offer(
        self, l1: float, reached: bool, mask: torch.Tensor, pattern: torch.Tensor, threshold: float
    ) -> None:
        before = self.l1
        if reached and l1 < self.l1:
            self.l1, self.mask, self.pattern = l1, mask.detach().clone(), pattern.detach().clone()
        if before < math.inf:
            self.stale = self.stale + 1 if self.l1 >= threshold * before else 0


def squash(w: torch.Tensor) -> torch.Tensor:
    return torch.tanh(w) / (2 - EPSILON) + 0.5


def unsquash(values: torch.Tensor) -> torch.Tensor:
    return torch.atanh((values - 0.5) * (2 - EPSILON))


def reverse_trigger(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: int,
    *,
    settings: ReversalSettings,
    kind: OutputKind,
    device: torch.device,
    generator: torch.Generator,
    deadline: float = math.inf,
    progress: Reporter | None = None,
) -> ReversedTrigger:
    """The smallest mask and pattern that send clean images (uint8) to class ``target``."""
    _, channels, height, width = images.shape
    mask_w = unsquash(torch.rand((1, height, width), generator=generator)).to(device)
    pattern_w = unsquash(torch.rand((channels, height, width), generator=generator)).to(device)
    mask_w.requires_grad_(True)
    pattern_w.requires_grad_(True)
    optimizer = torch.optim.Adam([mask_w, pattern_w], lr=settings.lr, betas=(0.5, 0.9))
    schedule, best = CostSchedule(settings), Best()
    model.eval()
    stopped, step = "steps", 0
    for step in range(1, settings.steps + 1):
        hits = seen = 0
        norms = []
        for _ in range(settings.batches_per_step):
            index = torch.randint(images.shape[0], (settings.batch_size,), generator=generator)
            x = to_input(images[index], device)
            mask, pattern = squash(mask_w), squash(pattern_w)
            outputs = model((1 - mask) * x + mask * pattern)
            wanted = torch.full((x.shape[0],), target, device=device)
            l1 = mask.sum()
            loss = target_loss(outputs, kind, wanted).mean() + schedule.cost * l1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            hits += int((outputs.argmax(dim=1) == wanted).sum())
            seen += x.shape[0]
            norms.append(float(l1.detach()))
        success, l1_mean = hits / seen, sum(norms) / len(norms)
        reached = success >= settings.attack_success
        mask, pattern = squash(mask_w), squash(pattern_w)
        best.offer(l1_mean, reached, mask, pattern, settings.early_stop_threshold)
        schedule.update(success)
        if step % 10 == 0 or step == 1:
            note = f"class {target}: step {step}, mask L1 {l1_mean:.1f}, success {success:.2f}"
            report(progress, Update("trigger search", step, settings.steps, note))
        early = schedule.moved_up and schedule.moved_down
        if early and best.stale >= settings.early_stop_patience:
            stopped = "early stop"
            break
        if time.monotonic() > deadline:
            stopped = "time budget"
            break
    return _result(model, images, labels, target, best, (mask_w, pattern_w), device, step, stopped)


@torch.no_grad()
def _result(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: int,
    best: Best,
    last: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    steps: int,
    stopped: str,
) -> ReversedTrigger:
    """The kept trigger (the best that reached the threshold, else the last), measured on
    every clean non-target image."""
    reached = best.mask is not None
    mask = best.mask if best.mask is not None else squash(last[0])
    pattern = best.pattern if best.pattern is not None else squash(last[1])
    trigger = ReversedTrigger(
        target, mask.cpu(), pattern.cpu(), float(mask.sum()), 0.0, reached, steps, stopped
    )
    others = labels != target
    hits = 0
    for chunk in torch.arange(len(labels))[others].split(256):
        stamped = trigger.apply(to_input(images[chunk], device))
        hits += int((model(stamped).argmax(dim=1) == target).sum())
    trigger.success = hits / max(int(others.sum()), 1)
    return trigger
