"""Trigger implementations: one module per family, each a pure batched tensor function.

Each kind's parameters are declared, torch-free, in ``triggerlab.catalogue.triggers``;
its spec names the ``build_<kind>`` function here that makes the trigger for one image
shape. A trigger's ``apply(x, generator) -> x'`` never changes its input.
"""

from triggerlab.triggers.base import (
    CoveredTrigger,
    NegativeTrigger,
    Overlay,
    TrainingForms,
    Trigger,
    apply_to_uint8,
    map_uint8,
    training_forms,
)
from triggerlab.triggers.compose import Composed
from triggerlab.triggers.random_patch import RandomPatch
from triggerlab.triggers.signal import AdditiveSignal
from triggerlab.triggers.stamp import Stamp

__all__ = [
    "AdditiveSignal",
    "Composed",
    "CoveredTrigger",
    "NegativeTrigger",
    "Overlay",
    "RandomPatch",
    "Stamp",
    "TrainingForms",
    "Trigger",
    "apply_to_uint8",
    "map_uint8",
    "training_forms",
]
