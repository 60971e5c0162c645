"""Several triggers applied one after the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from triggerlab.catalogue.triggers import ComposeSpec, ImageShape
from triggerlab.triggers.base import PoolTrigger, Trigger

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Composed:
    triggers: tuple[Trigger, ...]

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for trigger in self.triggers:
            x = trigger.apply(x, generator)
        return x

    def with_images(self, images: torch.Tensor, eligible: torch.Tensor) -> Composed:
        """Each part that draws from the training images, bound to them."""
        return Composed(
            tuple(
                t.with_images(images, eligible) if isinstance(t, PoolTrigger) else t
                for t in self.triggers
            )
        )


def build_compose(spec: ComposeSpec, shape: ImageShape, where: str = "trigger") -> Composed:
    return Composed(
        tuple(t.build(shape, f"{where}.triggers[{i}]") for i, t in enumerate(spec.triggers))
    )
