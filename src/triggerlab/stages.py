"""The stages of one run, each a named step that reads what the previous ones produced.

``experiment.run_experiment`` calls them in order: poison, train (and fine-tune
under reference 000's protocol), draw, defend, summarise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from triggerlab.defenses import DefenseInputs
from triggerlab.defenses.evaluation import measure_defense
from triggerlab.plots.run_figures import confusions_png, samples_png
from triggerlab.poison import PoisonResult, poison_dataset
from triggerlab.progress import Reporter
from triggerlab.rundir import RunDir, git_commit, library_versions
from triggerlab.stealth import STEALTH_SAMPLE, stealth_of_uint8
from triggerlab.tasks import Task, confusion_counts
from triggerlab.train import Schedule, fit, predict
from triggerlab.training_inputs import TrainingInputs
from triggerlab.triggers import apply_to_uint8

if TYPE_CHECKING:
    from triggerlab.experiment import Prepared

SAMPLE_COUNT = 8


@dataclass(frozen=True)
class Attack:
    """The poisoned training set and the triggered test set."""

    poisoned: PoisonResult
    triggered_test: torch.Tensor
    seconds: float


def poison_stage(p: Prepared, run: RunDir) -> Attack:
    start = time.perf_counter()
    poisoned = poison_dataset(
        p.data.train, p.task, p.trigger, torch.Generator().manual_seed(p.seeds["poison"])
    )
    run.write_poisoned(
        poisoned.indices, poisoned.source_indices, poisoned.original_labels, poisoned.new_labels
    )
    triggered = apply_to_uint8(
        p.trigger, p.data.test.images, torch.Generator().manual_seed(p.seeds["test_trigger"])
    )
    return Attack(poisoned, triggered, time.perf_counter() - start)


@dataclass
class Evaluator:
    """The task's metrics on the clean and triggered test sets; keeps the last predictions.

    ``clean`` and ``triggered`` are what the evaluated module takes: the test images, or
    their cached features when only the model's tail trains.
    """

    p: Prepared
    clean: torch.Tensor
    triggered: torch.Tensor
    seconds: float = 0.0
    last: dict[str, torch.Tensor] = field(default_factory=dict)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        start = time.perf_counter()
        self.last["clean"] = predict(model, self.p.task, self.clean, self.p.device)
        self.last["triggered"] = predict(model, self.p.task, self.triggered, self.p.device)
        self.seconds += time.perf_counter() - start
        targets = self.p.data.test.targets
        return self.p.task.metrics(targets, self.last["clean"], self.last["triggered"])


def evaluator_for(p: Prepared, attack: Attack, inputs: TrainingInputs) -> Evaluator:
    test = p.data.test
    triggered = replace(test, images=attack.triggered_test)
    return Evaluator(p, inputs.of(test, torch.zeros(0, dtype=torch.long)), inputs.of(triggered))


@dataclass
class EpochLog:
    """metrics.csv, rewritten after every epoch so a crashed run keeps what it learnt."""

    run: RunDir
    columns: tuple[str, ...]
    rows: list[list[Any]] = field(default_factory=list)

    def __call__(self, record: dict[str, Any]) -> None:
        self.rows.append([record[c] for c in self.columns])
        self.run.write_metrics(self.columns, self.rows)


def total_epochs(p: Prepared) -> int:
    stages = p.cfg.train.epochs
    return stages + (p.cfg.train.finetune_epochs if p.data.finetune is not None else 0)


def train_stage(
    p: Prepared,
    attack: Attack,
    inputs: TrainingInputs,
    evaluate: Evaluator,
    log: EpochLog,
    progress: Reporter | None,
) -> list[dict[str, Any]]:
    """Train on the poisoned training set (the whole model, or its tail on cached features)."""
    poisoned = attack.poisoned
    return fit(
        inputs.model,
        p.task,
        inputs.of(poisoned.train, poisoned.indices),
        poisoned.train.targets,
        cfg=p.cfg.train,
        device=p.device,
        generator=torch.Generator().manual_seed(p.seeds["order"]),
        evaluate=evaluate,
        on_epoch=log,
        progress=progress,
        schedule=Schedule(total_epochs=total_epochs(p)),
    )


def finetune_stage(
    p: Prepared,
    inputs: TrainingInputs,
    evaluate: Evaluator,
    history: list[dict[str, Any]],
    log: EpochLog,
    progress: Reporter | None,
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
    log.run.write_poisoned(
        poisoned.indices,
        poisoned.source_indices,
        poisoned.original_labels,
        poisoned.new_labels,
        "finetune",
    )
    after_pretune = {k: history[-1][k] for k in p.task.metric_names}
    stage_cfg = cfg.model_copy(
        update={"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr or cfg.lr}
    )
    history += fit(
        inputs.model,
        p.task,
        inputs.of(poisoned.train, poisoned.indices),
        poisoned.train.targets,
        cfg=stage_cfg,
        device=p.device,
        generator=torch.Generator().manual_seed(int(seeds[1])),
        evaluate=evaluate,
        on_epoch=log,
        progress=progress,
        schedule=Schedule(first_epoch=len(history) + 1, total_epochs=total_epochs(p)),
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


def target_label(task: Task, target: int | list[float]) -> str:
    """The target as a person reads it: a class name, or the vector in its units."""
    if isinstance(target, int):
        return task.describe(torch.tensor([target]))[0]
    return str(target)


def figure_stage(p: Prepared, attack: Attack, evaluate: Evaluator, run: RunDir) -> None:
    """samples.png from the last evaluation's predictions; confusion matrices of bins."""
    test = p.data.test
    shown = torch.nonzero(p.task.attack_mask(test.targets)).flatten()[:SAMPLE_COUNT]
    clean_pred, triggered_pred = evaluate.last["clean"], evaluate.last["triggered"]
    title = (
        f"{p.cfg.data.name}, {p.cfg.trigger.kind} trigger, "
        f"target {target_label(p.task, p.poison.target)}"
    )
    run.write_png(
        "samples.png",
        samples_png(
            test.images[shown],
            attack.triggered_test[shown],
            p.task.describe(test.targets[shown]),
            p.task.describe(clean_pred[shown]),
            p.task.describe(triggered_pred[shown]),
            title,
        ),
    )
    bins = getattr(p.task, "bins", None)
    if bins is not None:  # a regression model evaluated on bins
        truth, clean, triggered = (
            bins.assign(v) for v in (test.targets, clean_pred, triggered_pred)
        )
    elif test.bins is not None:  # reference 003's classification variant: the classes are bins
        bins, truth, clean, triggered = test.bins, test.targets, clean_pred, triggered_pred
    else:
        return
    matrices = {
        "clean": confusion_counts(truth, clean, bins.count),
        "triggered": confusion_counts(truth, triggered, bins.count),
    }
    run.write_confusions(bins.name, bins.edges(), matrices)
    run.write_png("confusion.png", confusions_png(matrices, bins.name))


def defense_stage(
    p: Prepared, attack: Attack, evaluate: Evaluator, before: dict[str, float], run: RunDir
) -> dict[str, Any] | None:
    """Apply the configured defence to the trained model and measure what it achieved."""
    spec = p.cfg.defense
    if spec.kind == "none":
        return None
    inputs = DefenseInputs(
        model=p.model,
        task=p.task,
        device=p.device,
        train=p.cfg.train,
        training=attack.poisoned.train,
        clean=p.defender,
        generator=torch.Generator().manual_seed(p.seeds["defense"]),
        seed=p.seeds["defense"],
    )
    outcome = spec.run(inputs)
    for name, png in outcome.figures.items():
        run.write_png(name, png)
    poisoned = torch.zeros(len(attack.poisoned.train), dtype=torch.bool)
    poisoned[attack.poisoned.indices] = True
    return measure_defense(
        spec,
        outcome,
        model=p.model,
        task=p.task,
        before=before,
        evaluate=evaluate,
        test=p.data.test,
        triggered_test=attack.triggered_test,
        poisoned=poisoned,
        target=p.poison.target,
    )


def build_summary(
    p: Prepared,
    run: RunDir,
    attack: Attack,
    history: list[dict[str, Any]],
    sections: dict[str, Any],
) -> dict[str, Any]:
    """summary.json: final metrics, the poisoning as done, data, model and provenance."""
    cfg, poisoned, data = p.cfg, attack.poisoned, p.data
    test = data.test
    stealth = stealth_of_uint8(test.images, attack.triggered_test)
    return {
        "status": "complete",
        "run_dir": str(run.path),
        "task": "regression" if data.is_regression else "classification",
        "final": {k: history[-1][k] for k in ("train_loss", *p.task.metric_names)},
        "poison": {
            "rate": cfg.poison.rate,
            "count": poisoned.count,
            "fraction": poisoned.fraction,
            "clean_train_size": len(data.train),
            "train_size": len(poisoned.train),
            "label_mode": cfg.poison.label_mode,
            "mode": cfg.poison.mode,
            "target": cfg.poison.target,
            "target_name": target_label(p.task, p.poison.target),
        },
        "data": {
            "name": cfg.data.name,
            "shape": list(data.shape),
            "num_classes": len(data.class_names),
            "outputs": data.target_names if data.is_regression else None,
            "label_kind": data.label_kind.name if data.is_regression else None,
            "binned_output": None if data.train.bins is None else data.train.bins.name,
            "train_size": len(data.train),
            "test_size": len(test),
        },
        "stealth": {"sample": min(STEALTH_SAMPLE, len(test)), **stealth},
        **sections,
        "model": {"name": cfg.model.name, **p.model_info.record(p.model)},
        "epochs": total_epochs(p),
        "seed": cfg.train.seed,
        "split_seed": cfg.split_seed,
        "device": str(p.device),
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
        "git": git_commit(),
    }
