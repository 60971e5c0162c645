"""Continuous labels: what their outputs are called, their unit, and how errors are measured.

A regression dataset carries a ``Labels``: the output names and a ``LabelKind``.
The kind owns the behaviour that differs between gaze, head pose and other
targets, so no code elsewhere asks which kind it has:

* gaze: (pitch, yaw) in radians; the error of a prediction is the angle in
  degrees between the two 3-D gaze directions (DESIGN.md);
* head pose: angles in degrees; the error is the mean absolute error over the
  angles, and each angle's own error is reported too;
* generic: any vector; mean absolute error in label units, per output too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from triggerlab.catalogue.metrics import ERROR_UNITS
from triggerlab.data.gaze import angular_error


@dataclass(frozen=True)
class LabelKind:
    """Mean absolute error over the outputs, in the labels' own unit."""

    name: str
    label_unit: str  # of the stored labels
    unit: str  # of errors and tolerances
    symbol: str = ""  # appended to numbers: "°" for angles
    label_scale: float = 1.0  # stored label value -> displayed unit

    @property
    def per_output_errors(self) -> bool:
        """Whether each output's mean absolute error means something on its own."""
        return True

    def error(self, prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-sample error ``[N]`` between rows of two ``[N, K]`` tensors."""
        return (prediction - reference).abs().mean(dim=1)

    def describe(self, names: tuple[str, ...], row: torch.Tensor) -> str:
        """One label vector as a person reads it, e.g. ``p+12 y-3``."""
        return " ".join(
            f"{n[:1]}{float(v) * self.label_scale:+.0f}" for n, v in zip(names, row, strict=True)
        )


@dataclass(frozen=True)
class GazeKind(LabelKind):
    """(pitch, yaw) in radians, compared as 3-D directions."""

    @property
    def per_output_errors(self) -> bool:
        return False  # the angle between directions is the error; pitch and yaw are not apart

    def error(self, prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return angular_error(prediction, reference).float()


GAZE = GazeKind("gaze", "radians", ERROR_UNITS["gaze"], "°", 180 / math.pi)
HEADPOSE = LabelKind("headpose", "degrees", ERROR_UNITS["headpose"], "°")
GENERIC = LabelKind("generic", "label units", ERROR_UNITS["generic"])
LABEL_KINDS = {kind.name: kind for kind in (GAZE, HEADPOSE, GENERIC)}


GAZE_NAMES = ("pitch", "yaw")
HEADPOSE_NAMES = ("yaw", "pitch", "roll")


@dataclass(frozen=True)
class Labels:
    """The outputs of a regression dataset: their names and kind."""

    names: tuple[str, ...]
    kind: LabelKind = GENERIC

    def describe(self, values: torch.Tensor) -> list[str]:
        return [self.kind.describe(self.names, row) for row in values]


GAZE_LABELS = Labels(GAZE_NAMES, GAZE)
HEADPOSE_LABELS = Labels(HEADPOSE_NAMES, HEADPOSE)
