"""The training stages of a run: the poisoned training set, then, under reference 000's
protocol, fine-tuning on the held-out subject; with checkpoints and resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from triggerlab.attack.poison import poison_dataset
from triggerlab.progress import Reporter
from triggerlab.run.inputs import TrainingInputs
from triggerlab.run.rundir import RunDir
from triggerlab.train.augment import Augment
from triggerlab.train.checkpoint import Checkpoint
from triggerlab.train.loop import Schedule, fit

if TYPE_CHECKING:
    from triggerlab.run.experiment import Prepared
    from triggerlab.run.stages import Attack, Evaluator


@dataclass
class EpochLog:
    """metrics.csv, rewritten after every epoch so a crashed run keeps what it learnt."""

    run: RunDir
    columns: tuple[str, ...]
    records: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, record: dict[str, Any]) -> None:
        self.replay([record])

    def replay(self, records: list[dict[str, Any]]) -> None:
        """Add epochs logged elsewhere (a shared trained model's) and write them at once."""
        self.records.extend(records)
        self.run.write_metrics(self.columns, [[r[c] for c in self.columns] for r in self.records])


def strip_stage(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "stage"}


def total_epochs(p: Prepared) -> int:
    stages = p.cfg.train.epochs
    return stages + (p.cfg.train.finetune_epochs if p.data.finetune is not None else 0)


def make_augment(p: Prepared) -> Augment | None:
    cfg = p.cfg.train
    if not cfg.augment:
        return None
    generator = torch.Generator().manual_seed(p.seeds["augment"])
    return Augment(cfg.augment, cfg.crop_padding, generator)


def stage_schedule(
    p: Prepared,
    log: EpochLog,
    name: str,
    resume: Checkpoint | None,
    earlier: list[dict[str, Any]] | None = None,
) -> Schedule:
    """Where a stage's checkpoints go, and the checkpoint it continues from; ``earlier``
    holds the records of the stage before it (kept in its checkpoints)."""
    earlier = earlier or []
    return Schedule(
        first_epoch=len(earlier) + 1,
        total_epochs=total_epochs(p),
        name=name,
        folder=log.run.path if p.cfg.train.checkpoint_every else None,
        resume=resume if resume is not None and resume.stage == name else None,
        earlier=[{**r, "stage": "train"} for r in earlier],
    )


def train_stage(
    p: Prepared,
    attack: Attack,
    inputs: TrainingInputs,
    evaluate: Evaluator,
    log: EpochLog,
    progress: Reporter | None,
    resume: Checkpoint | None = None,
) -> list[dict[str, Any]]:
    """Train on the poisoned training set (the whole model, or its tail on cached features).

    Resuming a run killed in a later stage: this stage's records come from the checkpoint.
    """
    if resume is not None and resume.stage != "train":
        return [strip_stage(r) for r in resume.history if r.get("stage") == "train"]
    poisoned = attack.poisoned
    return fit(
        inputs.model,
        p.task,
        inputs.of(poisoned.train, poisoned.changed),
        poisoned.train.targets,
        cfg=p.cfg.train,
        device=p.device,
        generator=torch.Generator().manual_seed(p.seeds["order"]),
        evaluate=evaluate,
        on_epoch=log,
        progress=progress,
        schedule=stage_schedule(p, log, "train", resume),
        augment=make_augment(p),
    )


def finetune_stage(
    p: Prepared,
    inputs: TrainingInputs,
    evaluate: Evaluator,
    history: list[dict[str, Any]],
    log: EpochLog,
    progress: Reporter | None,
    resume: Checkpoint | None = None,
) -> dict[str, Any]:
    """Reference 000's second stage: fine-tune the pre-tuned model on a few images of the
    held-out subject, poisoned at the same rate; its epochs continue ``history``."""
    assert p.data.finetune is not None
    cfg = p.cfg.train
    seeds = np.random.SeedSequence(p.seeds["finetune"]).generate_state(2)
    poisoned = poison_dataset(
        p.data.finetune,
        p.task,
        p.trigger,
        torch.Generator().manual_seed(int(seeds[0])),
        "fine-tuning set",
    )
    log.run.write_poisoned(poisoned, "finetune")
    after_pretune = {k: history[-1][k] for k in p.task.metric_names}
    stage_cfg = cfg.model_copy(
        update={"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr or cfg.lr}
    )
    history += fit(
        inputs.model,
        p.task,
        inputs.of(poisoned.train, poisoned.changed),
        poisoned.train.targets,
        cfg=stage_cfg,
        device=p.device,
        generator=torch.Generator().manual_seed(int(seeds[1])),
        evaluate=evaluate,
        on_epoch=log,
        progress=progress,
        schedule=stage_schedule(p, log, "finetune", resume, earlier=list(history)),
        augment=make_augment(p),
    )
    held_out = p.data.test.groups
    return {
        "split": "pretune_finetune",
        "held_out_subject": None if held_out is None else int(held_out[0]),
        "pretune_size": len(p.data.train),
        "finetune_size": len(poisoned.train),
        "finetune_poisoned": poisoned.count,
        "pretune_epochs": cfg.epochs,
        "finetune_epochs": cfg.finetune_epochs,
        "finetune_lr": stage_cfg.lr,
        "after_pretune": after_pretune,
    }


def forward_counts(p: Prepared, inputs: TrainingInputs) -> dict[str, Any]:
    """How many images went through the frozen body, and how many the cache saved."""
    stages_ = [(p.cfg.train.epochs, len(p.data.train))]
    if p.data.finetune is not None:
        stages_.append((p.cfg.train.finetune_epochs, len(p.data.finetune)))
    test = len(p.data.test)
    whole_model = sum(epochs * (size + 2 * test) for epochs, size in stages_)
    done = inputs.forwards if inputs.pool is not None else whole_model
    return {
        **inputs.record,
        "backbone_forwards": done,
        "backbone_forwards_avoided": whole_model - done,
    }
