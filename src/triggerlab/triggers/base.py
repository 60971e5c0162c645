"""What every trigger is: a pure, batched function on float images in [0, 1].

A trigger never changes its input; it returns a new tensor of the same shape,
dtype and device. Randomised triggers draw from the generator they are given,
so a seed fixes them (without one they use torch's global generator);
deterministic ones ignore it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from triggerlab.catalogue.triggers import ImageShape
from triggerlab.errors import ConfigError

ImageMap = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


class Trigger(Protocol):
    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return the triggered copy of ``x`` (float ``[B, C, H, W]`` in [0, 1])."""
        ...


@runtime_checkable
class CoveredTrigger(Protocol):
    """A trigger whose poisoning differs from its test-time form and adds *cover* samples.

    WaNet's noise mode and Adaptive-Blend poison some training samples with the
    trigger (``apply_payload``, labels changed) and trigger others differently
    while keeping their true labels (``apply_cover``), so the model learns the
    exact trigger rather than any change like it. ``cover_ratio`` is the number of
    cover samples per poisoned one; ``apply`` stays the test-time trigger.
    """

    cover_ratio: float

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def apply_payload(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

    def apply_cover(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...


@runtime_checkable
class NegativeTrigger(Protocol):
    """A trigger with per-batch *negative* samples (BppAttack): ``negative_ratio`` of every
    batch become ``apply_negative(x, partners)``, with ``partners`` other training images, and
    keep their labels."""

    negative_ratio: float

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def apply_negative(self, x: torch.Tensor, partners: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class PoolTrigger(Protocol):
    """A trigger that draws from the attacker's own training images (Refool's reflections
    from the dataset's images of other classes): bound to them before use."""

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def with_images(self, images: torch.Tensor, eligible: torch.Tensor) -> Trigger: ...


def with_training_images(
    trigger: Trigger, images: torch.Tensor, targets: torch.Tensor, target: object
) -> Trigger:
    """``trigger`` bound to the uint8 training ``images`` it may draw from: those whose class
    is not ``target`` (every image for regression targets); other triggers unchanged."""
    if not isinstance(trigger, PoolTrigger):
        return trigger
    if targets.ndim == 1 and not targets.is_floating_point() and isinstance(target, int):
        eligible = targets != target
    else:
        eligible = torch.ones(len(images), dtype=torch.bool)
    return trigger.with_images(images, eligible)


@dataclass(frozen=True)
class TrainingForms:
    """How a trigger poisons training samples: ``payload`` on the poisoned ones (labels
    changed), ``cover`` on ``cover_ratio`` times as many others (labels kept), if any."""

    payload: ImageMap
    cover: ImageMap | None
    cover_ratio: float


def training_forms(trigger: Trigger) -> TrainingForms:
    """A plain trigger poisons with ``apply`` and has no cover samples."""
    if not isinstance(trigger, CoveredTrigger):
        return TrainingForms(trigger.apply, None, 0.0)
    if trigger.cover_ratio <= 0:  # WaNet without its noise mode
        return TrainingForms(trigger.apply_payload, None, 0.0)
    return TrainingForms(trigger.apply_payload, trigger.apply_cover, trigger.cover_ratio)


def check_square_fits(side: int, shape: ImageShape, where: str, what: str, smallest: int) -> None:
    """ConfigError naming ``where`` when a ``side x side`` ``what`` exceeds the image."""
    _, height, width = shape
    if side > min(height, width):
        raise ConfigError(
            f"{where}: a {side}x{side} {what} is larger than the {height}x{width} image "
            f"(expected {smallest} to {min(height, width)})"
        )


@dataclass(frozen=True)
class Overlay:
    """Blend a full-image pattern: ``x' = (1 - w) x + w p`` with ``w = opacity * mask``.

    ``pattern`` is ``[C, H, W]`` (or broadcastable, e.g. a colour ``[C, 1, 1]``),
    ``mask`` is ``[1, H, W]`` in [0, 1]. Where ``w = 1`` the result is exactly ``p``.
    """

    pattern: torch.Tensor
    mask: torch.Tensor
    opacity: float

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        weight = (self.opacity * self.mask).to(device=x.device, dtype=x.dtype)
        pattern = self.pattern.to(device=x.device, dtype=x.dtype)
        return (1.0 - weight) * x + weight * pattern


def apply_to_uint8(
    trigger: Trigger,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Trigger a uint8 ``[N, C, H, W]`` tensor batch by batch and quantise back to uint8.

    Poisoned training images and the triggered test set both go through this
    one function, so the model is tested on exactly what an attacker could have
    stored: 8-bit images, rounded to the nearest level.
    """
    return map_uint8(trigger.apply, images, generator, batch_size)


def map_uint8(
    apply: ImageMap,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """``apply_to_uint8`` for any batched image function (a trigger's payload or cover form)."""
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].float().div_(255.0)
        triggered = apply(batch, generator)
        out[start : start + batch_size] = triggered.mul_(255.0).round_().clamp_(0, 255).byte()
    return out
