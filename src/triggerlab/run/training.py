"""Training a run's model: on the poisoned training set, then, under reference 000's protocol,
fine-tuning on the held-out subject; with checkpoints and resume, or taken from a model another
run of the grid trained (shared training)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from triggerlab.progress import Reporter
from triggerlab.run.context import RunContext
from triggerlab.run.inputs import TrainingInputs
from triggerlab.run.rundir import RunDir, metrics_columns
from triggerlab.run.shared_training import (
    SharedTraining,
    TrainingRecord,
    evaluation_key,
    measured_anew,
)
from triggerlab.run.stack_group import fit_or_join
from triggerlab.run.stages import Attack, Evaluator, finetune_seeds
from triggerlab.train.augment import Augment
from triggerlab.train.checkpoint import Checkpoint
from triggerlab.train.heads import fit_head
from triggerlab.train.loop import StagePlan


@dataclass
class EpochLog:
    """metrics.csv, rewritten after every epoch so a crashed run keeps what it learnt;
    ``records`` starts with the epochs a resumed run had logged before it was killed."""

    run: RunDir
    columns: tuple[str, ...]
    records: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, record: dict[str, Any]) -> None:
        self.replay([record])

    def replay(self, records: list[dict[str, Any]]) -> None:
        """Add epochs logged elsewhere (a shared trained model's) and write them at once."""
        self.records.extend(records)
        self.run.write_metrics(self.columns, [[r[c] for c in self.columns] for r in self.records])


@dataclass(frozen=True)
class Trained:
    """What training returned, and how many images it sent through the frozen body."""

    record: TrainingRecord
    forwards: int
    loaded: bool = False  # the model another run of the grid trained (``shared``)


@dataclass(frozen=True)
class TrainingJob:
    """What both training stages read: the run, its attack and training inputs, how it
    evaluates, where its epochs are logged and reported, and the checkpoint it resumes."""

    ctx: RunContext
    attack: Attack
    inputs: TrainingInputs
    evaluate: Evaluator
    log: EpochLog
    progress: Reporter | None
    resume: Checkpoint | None

    def plan(self, name: str, earlier: list[dict[str, Any]] | None = None) -> StagePlan:
        return stage_plan(self.ctx, self.log.run, name, self.resume, earlier)


def without_stage(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "stage"}


def stage_epochs(ctx: RunContext) -> list[tuple[str, int]]:
    """The run's training stages and their epochs, as checkpoints name them."""
    stages = [("train", ctx.cfg.train.epochs)]
    if ctx.data.finetune is not None:
        stages.append(("finetune", ctx.cfg.train.finetune_epochs))
    return stages


def total_epochs(ctx: RunContext) -> int:
    epochs = ctx.cfg.train.epochs
    return epochs + (ctx.cfg.train.finetune_epochs if ctx.data.finetune is not None else 0)


def make_augment(ctx: RunContext) -> Augment | None:
    cfg = ctx.cfg.train
    if not cfg.augment:
        return None
    generator = torch.Generator().manual_seed(ctx.seeds["augment"])
    return Augment(cfg.augment, cfg.crop_padding, generator)


def stage_plan(
    ctx: RunContext,
    run: RunDir,
    name: str,
    resume: Checkpoint | None,
    earlier: list[dict[str, Any]] | None = None,
) -> StagePlan:
    """Where a stage's checkpoints go, and the checkpoint it continues from; ``earlier``
    holds the records of the stage before it (kept in its checkpoints)."""
    earlier = earlier or []
    return StagePlan(
        first_epoch=len(earlier) + 1,
        total_epochs=total_epochs(ctx),
        name=name,
        folder=run.path if ctx.cfg.train.checkpoint_every else None,
        resume=resume if resume is not None and resume.stage == name else None,
        earlier=[{**r, "stage": "train"} for r in earlier],
    )


def train(
    ctx: RunContext,
    attack: Attack,
    inputs: TrainingInputs,
    evaluate: Evaluator,
    *,
    run: RunDir,
    progress: Reporter | None,
    resume: Checkpoint | None,
    shared: SharedTraining | None,
) -> Trained:
    """Train the run's model (in place), or load the model another run of the grid trained
    with the same training key and replay its epochs into metrics.csv."""
    columns = metrics_columns(ctx.task.metric_names)
    with shared.lock() if shared is not None else contextlib.nullcontext():
        record = shared.load_into(ctx.model) if shared is not None else None
        if record is not None:  # trained by another run of the grid: its epochs, as it logged
            if record.evaluated not in (None, evaluation_key(ctx.cfg)):  # another trigger's
                record = measured_anew(record, evaluate.metrics(ctx.model))
            EpochLog(run, columns).replay(record.log_records)
            return Trained(record, 0, loaded=True)
        earlier = [] if resume is None else [without_stage(r) for r in resume.history]
        log = EpochLog(run, columns, earlier)
        trained = _train(TrainingJob(ctx, attack, inputs, evaluate, log, progress, resume))
        if shared is not None:
            shared.save(ctx.model, trained.record)
        return trained


def _train(job: TrainingJob) -> Trained:
    start = time.perf_counter()
    history, forwards = _train_stage(job)
    protocol = None
    if job.attack.finetune is not None:
        history, protocol, more = _finetune_stage(job, history)
        forwards += more
    record = TrainingRecord(
        history,
        list(job.log.records),
        protocol,
        time.perf_counter() - start,
        evaluation_key(job.ctx.cfg),
    )
    return Trained(record, forwards)


def _train_stage(job: TrainingJob) -> tuple[list[dict[str, Any]], int]:
    """Train on the poisoned training set (the whole model, or its tail on cached features).

    Resuming a run killed in a later stage: this stage's records come from the checkpoint.
    """
    ctx, resume = job.ctx, job.resume
    if resume is not None and resume.stage != "train":
        return [without_stage(r) for r in resume.history if r.get("stage") == "train"], 0
    poisoned, per_batch = job.attack.train, job.attack.per_batch
    # Per-batch poisoning trains on the clean set and poisons it in the loop (no feature cache).
    part = poisoned.train if per_batch is None else ctx.data.train
    features = job.inputs.of(part, poisoned.changed)
    history = fit_or_join(  # a member of a stack group trains with its stack
        job.inputs.model,
        ctx.task,
        features.values,
        part.targets,
        cfg=ctx.cfg.train,
        device=ctx.device,
        generator=torch.Generator().manual_seed(ctx.seeds["order"]),
        evaluate=job.evaluate.metrics,
        on_epoch=job.log,
        progress=job.progress,
        stage=job.plan("train"),
        augment=make_augment(ctx),
        transform=per_batch,
    )
    return history, features.forwards


def _finetune_stage(
    job: TrainingJob, pretuned: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """Reference 000's second stage: fine-tune the pre-tuned model on a few images of the
    held-out subject, poisoned at the same rate; its epochs continue the pre-tuning's.
    Returns the whole run's epochs, the protocol's record and the body's forwards."""
    ctx, attack = job.ctx, job.attack
    poisoned = attack.finetune
    assert poisoned is not None
    cfg = ctx.cfg.train
    after_pretune = {k: pretuned[-1][k] for k in ctx.task.metric_names}
    stage_cfg = cfg.model_copy(
        update={"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr or cfg.lr}
    )
    per_batch = attack.finetune_per_batch
    part = poisoned.train if per_batch is None or ctx.data.finetune is None else ctx.data.finetune
    features = job.inputs.of(part, poisoned.changed)
    finetuned = fit_head(
        job.inputs.model,
        ctx.task,
        features.values,
        part.targets,
        cfg=stage_cfg,
        device=ctx.device,
        generator=torch.Generator().manual_seed(finetune_seeds(ctx)[1]),
        evaluate=job.evaluate.metrics,
        on_epoch=job.log,
        progress=job.progress,
        stage=job.plan("finetune", earlier=pretuned),
        augment=make_augment(ctx),
        transform=per_batch,
    )
    held_out = ctx.data.test.groups
    protocol = {
        "split": "pretune_finetune",
        "held_out_subject": None if held_out is None else int(held_out[0]),
        "pretune_size": len(ctx.data.train),
        "finetune_size": len(poisoned.train),
        "finetune_poisoned": poisoned.count,
        "pretune_epochs": cfg.epochs,
        "finetune_epochs": cfg.finetune_epochs,
        "finetune_lr": stage_cfg.lr,
        "after_pretune": after_pretune,
    }
    return [*pretuned, *finetuned], protocol, features.forwards


def forward_counts(ctx: RunContext, inputs: TrainingInputs, done: int) -> dict[str, Any]:
    """How many images went through the frozen body (``done`` on the cached path), and how
    many the cache saved against training the whole model on images."""
    epochs_and_sizes = [(ctx.cfg.train.epochs, len(ctx.data.train))]
    if ctx.data.finetune is not None:
        epochs_and_sizes.append((ctx.cfg.train.finetune_epochs, len(ctx.data.finetune)))
    test = len(ctx.data.test)
    whole_model = sum(epochs * (size + 2 * test) for epochs, size in epochs_and_sizes)
    done = done if inputs.pool is not None else whole_model
    return {
        **inputs.record,
        "backbone_forwards": done,
        "backbone_forwards_avoided": whole_model - done,
    }
