"""Per-batch poisoning, as WaNet's and BppAttack's authors train: every training batch is
poisoned anew, inside the training loop, so each image is poisoned in some epochs and clean in
others.

In a batch of ``b`` samples (the loop's seeded shuffle fixes which), in batch order:

* the first ``int(b x rate)`` samples the task may poison (``poison_sources``; every sample
  under ``sources: all``) get the trigger's payload form and the attack's labels;
* the next ``int(poisoned x cover_ratio)`` samples get the cover form (WaNet's noise mode: the
  warp plus fresh noise), labels kept;
* the next ``int(b x negative_ratio)`` become negative samples (BppAttack: the image plus
  another, uniformly drawn training image's quantisation residual), labels kept; none at
  rate 0 (a clean baseline);
* the rest stay clean.

``int`` truncates, as both authors' code does (WaNet train.py:70-71, BppAttack
bppattack.py:173-174); a batch of 128 at rate 0.1 has 12 poisoned samples. The images are
float on the training device and are not rounded to 8 bits (the authors' are not either).
Random draws come from one CPU generator, in this order per batch: the payload's, the cover
form's, the negative samples' partners; so a seed fixes them on any device.

The positions are chosen without reading anything back from the device: a stable sort puts
the eligible samples first, in batch order, and a sample beyond the eligible ones is left
unchanged (``valid``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from triggerlab.triggers import NegativeTrigger, Trigger, training_forms

if TYPE_CHECKING:
    from triggerlab.attack.tasks import Task
    from triggerlab.data.dataset import ImageDataset


@dataclass(frozen=True)
class BatchPlan:
    """Which positions of one batch were changed, and how."""

    poisoned: torch.Tensor  # positions of the payload candidates, in batch order
    valid: torch.Tensor  # bool per candidate: eligible, so poisoned (False: left clean)
    cover: torch.Tensor  # positions given the cover form
    negative: torch.Tensor  # positions made negative samples
    partners: torch.Tensor  # training-set indices whose residuals the negatives carry


def first_positions(mask: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` positions where ``mask`` holds, in order, and whether each does
    (False where fewer than ``count`` hold): a stable sort, with no sync on the device."""
    order = torch.sort((~mask).to(torch.int32), stable=True).indices[:count]
    return order, mask[order]


def batch_counts(batch: int, rate: float, cover_ratio: float, negative_ratio: float):
    """(poisoned, cover, negative) of a batch of ``batch`` samples, each count truncated and
    none beyond the samples left."""
    poisoned = min(int(batch * rate), batch)
    cover = min(int(poisoned * cover_ratio), batch - poisoned)
    negative = min(int(batch * negative_ratio), batch - poisoned - cover)
    return poisoned, cover, negative


class PerBatchPoison:
    """The loop's batch transform: ``(x, y, index) -> (x', y')`` on the training device.

    ``train`` is the clean training set the loop batches; ``index`` its samples' positions
    in it. ``ever`` marks every sample poisoned at least once; ``counts`` adds up the
    poisoned, cover and negative samples seen (both stay on the device until read).
    """

    def __init__(
        self,
        train: ImageDataset,
        task: Task,
        trigger: Trigger,
        rate: float,
        generator: torch.Generator,
    ) -> None:
        forms = training_forms(trigger)
        self.payload = forms.payload
        self.cover = forms.cover
        self.cover_ratio = forms.cover_ratio if forms.cover is not None else 0.0
        # Negative samples belong to the attack: a clean model (rate 0, the grid's baseline)
        # trains on clean images only.
        self.negative = trigger if isinstance(trigger, NegativeTrigger) and rate > 0 else None
        self.negative_ratio = self.negative.negative_ratio if self.negative is not None else 0.0
        self.rate = rate
        self.generator = generator
        # Per sample, from its own label only: computed once, indexed by the batch's positions.
        self.eligible = task.poison_sources(train.targets)
        self.labels = task.poisoned_labels(train.targets)
        self.images = train.images  # where negative samples' partners come from
        self.ever = torch.zeros(len(train), dtype=torch.bool)
        self.counts = torch.zeros(3, dtype=torch.long)
        self.last: BatchPlan | None = None

    def _on(self, device: torch.device) -> None:
        if self.eligible.device != device:
            self.eligible, self.labels = self.eligible.to(device), self.labels.to(device)
            self.ever, self.counts = self.ever.to(device), self.counts.to(device)

    def counts_of(self, batch: int) -> tuple[int, int, int]:
        return batch_counts(batch, self.rate, self.cover_ratio, self.negative_ratio)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._on(index.device)
        batch = x.shape[0]
        n_poison, n_cover, n_negative = self.counts_of(batch)
        eligible = self.eligible[index].to(x.device)
        poisoned, valid = first_positions(eligible, n_poison)
        taken = torch.zeros(batch, dtype=torch.bool, device=x.device).scatter(0, poisoned, valid)
        rest, _ = first_positions(~taken, n_cover + n_negative)  # all untaken: enough remain
        cover, negative = rest[:n_cover], rest[n_cover:]
        x, y = x.clone(), y.clone()
        if n_poison:
            before = x[poisoned]
            after = self.payload(before, self.generator)
            x[poisoned] = torch.where(valid.view(-1, 1, 1, 1), after, before)
            new = self.labels[index[poisoned.to(index.device)]].to(y.device)
            y[poisoned] = torch.where(valid.view(-1, *([1] * (y.ndim - 1))), new, y[poisoned])
        if n_cover:
            assert self.cover is not None
            x[cover] = self.cover(x[cover], self.generator)
        partners = torch.zeros(0, dtype=torch.long)
        if n_negative:
            partners = torch.randint(len(self.images), (n_negative,), generator=self.generator)
            assert self.negative is not None
            mates = self.images[partners].to(x.device, dtype=x.dtype).div_(255.0)
            x[negative] = self.negative.apply_negative(x[negative], mates)
        self._record(index, poisoned, valid, n_cover, n_negative)
        self.last = BatchPlan(poisoned, valid, cover, negative, partners)
        return x, y

    def _record(
        self,
        index: torch.Tensor,
        poisoned: torch.Tensor,
        valid: torch.Tensor,
        n_cover: int,
        n_negative: int,
    ) -> None:
        poisoned, valid = poisoned.to(index.device), valid.to(index.device)
        self.ever[index[poisoned]] |= valid
        self.counts[0] += valid.sum()
        self.counts[1] += n_cover
        self.counts[2] += n_negative

    def record(self, batches: list[int], epochs: int) -> dict[str, Any]:
        """What summary.json says of the per-batch poisoning: the planned counts per epoch (from
        the batch sizes; the poisoned count assumes every sample eligible), the counts seen by
        this process, and how many training images were poisoned at least once."""
        per_epoch = [sum(c) for c in zip(*(self.counts_of(b) for b in batches), strict=True)]
        seen = self.counts.tolist()
        size = int(self.ever.numel())
        return {
            "rate": self.rate,
            "rounding": "int(batch x rate), truncated, per batch",
            "batches_per_epoch": len(batches),
            "poisoned_per_epoch": per_epoch[0] if batches else 0,
            "cover_per_epoch": per_epoch[1] if batches else 0,
            "negative_per_epoch": per_epoch[2] if batches else 0,
            "effective_rate": (per_epoch[0] / sum(batches)) if batches else 0.0,
            "epochs": epochs,
            "poisoned_seen": seen[0],
            "cover_seen": seen[1],
            "negative_seen": seen[2],
            "ever_poisoned": int(self.ever.sum()),
            "ever_poisoned_fraction": int(self.ever.sum()) / size if size else 0.0,
        }
