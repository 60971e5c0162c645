"""Several triggers applied one after the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from triggerlab.triggers.base import ImageShape, SpecBase, Trigger

if TYPE_CHECKING:
    from triggerlab.triggers import TriggerSpec


@dataclass(frozen=True)
class Composed:
    triggers: tuple[Trigger, ...]

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for trigger in self.triggers:
            x = trigger.apply(x, generator)
        return x


class ComposeSpec(SpecBase):
    """A list of triggers applied in order (each sees the previous one's output)."""

    kind: Literal["compose"] = "compose"
    triggers: list[TriggerSpec] = Field(min_length=1, description="trigger specs, applied in order")

    def build(self, shape: ImageShape, where: str = "trigger") -> Composed:
        return Composed(
            tuple(t.build(shape, f"{where}.triggers[{i}]") for i, t in enumerate(self.triggers))
        )
