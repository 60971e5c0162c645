"""Triggers: validated specs (``trigger:`` in a config) that build batched tensor functions.

Every kind is a pydantic model with a ``kind`` tag and a ``build(shape)``
method returning an object with ``apply(x, generator) -> x'``.
"""

from typing import Annotated

from pydantic import Field

from triggerlab.triggers.base import ImageShape, Overlay, SpecBase, Trigger, apply_to_uint8
from triggerlab.triggers.compose import Composed, ComposeSpec
from triggerlab.triggers.overlay import BlendSpec, FrameSpec, LinesSpec
from triggerlab.triggers.random_patch import RandomPatch, RandomPatchSpec
from triggerlab.triggers.signal import AdditiveSignal, SignalSpec
from triggerlab.triggers.stamp import ImageSpec, PatchSpec, Stamp

TriggerSpec = Annotated[
    PatchSpec
    | ImageSpec
    | FrameSpec
    | LinesSpec
    | BlendSpec
    | SignalSpec
    | RandomPatchSpec
    | ComposeSpec,
    Field(discriminator="kind"),
]
ComposeSpec.model_rebuild(_types_namespace={"TriggerSpec": TriggerSpec})

TRIGGER_KINDS: dict[str, type[SpecBase]] = {
    "patch": PatchSpec,
    "image": ImageSpec,
    "frame": FrameSpec,
    "lines": LinesSpec,
    "blend": BlendSpec,
    "signal": SignalSpec,
    "random": RandomPatchSpec,
    "compose": ComposeSpec,
}

__all__ = [
    "TRIGGER_KINDS",
    "AdditiveSignal",
    "BlendSpec",
    "ComposeSpec",
    "Composed",
    "FrameSpec",
    "ImageShape",
    "ImageSpec",
    "LinesSpec",
    "Overlay",
    "PatchSpec",
    "RandomPatch",
    "RandomPatchSpec",
    "SignalSpec",
    "SpecBase",
    "Stamp",
    "Trigger",
    "TriggerSpec",
    "apply_to_uint8",
]
