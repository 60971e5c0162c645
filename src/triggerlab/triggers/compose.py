"""Several triggers applied one after the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from triggerlab.catalogue.triggers import ComposeSpec, ImageShape
from triggerlab.triggers.base import Trigger

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Composed:
    triggers: tuple[Trigger, ...]

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for trigger in self.triggers:
            x = trigger.apply(x, generator)
        return x


def build_compose(spec: ComposeSpec, shape: ImageShape, where: str = "trigger") -> Composed:
    return Composed(
        tuple(t.build(shape, f"{where}.triggers[{i}]") for i, t in enumerate(spec.triggers))
    )
