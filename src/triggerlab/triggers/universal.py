"""Zeng et al.'s low-frequency trigger: a targeted universal adversarial perturbation of a clean
model, low-pass filtered (Zeng, Park, Mao, Jia & Ding, "Rethinking the Backdoor Attacks'
Triggers: A Frequency Perspective", ICCV 2021).

Re-stated from BackdoorBench's generator (SCLBD/BackdoorBench @ f02e353,
``resource/lowFrequency/``), the code the leaderboard's LF patterns come from:

* ``low_pass`` (``gauss_smooth.py:16-49``): a separable Gaussian of 30 taps with a
  standard deviation of 6 pixels (``sig 6 x 5`` with taps 5 apart), zero padding of
  14 before and 15 after on each axis, so the output keeps the image's size;
* ``normalise`` (``gauss_smooth.py:11-13``): min-max over the whole pattern to [0, 0.2];
* ``targeted_deepfool`` (``deepfool.py:7-84``): from x, steps
  ``r = |f_t - f_top| / ||w||^2 w`` with ``w`` the gradient of ``f_t - f_top`` (``top``
  the class x was first predicted as, fixed), accumulated in ``r_tot``, until the
  prediction of ``x + (1 + overshoot) r_tot`` is the target or ``max_iter`` steps;
  returns ``(1 + overshoot) r_tot`` and the steps taken;
* ``universal_perturbation`` (``universal_pert.py:14-182``, called with the arguments of
  ``generate_pattern.py:230-269``): ``v = 0``; passes over the images in a fresh random
  order; for an image whose prediction ``v`` leaves unchanged, DeepFool towards the
  target from ``x + v`` (no clipping), and if it converged (fewer than ``max_iter - 1``
  steps) ``v <- normalise(G(v + G(dr)))``; after each pass the fooling rate (share of
  check images whose prediction ``v`` changes); stop when it reaches ``1 - delta``
  (0.2), after 50 passes, or when the last five rates lie within 0.01.

The images are fed to the model as they are, in [0, 1], as the generator does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

TAPS_SPACING = 5.0  # size_denom
MAX_VALUE = 0.2  # normalisation's top


def low_pass(v: torch.Tensor, sig: float = 6.0) -> torch.Tensor:
    """BackdoorBench's ``gauss_smooth`` on ``[C, H, W]`` (any number of channels)."""
    sigma = sig * TAPS_SPACING
    size = int(sigma)
    grid = (torch.arange(size, dtype=torch.float64) - (sigma - 1.0) / 2.0) * TAPS_SPACING
    kernel = torch.exp(-((grid / sigma) ** 2) * 0.5) / (sigma * math.sqrt(2.0 * math.pi))
    kernel = (kernel / kernel.sum()).to(v.dtype)
    channels = v.shape[0]
    before, after = size // 2 - (1 - size % 2), size // 2
    padded = F.pad(v[None], (before, after, before, after))
    rows = F.conv2d(padded, kernel.view(1, 1, size, 1).repeat(channels, 1, 1, 1), groups=channels)
    out = F.conv2d(rows, kernel.view(1, 1, 1, size).repeat(channels, 1, 1, 1), groups=channels)
    return out[0]


def normalise(v: torch.Tensor, top: float = MAX_VALUE) -> torch.Tensor:
    """Min-max over the whole pattern to [0, top] (a constant pattern becomes 0)."""
    spread = v.max() - v.min()
    return torch.zeros_like(v) if spread == 0 else (v - v.min()) / spread * top


def targeted_deepfool(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    overshoot: float = 0.02,
    max_iter: int = 200,
) -> tuple[torch.Tensor, int]:
    """``((1 + overshoot) r_tot, steps)`` moving ``x`` (``[C, H, W]``) to class ``target``."""
    with torch.no_grad():
        top = int(model(x[None]).argmax(dim=1))
    r_tot = torch.zeros_like(x)
    current = x.clone().requires_grad_(True)
    logits = model(current[None])[0]
    steps = 0
    while int(logits.argmax()) != target and steps < max_iter:
        gap = logits[target] - logits[top]
        (w,) = torch.autograd.grad(gap, current)
        norm = w.norm()
        step = gap.detach().abs() / norm**2 * w
        if not torch.isfinite(step).all():
            step = torch.zeros_like(step)
        r_tot = r_tot + step
        current = (x + (1 + overshoot) * r_tot).detach().requires_grad_(True)
        logits = model(current[None])[0]
        steps += 1
    return (1 + overshoot) * r_tot, steps


@torch.no_grad()
def predictions(model: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat(
        [model(images[i : i + batch]).argmax(dim=1) for i in range(0, len(images), batch)]
    )


@dataclass
class UniversalResult:
    pattern: torch.Tensor  # [C, H, W] in [0, 0.2]
    fooling_rates: list[float]  # after each pass
    passes: int


def universal_perturbation(
    model: nn.Module,
    images: torch.Tensor,
    check: torch.Tensor,
    target: int,
    generator: torch.Generator,
    delta: float = 0.8,
    max_passes: int = 50,
    overshoot: float = 0.02,
    max_iter_df: int = 200,
    progress: Callable[[int, float], None] | None = None,
) -> UniversalResult:
    """The low-pass universal perturbation of ``images`` (``[N, C, H, W]`` in [0, 1]) towards
    ``target``; ``check`` (``[M, C, H, W]``) measures the fooling rate after each pass."""
    model.eval()
    v = torch.zeros_like(images[0])
    clean_check = predictions(model, check)
    rates: list[float] = []
    passes = 0
    while (not rates or rates[-1] < 1 - delta) and passes < max_passes:
        for k in torch.randperm(len(images), generator=generator).tolist():
            x = images[k]
            with torch.no_grad():
                unchanged = int(model(x[None]).argmax()) == int(model((x + v)[None]).argmax())
            if unchanged:
                dr, steps = targeted_deepfool(model, x + v, target, overshoot, max_iter_df)
                if steps < max_iter_df - 1:
                    v = normalise(low_pass(v + low_pass(dr)))
        passes += 1
        rates.append(float((predictions(model, check + v) != clean_check).double().mean()))
        if progress is not None:
            progress(passes, rates[-1])
        if len(rates) >= 5 and max(rates[-5:]) - min(rates[-5:]) < 0.01:
            break
    return UniversalResult(v.detach(), rates, passes)
