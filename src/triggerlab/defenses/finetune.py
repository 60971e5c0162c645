"""Fine-tuning (used against SIG in reference 003): keep training on clean data only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, RetrainingSpec


class FinetuneSpec(RetrainingSpec):
    """Train on the held-back clean data alone."""

    kind: Literal["finetune"] = "finetune"

    def run(self, inputs: DefenseInputs) -> DefenseOutcome:
        assert inputs.clean is not None
        result = self.retrain(inputs, inputs.clean.images, inputs.clean.targets)
        return DefenseOutcome({**asdict(result), "lr": self.lr}, repaired=True)
