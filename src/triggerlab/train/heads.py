"""Linear heads on cached features, trained at the speed of their arithmetic.

When only a final linear layer trains, on features the frozen body computed once (the
feature cache), the generic loop's per-batch machinery (autograd's graph, the optimiser's
bookkeeping, a float16-to-float32 copy of every batch, a progress update per batch) costs far
more than the product itself: 128 x 1,280 x 10 multiply-adds take microseconds. Here the same
training is written out in a few batched tensor operations: the loss's gradient in closed form
(cross-entropy, MSE or L1 of a linear map) and Adam or SGD as ``torch.optim`` computes them.

It trains a stack of R heads at once, each with its own initial weights, training rows (into
one feature table held once), targets, batch order, learning rate and weight decay, so one call
can train every run that shares a cache; R = 1 is one run. A member sees the same samples in
the same order and makes the same updates as ``train.loop.fit`` would: the numbers agree to
float rounding (tested).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from triggerlab.attack.tasks import ClassificationTask, RegressionTask
from triggerlab.errors import RunFailed
from triggerlab.progress import Reporter, Update, report
from triggerlab.train.augment import Augment
from triggerlab.train.loop import (
    BatchTransform,
    Objective,
    StagePlan,
    batch_starts,
    epoch_note,
    epoch_record,
    fit,
    make_optimizer,
    make_scheduler,
)
from triggerlab.train.updates import adam_update, momentum_update

if TYPE_CHECKING:
    from triggerlab.config import TrainConfig


@dataclass(frozen=True)
class HeadRule:
    """How every member of a stack learns: what a stack's members must share."""

    optimizer: str  # "adam" or "sgd"
    loss: str  # "cross_entropy", "mse" or "l1"
    epochs: int
    batch_size: int
    momentum: float = 0.0  # SGD only


@dataclass
class HeadStack:
    """R linear heads: ``params[r]`` is member r's weight with its bias as the last column
    (one tensor, so the optimiser's element-wise steps run once for both)."""

    params: torch.Tensor  # (R, C, D + 1)
    lrs: torch.Tensor  # (R, epochs): each member's learning rate in each epoch
    weight_decay: torch.Tensor  # (R,)

    @property
    def weight(self) -> torch.Tensor:
        return self.params[..., :-1]

    @property
    def bias(self) -> torch.Tensor:
        return self.params[..., -1]

    def outputs(self, features: torch.Tensor) -> torch.Tensor:
        """Every member's outputs for the same float features ``(N, D)``: ``(R, N, C)``."""
        return torch.baddbmm(
            self.bias.unsqueeze(1),
            features.float().unsqueeze(0).expand(self.params.shape[0], -1, -1),
            self.weight.transpose(1, 2),
        )


def schedule(cfg: TrainConfig) -> list[float]:
    """The learning rate of each epoch, as ``fit``'s scheduler sets it (its recursive cosine
    formula included, so the values are the same floats)."""
    probe = nn.Linear(1, 1)
    optimizer = make_optimizer(cfg, probe)
    scheduler = make_scheduler(cfg, optimizer)
    rates = []
    for _ in range(cfg.epochs):
        rates.append(float(optimizer.param_groups[0]["lr"]))
        if scheduler is not None:
            scheduler.step()
    return rates


def loss_kind(task: Objective) -> str | None:
    """The task's loss when it is one written out here, else None."""
    if isinstance(task, ClassificationTask):
        return "cross_entropy"
    if isinstance(task, RegressionTask) and task.loss_name in ("mse", "l1"):
        return task.loss_name
    return None


def why_not_fast(
    model: nn.Module,
    task: Objective,
    inputs: torch.Tensor,
    cfg: TrainConfig,
    stage: StagePlan | None,
    augment: Augment | None,
) -> str | None:
    """None when ``fit_head`` can train ``model`` on ``inputs`` exactly as ``fit`` would."""
    if type(model) is not nn.Linear or model.bias is None:
        return "the trained module is not a linear layer with a bias"
    if inputs.ndim != 2 or not inputs.is_floating_point() or inputs.shape[1] != model.in_features:
        return "the inputs are not feature vectors of the layer's width"
    if not model.weight.requires_grad or not model.bias.requires_grad:
        return "part of the layer is frozen"
    if loss_kind(task) is None:
        return "the task's loss is not cross-entropy, MSE or L1"
    if cfg.precision != "fp32" or augment is not None:
        return "mixed precision or augmentation"
    if stage is not None and (stage.folder is not None or stage.resume is not None):
        return "checkpoints hold the generic optimiser's state"
    return None


def _loss_and_gradient(
    kind: str, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's mean loss over the batch ``(R,)`` and its gradient w.r.t. ``outputs``."""
    if kind == "cross_entropy":
        log_p = outputs.log_softmax(-1)
        picked = targets.unsqueeze(-1)
        loss = -log_p.gather(-1, picked).squeeze(-1).mean(1)
        gradient = log_p.exp_().scatter_add_(-1, picked, torch.full_like(log_p[..., :1], -1.0))
        return loss, gradient.div_(outputs.shape[1])
    diff = outputs - targets
    count = diff.shape[1] * diff.shape[2]
    if kind == "mse":
        return diff.square().mean((1, 2)), diff.mul(2.0 / count)
    return diff.abs().mean((1, 2)), diff.sign().div_(count)


class _Optimiser:
    """Adam (L2 weight decay, as torch.optim.Adam) or SGD with momentum, on a stack's params."""

    def __init__(self, rule: HeadRule, stack: HeadStack) -> None:
        self.rule = rule
        self.stack = stack
        self.steps = 0
        self.first = torch.zeros_like(stack.params)
        self.second = torch.zeros_like(stack.params)
        self.decay = stack.weight_decay.view(-1, 1, 1)
        self.decays = bool((stack.weight_decay != 0).any())

    def step(self, gradient: torch.Tensor, lr: torch.Tensor) -> None:
        """One update with ``lr`` ``(R, 1, 1)``."""
        params = self.stack.params
        if self.decays:
            gradient = gradient.addcmul_(self.decay, params)
        self.steps += 1
        if self.rule.optimizer == "sgd":
            momentum_update(params, gradient, self.first, self.rule.momentum, lr, self.steps == 1)
        else:
            adam_update(params, gradient, self.first, self.second, lr, self.steps)


@dataclass(frozen=True)
class EpochResult:
    """One epoch of a stack: each member's mean loss ``(R,)``, the first batch (1-based, 0:
    none) whose loss was not finite, and the images each member saw."""

    epoch: int  # 1-based
    losses: torch.Tensor
    first_bad: torch.Tensor
    seen: int
    seconds: float


@dataclass(frozen=True)
class _Epoch:
    """One epoch's data: each member's rows and targets in its batch order."""

    rows: torch.Tensor  # (R, N)
    targets: torch.Tensor  # (R, N) or (R, N, K)
    lr: torch.Tensor  # (R, 1, 1)


def train_heads(
    stack: HeadStack,
    rule: HeadRule,
    features: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    generators: Sequence[torch.Generator],
    on_epoch: Callable[[EpochResult], None],
) -> None:
    """Train the stack in place. ``features``: the table ``(M, D)`` held once; ``rows``
    ``(R, N)``: each member's training samples as rows of it; ``targets``: ``(R, N)`` class
    indices or ``(R, N, K)`` values; ``generators``: each member's batch order, drawn as
    ``fit`` draws it (one permutation per epoch).

    Members whose batch orders coincide (runs of a grid that share a seed and differ in
    their poisoning, trigger, rate or weight decay) read each batch of features once: one
    wide product for all of them, corrected on the few rows where a member's data differs.
    """
    members, size = rows.shape
    device = stack.params.device
    # a column of ones: the bias is the weight's last column, one product computes both
    table = torch.ones(features.shape[0], features.shape[1] + 1, device=device)
    table[:, :-1] = features
    optimiser = _Optimiser(rule, stack)
    starts = batch_starts(size, rule.batch_size)
    sizes = torch.tensor(
        [min(rule.batch_size, size - s) for s in starts], dtype=torch.float32, device=device
    )
    seen = int(sizes.sum())
    lrs = stack.lrs.to(device)
    rows = rows.to(device)
    everyone = torch.arange(members, device=device).unsqueeze(1)
    for epoch in range(rule.epochs):
        start = time.perf_counter()
        order = torch.stack([torch.randperm(size, generator=g) for g in generators]).to(device)
        data = _Epoch(rows.gather(1, order), targets[everyone, order], lrs[:, epoch].view(-1, 1, 1))
        shared = members > 1 and bool((order == order[0]).all())
        losses = torch.empty(members, len(starts), device=device)
        for number, offset in enumerate(starts):
            batch = slice(offset, offset + rule.batch_size)
            learn = _shared_batch if shared else _own_batch
            losses[:, number] = learn(stack, rule, table, data, batch, optimiser)
        finite = torch.isfinite(losses)  # checked once an epoch: no sync per batch
        first_bad = torch.where(finite.all(1), 0, (~finite).int().argmax(1) + 1)
        total = (losses * sizes).sum(1) / max(seen, 1)
        on_epoch(EpochResult(epoch + 1, total, first_bad, seen, time.perf_counter() - start))


def _own_batch(
    stack: HeadStack,
    rule: HeadRule,
    table: torch.Tensor,
    data: _Epoch,
    batch: slice,
    optimiser: _Optimiser,
) -> torch.Tensor:
    """One step of every member on its own batch of rows; returns the members' losses."""
    picked = data.rows[:, batch]
    x = table.index_select(0, picked.reshape(-1)).view(*picked.shape, -1)  # (R, B, D+1)
    outputs = torch.bmm(x, stack.params.transpose(1, 2))
    loss, gradient = _loss_and_gradient(rule.loss, outputs, data.targets[:, batch])
    optimiser.step(torch.bmm(gradient.transpose(1, 2), x), data.lr)
    return loss


def _shared_batch(
    stack: HeadStack,
    rule: HeadRule,
    table: torch.Tensor,
    data: _Epoch,
    batch: slice,
    optimiser: _Optimiser,
) -> torch.Tensor:
    """One step of members that visit the same positions: member 0's rows are read once and
    multiplied by every member's weights in one product; where another member's row differs
    (its poisoned samples), its output and gradient are corrected by the difference."""
    members, classes, width = stack.params.shape
    picked = data.rows[:, batch]
    x = table.index_select(0, picked[0])  # (B, D+1)
    flat = stack.params.view(members * classes, width)
    outputs = (x @ flat.T).view(-1, members, classes).transpose(0, 1)  # (R, B, C)
    member, position = (picked != picked[0]).nonzero(as_tuple=True)
    delta = None
    if member.numel():
        delta = table.index_select(0, picked[member, position]) - x[position]  # (P, D+1)
        weights = stack.params.index_select(0, member)  # (P, C, D+1)
        correction = torch.bmm(weights, delta.unsqueeze(-1)).squeeze(-1)
        outputs = outputs.index_put((member, position), correction, accumulate=True)
    loss, gradient = _loss_and_gradient(rule.loss, outputs, data.targets[:, batch])
    wide = gradient.transpose(0, 1).reshape(-1, members * classes)  # (B, R*C)
    step = (wide.T @ x).view(members, classes, width)
    if delta is not None:
        outer = gradient[member, position].unsqueeze(-1) * delta.unsqueeze(1)  # (P, C, D+1)
        step.index_add_(0, member, outer)
    optimiser.step(step, data.lr)
    return loss


def stack_of(heads: Sequence[nn.Linear], cfgs: Sequence[TrainConfig]) -> HeadStack:
    """A stack initialised from the heads' current weights, with each member's rates."""
    params = torch.stack(
        [torch.cat([h.weight.detach(), h.bias.detach().unsqueeze(1)], 1).float() for h in heads]
    )
    lrs = torch.tensor([schedule(cfg) for cfg in cfgs], dtype=torch.float32)
    decay = torch.tensor([cfg.weight_decay for cfg in cfgs], dtype=torch.float32)
    return HeadStack(params, lrs, decay.to(params.device))


def rule_of(cfg: TrainConfig, task: Objective) -> HeadRule:
    kind = loss_kind(task)
    assert kind is not None
    return HeadRule(cfg.optimizer, kind, cfg.epochs, cfg.batch_size, cfg.momentum)


@torch.no_grad()
def load_member(head: nn.Linear, stack: HeadStack, member: int) -> None:
    """Copy member ``member``'s weights into ``head``."""
    head.weight.copy_(stack.weight[member])
    head.bias.copy_(stack.bias[member])


def not_finite(epoch: int, loss: float, first_bad: int, batches: int) -> RunFailed:
    """The message ``fit`` gives when a batch's loss is not finite."""
    return RunFailed(
        f"epoch {epoch}: the training loss is not finite ({loss}) from batch {first_bad} of "
        f"{batches}; a learning rate that is too high (train.lr) or non-finite inputs cause this"
    )


@contextlib.contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """One CPU thread while a head trains: its products are too small to share out, and a
    second thread only adds waiting (on a busy machine, for a core: 2 threads measured 5x
    slower than 1). The results no longer depend on ``train.threads``."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def fit_head(
    model: nn.Module,
    task: Objective,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    evaluate: Callable[[nn.Module], dict[str, float]],
    on_epoch: Callable[[dict[str, Any]], None],
    progress: Reporter | None = None,
    stage: StagePlan | None = None,
    augment: Augment | None = None,
    transform: BatchTransform | None = None,
) -> list[dict[str, Any]]:
    """``fit``, for a linear head on feature vectors trained by ``train_heads``; any other
    model or option (per-batch poisoning: ``transform``) goes to ``fit``. The same records,
    evaluations and progress per epoch."""
    if transform is not None or why_not_fast(model, task, images, cfg, stage, augment) is not None:
        with torch.enable_grad():
            return fit(
                model,
                task,
                images,
                targets,
                cfg=cfg,
                device=device,
                generator=generator,
                evaluate=evaluate,
                on_epoch=on_epoch,
                progress=progress,
                stage=stage,
                augment=augment,
                transform=transform,
            )
    assert isinstance(model, nn.Linear)
    stage = stage or StagePlan()
    stack = stack_of([model], [cfg])
    features = images.to(device)  # made float32 once, in the table train_heads builds
    rows = torch.arange(features.shape[0], device=device).unsqueeze(0)
    batches = len(batch_starts(features.shape[0], cfg.batch_size))
    history: list[dict[str, Any]] = []

    def epoch_done(result: EpochResult) -> None:
        epoch = stage.first_epoch + result.epoch - 1
        loss = float(result.losses[0])
        if not math.isfinite(loss):
            raise not_finite(epoch, loss, int(result.first_bad[0]), batches)
        load_member(model, stack, 0)
        record = epoch_record(
            epoch,
            loss,
            result.seen,
            time.perf_counter() - result.seconds,
            result.seconds,
            evaluate(model),
        )
        history.append(record)
        on_epoch(record)
        note = epoch_note(record, task.metric_names[:4], stage.total_epochs or cfg.epochs)
        report(
            progress,
            Update("training", batches * result.epoch, batches * cfg.epochs, note, milestone=True),
        )

    model.train()
    with single_threaded(device):
        train_heads(
            stack,
            rule_of(cfg, task),
            features,
            rows,
            targets.to(device).unsqueeze(0),
            [generator],
            epoch_done,
        )
    return history
