"""Many trainings of one shape as one stacked model: the loop of ``train.loop`` over K members.

Runs of a grid that differ only in their data (poisoned samples, trigger), seed, learning
rate or weight decay train the same architecture on tensors of the same shape. Each alone
leaves the CPU's vector units (or a GPU) mostly idle; stacked, their weights become one
tensor per parameter with a leading member axis, and ``torch.func.vmap`` over
``functional_call`` runs every member's forward and backward as one batched operation
(convolutions become grouped convolutions, linear layers batched products).

Each member keeps everything a run alone has: its own initial weights (its model, as the
run built it), its own batch order (its seeded generator draws its permutation as
``train_epoch`` does), its own augmentation draws, its own optimiser settings and state
(``StackedOptimizer``: the update of ``torch.optim.SGD`` / ``Adam`` written once over the
member axis, each member with its learning rate, weight decay and momentum), its own batch
norm running statistics (buffers are stacked and vmapped like weights), its own scheduler
(a real one per member, which also says the member's rate each epoch), evaluation,
metrics and checkpoints. After every epoch each member's weights are copied back into its
own model, which is evaluated and checkpointed exactly as ``fit`` does, so a member's
checkpoint continues alone and a member's metrics equal those of the run alone within
floating-point tolerance.

A member whose loss stops being finite fails alone (``RunFailed``, as ``fit`` words it);
the others go on (members never mix: every operation is per member).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from triggerlab.errors import RunFailed
from triggerlab.train.augment import Augment
from triggerlab.train.checkpoint import TrainState
from triggerlab.train.devices import model_memory_format, resident, synchronize, to_input
from triggerlab.train.grouped import grouped_forward, member_losses
from triggerlab.train.loop import (
    Objective,
    StagePlan,
    batch_starts,
    epoch_record,
    make_optimizer,
    make_scheduler,
    maybe_checkpoint,
    resumed_history,
)
from triggerlab.train.optimizers import Optimiser
from triggerlab.train.updates import adam_update, momentum_update

if TYPE_CHECKING:
    from triggerlab.config import TrainConfig

STACK_BYTES = 2 * 1024**3  # the most a stack copies of its members' training tensors


class StackUnsupported(Exception):
    """The stack could not take its first step (an operation vmap cannot batch); nothing has
    changed: every member's weights and generators are as they were handed over."""


@dataclass
class FitCall:
    """One member's training: the arguments ``train.loop.fit`` takes for it."""

    model: nn.Module
    task: Objective
    images: torch.Tensor
    targets: torch.Tensor
    cfg: TrainConfig
    device: torch.device
    generator: torch.Generator
    evaluate: Callable[[nn.Module], dict[str, float]]
    on_epoch: Callable[[dict[str, Any]], None]
    stage: StagePlan = field(default_factory=StagePlan)
    augment: Augment | None = None


def _has_randomness(model: nn.Module) -> bool:
    """Dropout draws from the global generator: under vmap its draws cannot match a run alone."""
    dropouts = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    return any(isinstance(m, dropouts) and m.p > 0 for m in model.modules())


def stack_key(call: FitCall) -> tuple[Any, ...] | None:
    """What members of one stack must share; None when the call cannot be stacked at all.

    Everything that decides the shape of the computation or the sequence of its steps: the
    architecture (class, every parameter's and buffer's name, shape, dtype and whether it
    trains), the training tensors' shapes and dtypes, batch size, epochs, optimiser kind,
    schedule, device, the loss, the augmentation, and the stage. What may differ: the
    values (weights, data, targets), seeds, learning rate, weight decay and momentum.
    """
    cfg = call.cfg
    if cfg.precision != "fp32" or cfg.compile or _has_randomness(call.model):
        return None
    model = call.model
    params = tuple(
        (n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()
    )
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers())
    augment = None
    if call.augment is not None:
        augment = (tuple(call.augment.operations), call.augment.padding)
    return (
        type(model),
        params,
        buffers,
        tuple(call.images.shape),
        call.images.dtype,
        tuple(call.targets.shape),
        call.targets.dtype,
        cfg.batch_size,
        cfg.epochs,
        cfg.optimizer,
        cfg.lr_schedule,
        str(call.device),
        type(call.task),
        getattr(call.task, "loss_name", None),
        augment,
        call.stage.name,
        call.stage.first_epoch,
        call.stage.total_epochs,
        None if call.stage.resume is None else call.stage.resume.epoch,  # members continue alike
    )


def group_calls(calls: Sequence[FitCall], most_bytes: int = STACK_BYTES) -> list[list[int]]:
    """Indices of ``calls`` that can train together, in order of first appearance; calls that
    cannot be stacked, or have no partner, are groups of one. A stack holds a copy of its
    members' training tensors: a group is split where that copy would pass ``most_bytes``."""
    groups: dict[Any, list[list[int]]] = {}
    alone: list[list[int]] = []
    for index, call in enumerate(calls):
        key = stack_key(call)
        if key is None:
            alone.append([index])
            continue
        chunks = groups.setdefault(key, [[]])
        size = call.images.numel() * call.images.element_size()
        if chunks[-1] and (len(chunks[-1]) + 1) * size > most_bytes:
            chunks.append([])
        chunks[-1].append(index)
    return [*(c for chunks in groups.values() for c in chunks), *alone]


class StackedOptimizer:
    """``torch.optim.SGD`` or ``Adam`` (as ``make_optimizer`` configures them) over stacked
    parameters, each member with its own learning rate, weight decay and momentum.

    The arithmetic is torch's own, step for step, with the scalars made per-member tensors
    broadcast over each parameter's member axis; ``export`` writes a member's state into a
    real optimiser of its model (for its checkpoint).
    """

    def __init__(self, kind: str, params: list[torch.Tensor], cfgs: Sequence[TrainConfig]):
        self.kind = kind
        self.params = params
        device = params[0].device
        self.weight_decay = torch.tensor([c.weight_decay for c in cfgs], device=device)
        self.momentum = torch.tensor([c.momentum for c in cfgs], device=device)
        self.uses_momentum = [c.momentum != 0 for c in cfgs]
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    @staticmethod
    def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.view(-1, *([1] * (like.ndim - 1)))

    @torch.no_grad()
    def step(self, lrs: torch.Tensor) -> None:
        self.steps += 1
        for param, state in zip(self.params, self.state, strict=True):
            if param.grad is None:
                continue
            grad = param.grad + self._per_member(self.weight_decay, param) * param
            lr = self._per_member(lrs, param)
            if self.kind == "sgd":
                self._sgd(param, grad, lr, state)
            else:
                self._adam(param, grad, lr, state)

    def _sgd(self, param: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor, state: dict) -> None:
        first = "momentum_buffer" not in state  # torch keeps no buffer; an equal one steps alike
        buffer = state.setdefault("momentum_buffer", torch.empty_like(grad))
        momentum_update(param, grad, buffer, self._per_member(self.momentum, param), lr, first)

    def _adam(self, param: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor, state: dict) -> None:
        if not state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        adam_update(param, grad, state["exp_avg"], state["exp_avg_sq"], lr, self.steps)

    @torch.no_grad()
    def load(self, optimizers: Sequence[Optimiser]) -> None:
        """Every member's state from its own optimiser (restored from its checkpoint), which
        has taken as many steps as the others'."""
        owns = [[p for g in o.param_groups for p in g["params"]] for o in optimizers]
        for index, (param, state) in enumerate(zip(self.params, self.state, strict=True)):
            saved = [o.state.get(own[index], {}) for o, own in zip(optimizers, owns, strict=True)]
            if self.kind == "adam" and all(saved):
                self.steps = int(saved[0]["step"])
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key] = torch.stack([s[key] for s in saved]).to(param)
            elif self.kind == "sgd" and any(saved):  # members without momentum keep none
                state["momentum_buffer"] = torch.stack(
                    [s["momentum_buffer"] if s else torch.zeros_like(param[0]) for s in saved]
                ).to(param)

    def export(self, member: int, optimizer: Optimiser) -> None:
        """Member ``member``'s state into ``optimizer`` (over that member's own parameters,
        in the same order), as torch's optimiser would hold it after the same steps."""
        own = [p for group in optimizer.param_groups for p in group["params"]]
        for param, state in zip(own, self.state, strict=True):
            if not state:
                continue
            if self.kind == "sgd":
                if self.uses_momentum[member]:
                    optimizer.state[param] = {
                        "momentum_buffer": state["momentum_buffer"][member].detach().clone()
                    }
            else:
                optimizer.state[param] = {
                    "step": torch.tensor(float(self.steps)),
                    "exp_avg": state["exp_avg"][member].detach().clone(),
                    "exp_avg_sq": state["exp_avg_sq"][member].detach().clone(),
                }


class Stack:
    """K models as stacked tensors: the trainable parameters (leaves that collect gradients),
    the frozen ones and the buffers, each ``[K, ...]``; and a weightless copy of the first
    model to call them through."""

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        self.models = list(models)
        first = models[0]
        self.names = [n for n, _ in first.named_parameters()]
        self.buffer_names = [n for n, _ in first.named_buffers()]
        self.params: dict[str, torch.Tensor] = {}
        for name, param in first.named_parameters():
            stacked = torch.stack([dict(m.named_parameters())[name].detach() for m in models])
            self.params[name] = stacked.to(device).requires_grad_(param.requires_grad)
        self.buffers = {
            name: torch.stack([dict(m.named_buffers())[name].detach() for m in models]).to(device)
            for name in self.buffer_names
        }
        self.base = copy.deepcopy(first).to("meta")
        self.layout = model_memory_format(first)

    def trainable(self) -> list[torch.Tensor]:
        """In the order of ``make_optimizer``'s parameter list (the model's, frozen left out)."""
        return [self.params[n] for n in self.names if self.params[n].requires_grad]

    def forward_loss(self, task: Objective) -> Callable[..., torch.Tensor]:
        """Each member's mean loss on its batch, ``[K]``, through one vmapped call."""
        base = self.base

        def member_loss(
            params: dict[str, torch.Tensor],
            buffers: dict[str, torch.Tensor],
            x: torch.Tensor,
            y: torch.Tensor,
        ) -> torch.Tensor:
            outputs = functional_call(base, (params, buffers), (x,))
            return task.loss(outputs.float(), y)

        batched = vmap(member_loss)
        return lambda x, y: batched(self.params, self.buffers, x, y)

    @torch.no_grad()
    def copy_into(self, member: int) -> nn.Module:
        """The member's trained weights and buffers, written into its own model."""
        model = self.models[member]
        for name, param in model.named_parameters():
            param.copy_(self.params[name][member])
        for name, buffer in model.named_buffers():
            buffer.copy_(self.buffers[name][member])
        return model


def fit_stacked(calls: Sequence[FitCall]) -> list[list[dict[str, Any]] | BaseException]:
    """Train every call's model as one stack (they must share ``stack_key``); per member, its
    epochs' records as ``fit`` returns them, or the exception that ended its training.

    Each member's model holds its trained weights afterwards, as after ``fit``.
    """
    return _StackedFit(calls).run()


class _StackedFit:
    def __init__(self, calls: Sequence[FitCall]) -> None:
        keys = {stack_key(c) for c in calls}
        if len(keys) != 1 or None in keys:
            raise ValueError("fit_stacked: the calls do not share one stack key")
        self.calls = list(calls)
        first = calls[0]
        self.cfg, self.device, self.task = first.cfg, first.device, first.task
        # Each member's own optimiser and scheduler: they say its rate every epoch and
        # receive its state for its checkpoints (and give it, continuing from one).
        self.optimizers = [make_optimizer(c.cfg, c.model) for c in calls]
        self.schedulers = [
            make_scheduler(c.cfg, o) for c, o in zip(calls, self.optimizers, strict=True)
        ]
        self.results: list[list[dict[str, Any]] | BaseException] = [
            self.resumed(i) for i in range(len(calls))
        ]
        self.stack = Stack([c.model for c in calls], self.device)
        self.optimizer = StackedOptimizer(
            self.cfg.optimizer, self.stack.trainable(), [c.cfg for c in calls]
        )
        if first.stage.resume is not None:
            self.optimizer.load(self.optimizers)
        self.images = torch.stack([resident(c.images, self.device) for c in calls])
        self.targets = torch.stack([resident(c.targets, self.device) for c in calls])
        self.loss = self.stack.forward_loss(self.task)
        self.grouped = None  # the faster grouped forward, where the model's layers allow it
        if first.augment is None:
            self.grouped = grouped_forward(
                self.stack.models,
                self.stack.params,
                self.stack.buffers,
                self.stack.layout,
                self.images[:, :2],
                self.float_inputs,
            )
        self.grouped_losses = member_losses(self.task)

    def state(self, member: int) -> TrainState:
        call = self.calls[member]
        generators = {"order": call.generator}
        if call.augment is not None:
            generators["augment"] = call.augment.generator
        optimizer, scheduler = self.optimizers[member], self.schedulers[member]
        return TrainState(call.model, optimizer, scheduler, None, generators)

    def resumed(self, member: int) -> list[dict[str, Any]] | BaseException:
        """The member's records before its checkpoint, its model, optimiser, scheduler and
        generators restored from it, as ``fit`` continues (none for a fresh member); or why
        its checkpoint does not fit, which ends that member only."""
        try:
            return resumed_history(self.calls[member].stage, self.state(member))
        except Exception as exc:
            return exc

    def float_inputs(self, raw: torch.Tensor) -> torch.Tensor:
        """Members' raw batches ``[K, b, ...]`` as float inputs on the device."""
        count, size = raw.shape[:2]
        x = to_input(raw.flatten(0, 1), self.device, self.stack.layout)
        return x.unflatten(0, (count, size))

    def losses(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean loss on its batch, ``[K]``."""
        if self.grouped is not None:
            x = to_input(self.grouped.inputs(raw), self.device, self.stack.layout)
            return self.grouped_losses(self.grouped(x, raw.shape[0]), y)
        return self.loss(self.augmented(self.float_inputs(raw)), y)

    def live(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if not isinstance(r, BaseException)]

    def rates(self) -> torch.Tensor:
        return torch.tensor([o.param_groups[0]["lr"] for o in self.optimizers], device=self.device)

    def generators(self) -> list[torch.Generator]:
        own = [c.generator for c in self.calls]
        return own + [c.augment.generator for c in self.calls if c.augment is not None]

    def first_epoch(self) -> tuple[torch.Tensor, int, torch.Tensor, int]:
        """The first epoch; StackUnsupported, with every generator put back, when the stack
        cannot run at all (the members' own models are untouched until an epoch ends)."""
        states = [g.get_state() for g in self.generators()]
        try:
            return self.epoch()
        # vmap raises NotImplementedError for an operation it has no batching rule for
        except (RuntimeError, NotImplementedError) as exc:
            for generator, state in zip(self.generators(), states, strict=True):
                generator.set_state(state)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StackUnsupported(
                f"{type(self.calls[0].model).__name__} cannot train stacked ({first[:200]})"
            ) from exc

    def run(self) -> list[list[dict[str, Any]] | BaseException]:
        live = self.live()
        if not live:
            return self.results
        done = len(self.results[live[0]])  # type: ignore[arg-type]  # before the checkpoint
        for number in range(done, self.cfg.epochs):
            if not self.live():
                break
            synchronize(self.device)
            start = time.perf_counter()
            epoch = self.first_epoch if number == done else self.epoch
            totals, seen, first_bad, batches = epoch()
            synchronize(self.device)
            train_time = time.perf_counter() - start
            for scheduler in self.schedulers:
                if scheduler is not None:
                    scheduler.step()
            for member in self.live():
                self.finish_epoch(member, number, totals, seen, first_bad, batches, train_time)
        return self.results

    def epoch(self) -> tuple[torch.Tensor, int, torch.Tensor, int]:
        """One pass, each member in its own seeded order; per-member loss sums, images seen
        (the same for every member), first non-finite batch per member, batches."""
        count = len(self.calls)
        self.stack.base.train()
        orders = torch.stack(
            [torch.randperm(self.images.shape[1], generator=c.generator) for c in self.calls]
        ).to(self.device)
        members = torch.arange(count, device=self.device)[:, None]
        totals = torch.zeros(count, device=self.device)
        first_bad = torch.full((count,), -1, device=self.device, dtype=torch.long)
        lrs = self.rates()
        seen = 0
        starts = batch_starts(self.images.shape[1], self.cfg.batch_size)
        for number, start in enumerate(starts):
            index = orders[:, start : start + self.cfg.batch_size]
            size = index.shape[1]
            losses = self.losses(self.images[members, index], self.targets[members, index])
            for param in self.optimizer.params:
                param.grad = None
            losses.sum().backward()  # members are independent: each gets its own gradient
            self.optimizer.step(lrs)
            losses = losses.detach()
            totals += losses * size
            bad = (first_bad < 0) & ~torch.isfinite(losses)
            first_bad = torch.where(bad, number, first_bad)
            seen += size
        return totals, seen, first_bad, len(starts)

    def augmented(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's batch augmented with its own generator, as ``Step.learn`` does."""
        if self.calls[0].augment is None:
            return x
        return torch.stack([c.augment(x[i]) for i, c in enumerate(self.calls)])  # type: ignore[misc]

    def finish_epoch(
        self,
        member: int,
        number: int,
        totals: torch.Tensor,
        seen: int,
        first_bad: torch.Tensor,
        batches: int,
        train_time: float,
    ) -> None:
        """As ``fit`` ends an epoch for the member: its loss checked, its model evaluated, the
        record logged, a checkpoint when due. Any error ends that member's training only."""
        call = self.calls[member]
        epoch = call.stage.first_epoch + number
        history = self.results[member]
        assert isinstance(history, list)
        start = time.perf_counter()
        try:
            mean = float(totals[member]) / max(seen, 1)
            if not math.isfinite(mean):
                raise RunFailed(
                    f"epoch {epoch}: the training loss is not finite ({mean}) from batch "
                    f"{int(first_bad[member]) + 1} of {batches}; a learning rate that is too "
                    "high (train.lr) or non-finite inputs cause this"
                )
            model = self.stack.copy_into(member)
            metrics = call.evaluate(model)
            record = epoch_record(epoch, mean, seen, start - train_time, train_time, metrics)
            history.append({**record, "stage": call.stage.name})
            call.on_epoch(record)
            self.checkpoint(member, number + 1, history)
        except Exception as exc:  # this member's run fails; the stack goes on without it
            self.results[member] = exc
            return
        if number + 1 == self.cfg.epochs:
            self.results[member] = [{k: v for k, v in r.items() if k != "stage"} for r in history]

    def checkpoint(self, member: int, done: int, history: list[dict[str, Any]]) -> None:
        call = self.calls[member]
        every = call.cfg.checkpoint_every
        if call.stage.folder is None or not every or done % every or done >= call.cfg.epochs:
            return
        self.optimizer.export(member, self.optimizers[member])
        maybe_checkpoint(call.cfg, call.stage, done, self.state(member), history)
