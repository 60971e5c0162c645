"""Refool's reflection trigger (Liu, Ma, Bailey & Lu, "Reflection Backdoor: A Natural
Backdoor Attack on Deep Neural Networks", ECCV 2020).

The paper models a photo taken through glass as ``x_adv = x + x_R (*) k``: the
reflection image ``x_R`` convolved with a kernel that depends on the optics.
Two of its models are built here, in linear light (images raised to the power
2.2 first and the result taken back by 1 / 2.2, as the authors' code does):

* ``focal`` (reflection out of focus): ``k`` a Gaussian of width ``sigma``
  (authors: 1 to 5 px), ``x' = clip(x^g + w blur(R^g))^(1/g)``;
* ``ghost`` (a double reflection off both faces of the glass):
  ``k = a delta(0) + (1 - a) delta(d)``, the reflection and its copy shifted
  by ``d = offset``, blended ``x' = clip((1 - w) x^g + w (R^g (*) k))^(1/g)``
  (authors: ``w`` = 1 - alpha_t in 0.05-0.45, ``a`` in 0.15-0.5).

The authors pick a random natural image per poisoned sample; here one
reflection is fixed per attack (a file, or the built-in procedural scene: soft
seeded light blobs on a dim gradient) so that the trigger is a pure function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from triggerlab.catalogue.triggers import ImageShape, ReflectionSpec
from triggerlab.errors import ConfigError
from triggerlab.triggers.colors import rgb_to_channels
from triggerlab.triggers.stamp import load_rgba

GAMMA = 2.2


def procedural_scene(height: int, width: int, seed: int) -> torch.Tensor:
    """RGB ``[3, H, W]`` in [0, 1]: five soft coloured light blobs on a dim diagonal gradient."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    scene = (0.15 + 0.25 * (x + y) / 2).expand(3, height, width).clone()
    centres = torch.rand(5, 2, generator=generator)
    radii = 0.08 + 0.2 * torch.rand(5, generator=generator)
    colours = 0.4 + 0.6 * torch.rand(5, 3, generator=generator)
    for (cy, cx), radius, colour in zip(centres, radii, colours, strict=True):
        blob = torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
        scene = scene + colour.view(3, 1, 1) * blob
    return scene.clamp(0, 1)


def blur_kernel_side(sigma: float) -> int:
    """The authors' Gaussian kernel side: ``2 ceil(2 sigma) + 1``."""
    return 2 * math.ceil(2 * sigma) + 1


def ghost(reflection: torch.Tensor, offset: tuple[int, int], alpha: float) -> torch.Tensor:
    """``a R + (1 - a) R shifted down by dy and right by dx`` (zeros enter at the edges)."""
    dy, dx = offset
    shifted = torch.zeros_like(reflection)
    height, width = reflection.shape[-2:]
    shifted[..., dy:, dx:] = reflection[..., : height - dy, : width - dx]
    return alpha * reflection + (1 - alpha) * shifted


@dataclass(frozen=True)
class Reflection:
    layer: torch.Tensor  # [1, C, H, W]: w * (R^g convolved with k), in linear light
    keep: float  # weight of the clean image in linear light: 1 (focal) or 1 - w (ghost)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        layer = self.layer.to(device=x.device, dtype=x.dtype)
        linear = self.keep * x.clamp(0, 1).pow(GAMMA) + layer
        return linear.clamp(0, 1).pow(1 / GAMMA)


def build_reflection(spec: ReflectionSpec, shape: ImageShape, where: str = "trigger") -> Reflection:
    channels, height, width = shape
    if spec.path is None:
        rgb = procedural_scene(height, width, spec.seed)
    else:
        rgb = load_rgba(spec.path, (height, width), f"{where}.path")[:3]
    reflection = rgb_to_channels(rgb, channels).clamp(0, 1).pow(GAMMA)
    if spec.mode == "ghost":
        if spec.offset[0] >= height or spec.offset[1] >= width:
            raise ConfigError(
                f"{where}.offset: a shift of {list(spec.offset)} leaves nothing of a "
                f"{height}x{width} image (expected below [{height}, {width}])"
            )
        layer = spec.strength * ghost(reflection, spec.offset, spec.ghost_alpha)
        return Reflection(layer[None], 1.0 - spec.strength)
    side = blur_kernel_side(spec.sigma)
    if side // 2 >= min(height, width):
        raise ConfigError(
            f"{where}.sigma: a blur of {spec.sigma:g} px needs a {side}-pixel kernel, too "
            f"large for a {height}x{width} image (expected sigma up to "
            f"{(min(height, width) - 1) / 4:g})"
        )
    from torchvision.transforms.functional import gaussian_blur  # slow import: only here

    blurred = gaussian_blur(reflection[None], [side, side], [spec.sigma, spec.sigma])
    return Reflection(spec.strength * blurred, 1.0)
