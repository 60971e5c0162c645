"""Triggers: validated specs (``trigger:`` in a config) that build batched tensor functions.

Every kind is a pydantic model with a ``kind`` tag and a ``build(shape)``
method returning an object with ``apply(x, generator) -> x'``. Adding a kind is
one new module and one line in ``TriggerSpec``.
"""

from typing import Annotated, get_args

from pydantic import Field

from triggerlab.triggers.adaptive_blend import AdaptiveBlendSpec
from triggerlab.triggers.base import (
    CoveredTrigger,
    ImageShape,
    Overlay,
    SpecBase,
    TrainingForms,
    Trigger,
    apply_to_uint8,
    map_uint8,
    training_forms,
)
from triggerlab.triggers.compose import Composed, ComposeSpec
from triggerlab.triggers.low_frequency import LowFrequencySpec
from triggerlab.triggers.overlay import BlendSpec, FrameSpec, LinesSpec
from triggerlab.triggers.quantize import QuantizeSpec
from triggerlab.triggers.random_patch import RandomPatch, RandomPatchSpec
from triggerlab.triggers.reflection import ReflectionSpec
from triggerlab.triggers.sample_specific import SampleSpecificSpec
from triggerlab.triggers.signal import AdditiveSignal, SignalSpec
from triggerlab.triggers.stamp import ImageSpec, PatchSpec, Stamp
from triggerlab.triggers.warp import WarpSpec

TriggerSpec = Annotated[
    PatchSpec
    | ImageSpec
    | FrameSpec
    | LinesSpec
    | BlendSpec
    | SignalSpec
    | RandomPatchSpec
    | WarpSpec
    | QuantizeSpec
    | LowFrequencySpec
    | ReflectionSpec
    | AdaptiveBlendSpec
    | SampleSpecificSpec
    | ComposeSpec,
    Field(discriminator="kind"),
]
ComposeSpec.model_rebuild(_types_namespace={"TriggerSpec": TriggerSpec})

TRIGGER_KINDS: dict[str, type[SpecBase]] = {
    spec.model_fields["kind"].default: spec for spec in get_args(get_args(TriggerSpec)[0])
}

__all__ = [
    "TRIGGER_KINDS",
    "AdaptiveBlendSpec",
    "AdditiveSignal",
    "BlendSpec",
    "ComposeSpec",
    "Composed",
    "CoveredTrigger",
    "FrameSpec",
    "ImageShape",
    "ImageSpec",
    "LinesSpec",
    "LowFrequencySpec",
    "Overlay",
    "PatchSpec",
    "QuantizeSpec",
    "RandomPatch",
    "RandomPatchSpec",
    "ReflectionSpec",
    "SampleSpecificSpec",
    "SignalSpec",
    "SpecBase",
    "Stamp",
    "TrainingForms",
    "Trigger",
    "TriggerSpec",
    "WarpSpec",
    "apply_to_uint8",
    "map_uint8",
    "training_forms",
]
