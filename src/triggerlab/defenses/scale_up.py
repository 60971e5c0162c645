"""SCALE-UP (Guo, Li, Chen, Guo, Sun and Liu, ICLR 2023): a black-box input detector.

Amplifying every pixel value of an input by n (and clipping to [0, 1]) keeps
a backdoored model's prediction on triggered inputs far more often than on
clean ones. The scaled prediction consistency of x is
``SPC(x) = mean over n in scales of 1[argmax f(clip(n x)) = argmax f(x)]``,
with the paper's scales 3, 5, 7, 9, 11. It only needs the model's predicted
labels. In the paper's data-limited setting, the defender's clean samples
give the mean and standard deviation of SPC for each predicted class, and the
score is SPC standardised by those of the input's predicted class (by all the
clean samples' when a class has fewer than two). The threshold is set on the
defender's own clean inputs, so that ``false_rejection`` of them are flagged,
as for STRIP; the test set never sets it.

``standardise: overall`` is BackdoorBox's form (THUYimingLi/BackdoorBox
``core/defenses/SCALE_UP.py:49-77``): one mean and standard deviation over all
the clean data, whatever the predicted class; with ``threshold`` set, a score of
at least that is flagged (BackdoorBox: 0.5, lines 28-29).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from triggerlab.catalogue.defenses import ScaleUpSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome
from triggerlab.train.devices import model_memory_format, to_input
from triggerlab.train.loop import EVAL_BATCH_SIZE


@torch.no_grad()
def scaled_consistency(
    model: nn.Module, images: torch.Tensor, scales: list[float], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPC ``[N]`` of uint8 images and the model's predicted labels ``[N]``."""
    model.eval()
    layout = model_memory_format(model)
    spc, predicted = [], []
    for start in range(0, images.shape[0], EVAL_BATCH_SIZE):
        x = to_input(images[start : start + EVAL_BATCH_SIZE], device, layout)
        own = model(x).argmax(dim=1)
        agree = torch.zeros(x.shape[0], device=device, dtype=torch.float64)
        for n in scales:
            agree += (model((x * n).clamp(0, 1)).argmax(dim=1) == own).double()
        spc.append((agree / len(scales)).cpu())
        predicted.append(own.cpu())
    return torch.cat(spc), torch.cat(predicted)


@dataclass
class ClassStatistics:
    """Mean and standard deviation of the clean SPC, per predicted class and overall."""

    means: dict[int, float]
    stds: dict[int, float]
    mean: float
    std: float

    @classmethod
    def of(
        cls, spc: torch.Tensor, predicted: torch.Tensor, per_class: bool = True
    ) -> ClassStatistics:
        """Per predicted class (with two samples or more) and overall; only overall when
        ``per_class`` is False (then every class is standardised by the overall ones)."""
        means, stds = {}, {}
        for c in torch.unique(predicted).tolist() if per_class else []:
            values = spc[predicted == c]
            if values.numel() >= 2:
                means[c], stds[c] = float(values.mean()), float(values.std())
        overall_std = float(spc.std()) if spc.numel() >= 2 else 0.0
        return cls(means, stds, float(spc.mean()), overall_std)

    def standardise(self, spc: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor([self.means.get(int(c), self.mean) for c in predicted], dtype=spc.dtype)
        std = torch.tensor([self.stds.get(int(c), self.std) for c in predicted], dtype=spc.dtype)
        return (spc - mean) / std.clamp_min(1e-3)  # a class whose clean SPC never varies


@dataclass
class ScaleUpDetector:
    model: nn.Module
    scales: list[float]
    statistics: ClassStatistics
    threshold: float
    device: torch.device

    def score(self, images: torch.Tensor) -> torch.Tensor:
        spc, predicted = scaled_consistency(self.model, images, self.scales, self.device)
        return self.statistics.standardise(spc, predicted)

    at_least: bool = False  # a fixed threshold flags scores >= it, as BackdoorBox

    def flag(self, scores: torch.Tensor) -> torch.Tensor:
        return scores >= self.threshold if self.at_least else scores > self.threshold


def run_scale_up(spec: ScaleUpSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    clean = inputs.clean.images
    spc, predicted = scaled_consistency(inputs.model, clean, spec.scales, inputs.device)
    statistics = ClassStatistics.of(spc, predicted, per_class=spec.standardise == "per_class")
    scores = statistics.standardise(spc, predicted)
    fixed = spec.threshold is not None
    quantile = 1 - spec.false_rejection
    threshold = float(spec.threshold) if fixed else float(torch.quantile(scores, quantile))
    detector = ScaleUpDetector(
        inputs.model, spec.scales, statistics, threshold, inputs.device, at_least=fixed
    )
    report = {"clean_samples": len(clean), "threshold": threshold}
    return DefenseOutcome(report, input_detector=detector)
