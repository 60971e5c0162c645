"""Fine-tuning (used against SIG in reference 003): keep training on clean data only."""

from __future__ import annotations

from dataclasses import asdict

from triggerlab.catalogue.defenses import FinetuneSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, retrain


def run_finetune(spec: FinetuneSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    result = retrain(spec, inputs, inputs.clean.images, inputs.clean.targets)
    return DefenseOutcome({**asdict(result), "lr": spec.lr}, repaired=True)
