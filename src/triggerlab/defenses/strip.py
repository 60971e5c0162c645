"""STRIP (Gao et al., 2019): an input detector that needs only clean data and predictions.

Each input is superimposed with ``overlays`` random clean images as in the
original, ``x' = clip(x + b o, 0, 1)`` (``b = 1`` there), and the mean entropy
(in nats) of the model's softmax over those copies is its score. Adding rather
than averaging keeps a bright trigger intact, which is what STRIP relies on.
A trigger keeps pulling the copies to the target class, so triggered inputs
have low entropy. The threshold
is the ``false_rejection`` quantile of the entropies of the defender's own
clean inputs: about that share of clean inputs is flagged, by construction.
It needs class probabilities, so it applies to classification only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from triggerlab.catalogue.defenses import StripSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome
from triggerlab.train.devices import model_memory_format, to_input
from triggerlab.train.loop import EVAL_BATCH_SIZE


@torch.no_grad()
def strip_entropy(
    model: nn.Module,
    images: torch.Tensor,
    overlays: torch.Tensor,
    count: int,
    blend: float,
    device: torch.device,
    generator: torch.Generator,
) -> torch.Tensor:
    """Mean prediction entropy ``[N]`` of each uint8 image blended with ``count`` overlays."""
    model.eval()
    layout = model_memory_format(model)
    per_batch = max(1, EVAL_BATCH_SIZE // count)
    scores = []
    for start in range(0, images.shape[0], per_batch):
        x = to_input(images[start : start + per_batch], device)
        chosen = torch.randint(overlays.shape[0], (x.shape[0], count), generator=generator)
        o = to_input(overlays[chosen.flatten()], device).view(x.shape[0], count, *x.shape[1:])
        blended = (x[:, None] + blend * o).clamp(0, 1).flatten(0, 1)
        logits = model(blended.contiguous(memory_format=layout))
        log_p = torch.log_softmax(logits.float(), dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1).view(x.shape[0], count).mean(dim=1)
        scores.append(entropy.cpu())
    return torch.cat(scores)


def strip_threshold(clean_entropy: torch.Tensor, false_rejection: float) -> float:
    """Entropy below which an input is flagged: the ``false_rejection`` quantile of clean inputs."""
    return float(torch.quantile(clean_entropy.double(), false_rejection))


@dataclass(frozen=True)
class StripDetector:
    """Scores an input by its negated mean entropy: low entropy is suspicious."""

    model: nn.Module
    overlays: torch.Tensor  # the defender's clean uint8 images
    count: int
    blend: float
    threshold: float  # entropy below which an input is flagged
    device: torch.device
    generator: torch.Generator

    def score(self, images: torch.Tensor) -> torch.Tensor:
        entropy = strip_entropy(
            self.model,
            images,
            self.overlays,
            self.count,
            self.blend,
            self.device,
            self.generator,
        )
        return -entropy

    def flag(self, scores: torch.Tensor) -> torch.Tensor:
        return -scores < self.threshold


def run_strip(spec: StripSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    clean = inputs.clean.images
    clean_entropy = strip_entropy(
        inputs.model, clean, clean, spec.overlays, spec.blend, inputs.device, inputs.generator
    )
    threshold = strip_threshold(clean_entropy, spec.false_rejection)
    detector = StripDetector(
        inputs.model, clean, spec.overlays, spec.blend, threshold, inputs.device, inputs.generator
    )
    report = {"clean_samples": len(inputs.clean), "threshold": threshold}
    return DefenseOutcome(report, input_detector=detector)
