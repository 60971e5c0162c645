"""Triggers: validated specs (``trigger:`` in a config) that build batched tensor functions."""

from typing import Annotated

from pydantic import Field

from triggerlab.triggers.base import ImageShape, Trigger, apply_to_uint8
from triggerlab.triggers.stamp import ImageSpec, PatchSpec, Stamp

TRIGGER_KINDS = {"patch": PatchSpec, "image": ImageSpec}

TriggerSpec = Annotated[PatchSpec | ImageSpec, Field(discriminator="kind")]

__all__ = [
    "TRIGGER_KINDS",
    "ImageShape",
    "ImageSpec",
    "PatchSpec",
    "Stamp",
    "Trigger",
    "TriggerSpec",
    "apply_to_uint8",
]
