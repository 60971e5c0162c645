"""What a model's outputs are: logits, probabilities (a final softmax) or log-probabilities.

triggerlab's models output logits, but a model trained elsewhere may end in a
softmax or a log-softmax. Optimising against it as if it gave logits weakens
or distorts the gradients (a softmax's outputs saturate), so inspections ask
here first and take the log-likelihood the right way.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from triggerlab.train.devices import to_input

OutputKind = Literal["logits", "probabilities", "log_probabilities"]
TOLERANCE = 1e-3  # on the sum of a row of probabilities
NOTES = {
    "logits": "",
    "probabilities": "the model ends in a softmax (its outputs are probabilities): "
    "the search maximises their logarithm",
    "log_probabilities": "the model ends in a log-softmax (its outputs are log-probabilities)",
}


@torch.no_grad()
def detect_output_kind(model: nn.Module, images: torch.Tensor, device: torch.device) -> OutputKind:
    """Tell from the outputs on ``images`` (uint8): rows of non-negative values summing to
    one are probabilities, rows whose exponentials sum to one are log-probabilities."""
    model.eval()
    out = model(to_input(images, device)).double()
    sums = out.sum(dim=1)
    if bool((out >= 0).all()) and bool(((sums - 1).abs() < TOLERANCE).all()):
        return "probabilities"
    exp_sums = out.exp().sum(dim=1)
    if bool((out <= 0).all()) and bool(((exp_sums - 1).abs() < TOLERANCE).all()):
        return "log_probabilities"
    return "logits"


def log_probabilities(outputs: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """The log-probability of every class, whatever the model outputs."""
    if kind == "logits":
        return F.log_softmax(outputs, dim=1)
    if kind == "probabilities":
        return outputs.clamp_min(1e-12).log()
    return outputs


def target_loss(outputs: torch.Tensor, kind: OutputKind, wanted: torch.Tensor) -> torch.Tensor:
    """Cross-entropy towards the classes ``wanted``, per sample."""
    return F.nll_loss(log_probabilities(outputs, kind), wanted, reduction="none")
