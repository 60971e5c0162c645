"""The stages of one run. Each reads the run's context and what earlier stages returned, and
returns what it produced: poison -> the attack's data; evaluate -> metrics and predictions;
draw -> figures in the run directory; defend -> what the defence achieved; summarise ->
``summary.json``'s content. Training is in ``training.py``."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from triggerlab.attack.per_batch import PerBatchPoison
from triggerlab.attack.poison import PoisonResult, poison_count, poison_dataset
from triggerlab.attack.stamping import stamp_all
from triggerlab.attack.tasks import Task, confusion_counts
from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError
from triggerlab.run.context import RunContext
from triggerlab.run.inputs import TrainingInputs
from triggerlab.run.prepare import fresh_model
from triggerlab.run.rundir import TRIGGER_PREVIEW, RunDir, git_commit, library_versions
from triggerlab.train.devices import Precision
from triggerlab.train.loop import batch_starts, predict

SAMPLE_COUNT = 8
PREVIEW_SIDE = 112  # the report's trigger gallery shows each run's preview at about this size


@dataclass(frozen=True)
class Attack:
    """The attack's data: the poisoned training set, the poisoned fine-tuning set (reference
    000's protocol; None otherwise) and the triggered test set.

    Under per-batch poisoning, ``per_batch`` (``finetune_per_batch``) poisons the clean
    training (fine-tuning) set inside the loop, and ``train`` is the fixed poisoned set a
    training-set defence is handed, as BackdoorBench saves one for WaNet's and BPP's."""

    train: PoisonResult
    finetune: PoisonResult | None
    triggered_test: torch.Tensor
    seconds: float
    per_batch: PerBatchPoison | None = None
    finetune_per_batch: PerBatchPoison | None = None


def finetune_seeds(ctx: RunContext) -> tuple[int, int]:
    """The fine-tuning stage's two streams: its poisoning and its batch order."""
    poison_seed, order_seed = np.random.SeedSequence(ctx.seeds["finetune"]).generate_state(2)
    return int(poison_seed), int(order_seed)


def trigger_test_set(ctx: RunContext) -> torch.Tensor:
    """The run's triggered test set, stamped where ``trigger.stage`` says."""
    generator = torch.Generator().manual_seed(ctx.seeds["test_trigger"])
    return stamp_all(ctx.stamping, ctx.trigger, ctx.data.test, generator)


def per_batch_poison(ctx: RunContext, part: ImageDataset, stage: int) -> PerBatchPoison | None:
    """The loop's per-batch poisoning of ``part`` (None under static poisoning); ``stage`` 0
    trains, 1 fine-tunes, each with its own stream. A ``poison.count`` becomes the rate
    ``count / N``."""
    if ctx.cfg.poison_schedule != "per_batch":
        return None
    seed = int(np.random.SeedSequence(ctx.seeds["per_batch"]).generate_state(2)[stage])
    rate = ctx.poison.rate
    if rate is None:  # a count: its share of this set
        count = poison_count(ctx.poison, len(part))
        rate = count / len(part) if len(part) else 0.0
        batch = ctx.cfg.train.batch_size
        if count and int(min(batch, len(part)) * rate) == 0:
            raise ConfigError(
                f"poison.count: {count} of {len(part)} samples is a rate of {rate:.4g}, which "
                f"per-batch poisoning truncates to 0 samples in a batch of {batch} "
                "(train.batch_size); expected a larger count or batch, or poison.schedule: static"
            )
    generator = torch.Generator().manual_seed(seed)
    return PerBatchPoison(part, ctx.task, ctx.trigger, rate, generator)


def poison(ctx: RunContext, run: RunDir) -> Attack:
    """Poison the training (and fine-tuning) set, record the indices, trigger the test set."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(ctx.seeds["poison"])
    train = poison_dataset(ctx.data.train, ctx.task, ctx.trigger, generator, stamping=ctx.stamping)
    run.write_poisoned(train)
    finetune = None
    if ctx.data.finetune is not None:
        generator = torch.Generator().manual_seed(finetune_seeds(ctx)[0])
        finetune = poison_dataset(
            ctx.data.finetune, ctx.task, ctx.trigger, generator, "fine-tuning set", ctx.stamping
        )
        run.write_poisoned(finetune, "finetune")
    triggered = trigger_test_set(ctx)
    per_batch = per_batch_poison(ctx, ctx.data.train, 0)
    tuned = None if ctx.data.finetune is None else per_batch_poison(ctx, ctx.data.finetune, 1)
    return Attack(train, finetune, triggered, time.perf_counter() - start, per_batch, tuned)


def per_batch_record(
    poisoning: PerBatchPoison, size: int, batch_size: int, epochs: int
) -> dict[str, Any]:
    """summary.json's account of per-batch poisoning over ``epochs`` of ``size`` samples."""
    batches = [min(batch_size, size - start) for start in batch_starts(size, batch_size)]
    return poisoning.record(batches, epochs)


def poison_record(ctx: RunContext, attack: Attack) -> dict[str, Any]:
    """How the training data was poisoned: the schedule, and under per_batch its counts.

    Per batch, ``count``, ``cover_count`` and ``fraction`` are those of one epoch (what the
    model trained on), and ``static_set`` those of the fixed set defences are handed."""
    record: dict[str, Any] = {"schedule": ctx.cfg.poison_schedule}
    if attack.per_batch is None:
        return record
    train = ctx.cfg.train
    per_batch = per_batch_record(
        attack.per_batch, len(ctx.data.train), train.batch_size, train.epochs
    )
    record["per_batch"] = per_batch
    record["count"] = per_batch["poisoned_per_epoch"]
    record["cover_count"] = per_batch["cover_per_epoch"]
    record["fraction"] = per_batch["effective_rate"]
    record["static_set"] = {
        "count": attack.train.count,
        "cover_count": int(attack.train.cover_indices.numel()),
        "fraction": attack.train.fraction,
        "note": "the fixed poisoned set training-set defences are handed (poisoned_indices.csv, "
        "cover_indices.csv); the model trained on batches poisoned anew (per_batch)",
    }
    if attack.finetune_per_batch is not None and ctx.data.finetune is not None:
        record["finetune_per_batch"] = per_batch_record(
            attack.finetune_per_batch,
            len(ctx.data.finetune),
            train.batch_size,
            train.finetune_epochs,
        )
    return record


@dataclass(frozen=True)
class Evaluation:
    """The task's metrics on the clean and triggered test sets, and the predictions behind
    them."""

    metrics: dict[str, float]
    clean: torch.Tensor
    triggered: torch.Tensor


@dataclass
class Evaluator:
    """Evaluates a model on the test set as the trained module takes it: the images, or their
    cached features when only the model's tail trains. ``seconds`` adds up its time."""

    ctx: RunContext
    clean: torch.Tensor
    triggered: torch.Tensor
    forwards: int  # images sent through the frozen body to make ``clean`` and ``triggered``
    seconds: float = 0.0

    @classmethod
    def of(cls, ctx: RunContext, attack: Attack, inputs: TrainingInputs) -> Evaluator:
        test = ctx.data.test
        clean = inputs.of(test, torch.zeros(0, dtype=torch.long))
        triggered = inputs.of(replace(test, images=attack.triggered_test))
        values = [_evaluated(x.values) for x in (clean, triggered)]
        return cls(ctx, *values, clean.forwards + triggered.forwards)

    def __call__(self, model: nn.Module) -> Evaluation:
        start = time.perf_counter()
        ctx = self.ctx
        precision = Precision(ctx.cfg.train.precision, ctx.device)
        clean = predict(model, ctx.task, self.clean, ctx.device, precision)
        triggered = predict(model, ctx.task, self.triggered, ctx.device, precision)
        self.seconds += time.perf_counter() - start
        return Evaluation(
            ctx.task.metrics(ctx.data.test.targets, clean, triggered), clean, triggered
        )

    def metrics(self, model: nn.Module) -> dict[str, float]:
        """The metrics alone: what the training loop logs after each epoch."""
        return self(model).metrics


def _evaluated(values: torch.Tensor) -> torch.Tensor:
    """Cached features made float32 once, not at every epoch's evaluation (the same values:
    evaluation makes them float32 anyway); images stay uint8."""
    return values.float() if values.is_floating_point() else values


def target_label(task: Task, target: int | list[float]) -> str:
    """The target as a person reads it: a class name, or the vector in its units."""
    if isinstance(target, int):
        return task.describe(torch.tensor([target]))[0]
    return str(target)


def trigger_preview_png(image: torch.Tensor) -> bytes:
    """One triggered uint8 image ``[C, H, W]`` enlarged (nearest neighbour) for display."""
    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    scale = max(1, PREVIEW_SIDE // max(pil.size))
    buffer = io.BytesIO()
    pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def draw(ctx: RunContext, attack: Attack, final: Evaluation, run: RunDir) -> None:
    """samples.png from the final predictions, trigger.png (the first attacked test image
    under the trigger: what the report's gallery shows), and confusion matrices of bins."""
    from triggerlab.figures import confusions_png, samples_png  # when a run draws

    test = ctx.data.test
    attacked = torch.nonzero(ctx.task.attack_mask(test.targets)).flatten()
    shown = attacked[:SAMPLE_COUNT]
    title = (
        f"{ctx.cfg.data.name}, {ctx.cfg.trigger.kind} trigger, "
        f"target {target_label(ctx.task, ctx.poison.target)}"
    )
    run.write_png(
        "samples.png",
        samples_png(
            test.images[shown],
            attack.triggered_test[shown],
            ctx.task.describe(test.targets[shown]),
            ctx.task.describe(final.clean[shown]),
            ctx.task.describe(final.triggered[shown]),
            title,
        ),
    )
    first = int(attacked[0]) if attacked.numel() else 0
    run.write_png(TRIGGER_PREVIEW, trigger_preview_png(attack.triggered_test[first]))
    bins = getattr(ctx.task, "bins", None)
    if bins is not None:  # a regression model evaluated on bins
        truth, clean, triggered = (
            bins.assign(v) for v in (test.targets, final.clean, final.triggered)
        )
    elif test.bins is not None:  # reference 003's classification variant: the classes are bins
        bins, truth, clean, triggered = test.bins, test.targets, final.clean, final.triggered
    else:
        return
    matrices = {
        "clean": confusion_counts(truth, clean, bins.count),
        "triggered": confusion_counts(truth, triggered, bins.count),
    }
    run.write_confusions(bins.name, bins.edges(), matrices)
    run.write_png("confusion.png", confusions_png(matrices, bins.name))


def defend(
    ctx: RunContext, attack: Attack, evaluate: Evaluator, before: dict[str, float], run: RunDir
) -> dict[str, Any] | None:
    """Apply the configured defence to the trained model and measure what it achieved.

    The defence sees only its ``DefenseInputs``; the measurement alone sees the test set and
    which samples were poisoned."""
    spec = ctx.cfg.defense
    if spec.kind == "none":
        return None
    from triggerlab.defenses.evaluation import measure_defense  # a run without one: never
    from triggerlab.defenses.leakage import defense_inputs

    poisoned = torch.zeros(len(attack.train.train), dtype=torch.bool)
    poisoned[attack.train.indices] = True
    inputs = defense_inputs(  # checked: neither the test set nor the poisoned samples
        spec,
        model=ctx.model,
        task=ctx.task,
        device=ctx.device,
        train=ctx.cfg.train,
        training=attack.train.train,
        clean=ctx.defender,
        seed=ctx.seeds["defense"],
        fresh_model=lambda: fresh_model(ctx),
        test=ctx.data.test,
        triggered_test=attack.triggered_test,
        poisoned=poisoned,
    )
    torch.manual_seed(ctx.seeds["defense"])  # the same defence on a shared or own-trained model
    outcome = spec.run(inputs)
    for name, png in outcome.figures.items():
        run.write_png(name, png)
    return measure_defense(
        spec,
        outcome,
        model=ctx.model,
        task=ctx.task,
        before=before,
        evaluate=evaluate.metrics,
        test=ctx.data.test,
        triggered_test=attack.triggered_test,
        poisoned=poisoned,
        target=ctx.poison.target,
    )


def summarise(
    ctx: RunContext,
    run: RunDir,
    attack: Attack,
    history: list[dict[str, Any]],
    sections: dict[str, Any],
) -> dict[str, Any]:
    """summary.json: final metrics, the poisoning as done, data, model and provenance."""
    cfg, poisoned, data = ctx.cfg, attack.train, ctx.data
    test = data.test
    # scikit-image (and SciPy under it): imported here, not with the run's modules
    from triggerlab.attack.stealth import STEALTH_SAMPLE, stealth_of_uint8

    stealth = stealth_of_uint8(test.images, attack.triggered_test)
    return {
        "status": "complete",
        "run_dir": str(run.path),
        "task": "regression" if data.is_regression else "classification",
        "final": {k: history[-1][k] for k in ("train_loss", *ctx.task.metric_names)},
        "poison": {
            "rate": cfg.poison.rate,
            "count": poisoned.count,
            "cover_count": int(poisoned.cover_indices.numel()),
            "fraction": poisoned.fraction,
            "clean_train_size": len(data.train),
            "train_size": len(poisoned.train),
            "label_mode": ctx.poison.label_mode,  # as run: paper resolved
            "mode": cfg.poison.mode,
            "target": cfg.poison.target,
            "target_name": target_label(ctx.task, ctx.poison.target),
            **poison_record(ctx, attack),
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
            # the test images ASR and RA are shares of, for their binomial intervals
            "attack_test_size": int(ctx.task.attack_mask(test.targets).sum()),
        },
        "trigger": cfg.trigger.model_dump(mode="json"),
        # where it was stamped, and the image size its pixel sizes refer to
        "trigger_stamping": ctx.stamping.record(),
        "stealth": {"sample": min(STEALTH_SAMPLE, len(test)), **stealth},
        **sections,
        "model": {"name": cfg.model.name, **ctx.model_info.record(ctx.model)},
        "epochs": len(history),
        "seed": cfg.train.seed,
        "split_seed": cfg.split_seed,
        "device": str(ctx.device),
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
        "git": git_commit(),
    }
