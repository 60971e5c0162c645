"""The stages of one run, each a named step that reads what the previous ones produced.

``experiment.run_experiment`` calls them in order: poison, train (and fine-tune
under reference 000's protocol), draw, defend, summarise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from triggerlab.attack.poison import PoisonResult, poison_dataset
from triggerlab.attack.stealth import STEALTH_SAMPLE, stealth_of_uint8
from triggerlab.attack.tasks import Task, confusion_counts
from triggerlab.defenses import DefenseInputs
from triggerlab.defenses.evaluation import measure_defense
from triggerlab.run.figures import confusions_png, samples_png
from triggerlab.run.inputs import TrainingInputs
from triggerlab.run.rundir import RunDir, git_commit, library_versions
from triggerlab.train.devices import Precision
from triggerlab.train.loop import predict
from triggerlab.triggers import apply_to_uint8

if TYPE_CHECKING:
    from triggerlab.run.experiment import Prepared

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
    run.write_poisoned(poisoned)
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
        precision = Precision(self.p.cfg.train.precision, self.p.device)
        self.last["clean"] = predict(model, self.p.task, self.clean, self.p.device, precision)
        self.last["triggered"] = predict(
            model, self.p.task, self.triggered, self.p.device, precision
        )
        self.seconds += time.perf_counter() - start
        targets = self.p.data.test.targets
        return self.p.task.metrics(targets, self.last["clean"], self.last["triggered"])


def evaluator_for(p: Prepared, attack: Attack, inputs: TrainingInputs) -> Evaluator:
    test = p.data.test
    triggered = replace(test, images=attack.triggered_test)
    return Evaluator(p, inputs.of(test, torch.zeros(0, dtype=torch.long)), inputs.of(triggered))


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
        fresh_model=lambda: fresh_model(p),
    )
    torch.manual_seed(p.seeds["defense"])  # the same defence on a shared or own-trained model
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


def fresh_model(p: Prepared) -> nn.Module:
    """The run's model as it was before training: same architecture, same initial weights."""
    from triggerlab.run.prepare import check_model
    from triggerlab.train.devices import model_memory_format

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seeds["init"])
        model, _ = check_model(p.cfg, p.data)
    return model.to(device=p.device, memory_format=model_memory_format(p.model))


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
            "cover_count": int(poisoned.cover_indices.numel()),
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
        "trigger": cfg.trigger.model_dump(mode="json"),
        "stealth": {"sample": min(STEALTH_SAMPLE, len(test)), **stealth},
        **sections,
        "model": {"name": cfg.model.name, **p.model_info.record(p.model)},
        "epochs": len(history),
        "seed": cfg.train.seed,
        "split_seed": cfg.split_seed,
        "device": str(p.device),
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
        "git": git_commit(),
    }
