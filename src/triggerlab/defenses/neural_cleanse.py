"""Neural Cleanse (Wang et al., S&P 2019): reverse-engineer a trigger per class, flag outliers.

Every class gets the smallest trigger that sends clean images to it
(``trigger_reversal``: adaptive cost, early stop, best mask kept). A backdoor
target needs a far smaller mask than the other classes. Over the classes whose
search reached the attack-success threshold, with the masks' L1 norms,
``anomaly index = |l1 - median| / (1.4826 * MAD)``; a class with a
below-median norm and an index above ``anomaly_threshold`` (2) is flagged, as
in the paper, provided its mask is also at most ``max_norm_ratio`` (0.5) of
the median. That second condition is triggerlab's: with ten classes the MAD
is itself a noisy estimate, and on clean models whose masks all lie within
20 % of each other the paper's rule alone flags a class in a sizeable share
of scans; a real backdoor's mask is a fraction of the others (0.1 to 0.2 of
the median in our tests). ``max_norm_ratio: 1`` restores the paper's rule.
Classes that never reached the threshold are reported and kept out of the
median: their masks say nothing about how easy they are to reach. With fewer
than three classes reached, the scan cannot conclude and flags nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from triggerlab.catalogue.defenses import NeuralCleanseSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, frozen_weights, retrain
from triggerlab.defenses.model_outputs import NOTES, OutputKind, detect_output_kind
from triggerlab.defenses.trigger_reversal import ReversalSettings, ReversedTrigger, reverse_trigger
from triggerlab.progress import Reporter, Update, report

CONSISTENCY = 1.4826  # makes the median absolute deviation estimate a normal distribution's std
MIN_REACHED = 3  # classes whose search must succeed for a median and MAD to mean anything


def anomaly_indices(norms: torch.Tensor, reached: torch.Tensor | None = None) -> torch.Tensor:
    """``|l1 - median| / (1.4826 * MAD)`` over the reached classes; nan for the others."""
    reached = torch.ones_like(norms, dtype=torch.bool) if reached is None else reached
    if not bool(reached.any()):
        return torch.full_like(norms, math.nan, dtype=torch.float64)
    median = _median(norms[reached])
    mad = _median((norms[reached] - median).abs()).clamp_min(1e-12)
    index = (norms.double() - median).abs() / (CONSISTENCY * mad)
    return torch.where(reached, index, torch.full_like(index, math.nan))


def _median(values: torch.Tensor) -> torch.Tensor:
    """The middle value; the mean of the two middle ones for an even count, unlike torch.median."""
    return torch.quantile(values.double(), 0.5)


def flagged_classes(
    norms: torch.Tensor,
    reached: torch.Tensor | None = None,
    threshold: float = 2.0,
    max_norm_ratio: float = 0.5,
) -> list[int]:
    """Reached classes with a mask below their median, an anomaly index above ``threshold``
    and a norm at most ``max_norm_ratio`` of the median."""
    reached = torch.ones_like(norms, dtype=torch.bool) if reached is None else reached
    if int(reached.sum()) < MIN_REACHED:
        return []
    index = anomaly_indices(norms, reached)
    median = _median(norms[reached])
    return [
        c
        for c in range(norms.numel())
        if reached[c]
        and norms[c] < median
        and index[c] > threshold
        and norms[c] <= max_norm_ratio * median
    ]


@dataclass
class CleanseScan:
    """A reversed trigger per class, their mask norms, anomaly indices and the verdict."""

    triggers: list[ReversedTrigger]
    norms: list[float]
    anomaly_index: list[float]  # nan for classes whose search never reached the threshold
    flagged: list[int]
    output_kind: OutputKind
    seconds: float

    @property
    def reached(self) -> list[bool]:
        return [t.reached for t in self.triggers]

    @property
    def conclusive(self) -> bool:
        return sum(self.reached) >= MIN_REACHED

    @property
    def notes(self) -> list[str]:
        notes = [NOTES[self.output_kind]] if NOTES[self.output_kind] else []
        never = [t.target for t in self.triggers if not t.reached]
        if never:
            notes.append(
                f"classes {never}: the reversed trigger never reached the attack-success "
                "threshold; they are left out of the median"
            )
        if not self.conclusive:
            notes.append(
                f"only {sum(self.reached)} classes reached the threshold (at least "
                f"{MIN_REACHED} are needed): the scan cannot conclude; give it more steps"
            )
        if any(t.stopped == "time budget" for t in self.triggers):
            notes.append("the time budget ended some searches early")
        return notes

    def figure(self, class_names: tuple[str, ...]) -> bytes:
        from triggerlab.figures import reversed_triggers_png  # matplotlib: when drawn

        return reversed_triggers_png(self.triggers, self.anomaly_index, class_names)


def scan_and_flag(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    settings: ReversalSettings,
    device: torch.device,
    generator: torch.Generator,
    anomaly_threshold: float = 2.0,
    max_norm_ratio: float = 0.5,
    time_budget: float | None = None,
    progress: Reporter | None = None,
) -> CleanseScan:
    """Reverse a trigger for every class (weights untouched) and flag the outliers.

    ``time_budget`` seconds are shared out among the classes still to search.
    """
    start = time.monotonic()
    kind = detect_output_kind(model, images[: settings.batch_size], device)
    triggers = []
    with frozen_weights(model):
        for c in range(num_classes):
            deadline = math.inf
            if time_budget is not None:
                left = time_budget - (time.monotonic() - start)
                deadline = time.monotonic() + max(left, 0.0) / (num_classes - c)
            trigger = reverse_trigger(
                model,
                images,
                labels,
                c,
                settings=settings,
                kind=kind,
                device=device,
                generator=generator,
                deadline=deadline,
                progress=progress,
            )
            triggers.append(trigger)
            note = f"class {c} ({c + 1} of {num_classes}): {_outcome(trigger)}"
            report(progress, Update("neural cleanse", c + 1, num_classes, note, milestone=True))
    norms = torch.tensor([t.l1 for t in triggers])
    reached = torch.tensor([t.reached for t in triggers])
    return CleanseScan(
        triggers,
        norms.tolist(),
        anomaly_indices(norms, reached).tolist(),
        flagged_classes(norms, reached, anomaly_threshold, max_norm_ratio),
        kind,
        time.monotonic() - start,
    )


def _outcome(trigger: ReversedTrigger) -> str:
    never = "" if trigger.reached else ", never reached the threshold"
    return (
        f"mask L1 {trigger.l1:.1f}, success {trigger.success:.2f}, "
        f"{trigger.steps} steps ({trigger.stopped}){never}"
    )


def unlearning_set(
    images: torch.Tensor, triggers: list[ReversedTrigger], share: float, generator: torch.Generator
) -> torch.Tensor:
    """Clean uint8 images with ``share`` of them stamped by the flagged classes' reversed triggers.

    Their labels stay the true ones, so training on them unlearns the trigger.
    """
    stamped = images.clone()
    chosen = torch.randperm(images.shape[0], generator=generator)[: round(share * images.shape[0])]
    for number, index in enumerate(chosen.tensor_split(len(triggers))):
        x = images[index].float() / 255.0
        stamped[index] = (triggers[number].apply(x) * 255.0).round().clamp(0, 255).byte()
    return stamped


def reversal_settings(spec: NeuralCleanseSpec) -> ReversalSettings:
    return ReversalSettings(
        steps=spec.steps,
        batches_per_step=spec.batches_per_step,
        init_cost=spec.init_cost,
        attack_success=spec.attack_success,
    )


def run_neural_cleanse(spec: NeuralCleanseSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    clean, task = inputs.clean, inputs.task
    found = scan_and_flag(
        inputs.model,
        clean.images,
        clean.targets,
        task.num_outputs,
        settings=reversal_settings(spec),
        device=inputs.device,
        generator=inputs.generator,
        anomaly_threshold=spec.anomaly_threshold,
        max_norm_ratio=spec.max_norm_ratio,
    )
    report_ = {
        "clean_samples": len(clean),
        "l1": found.norms,
        "anomaly_index": [None if math.isnan(v) else v for v in found.anomaly_index],
        "reversed_success": [t.success for t in found.triggers],
        "reached": found.reached,
        "steps_run": [t.steps for t in found.triggers],
        "flagged": found.flagged,
        "conclusive": found.conclusive,
        "output_kind": found.output_kind,
        "notes": found.notes,
    }
    outcome = DefenseOutcome(
        report_,
        suspect_classes=found.flagged,
        class_anomaly=found.anomaly_index,
        figures={"reversed_triggers.png": found.figure(task.class_names)},
    )
    if spec.unlearn and found.flagged:
        stamped = [found.triggers[c] for c in found.flagged]
        images = unlearning_set(clean.images, stamped, 0.2, inputs.generator)
        retrain(spec, inputs, images, clean.targets)
        outcome.repaired = True
        report_["epochs"] = spec.epochs
    return outcome
