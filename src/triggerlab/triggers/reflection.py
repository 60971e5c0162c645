"""Refool's reflection trigger (Liu, Ma, Bailey & Lu, "Reflection Backdoor: A Natural
Backdoor Attack on Deep Neural Networks", ECCV 2020).

The paper models a photo taken through glass as ``x_adv = x + x_R (*) k``: a
reflection image ``x_R`` convolved with a kernel that depends on the optics. The
authors' code (``blend_images``, DreamtaleCore/Refool ``scripts/insert_reflection.py:47-149``,
copied by BackdoorBench ``attack/refool.py:65-180``) works in linear light (values
raised to 2.2, the result taken back by 1 / 2.2) and, per poisoned image, draws a
reflection from a pool of natural images and these parameters:

* the image's weight ``alpha_t = 1 - w``, ``w ~ U(0.05, 0.45)`` (``strength`` fixes w);
* ghost with probability ``ghost_rate`` (0.49), else focal (``mode: mixed``);
* **ghost**: offsets ``dy, dx ~ U{3..8}``, ``a = |round(U) - U(0.15, 0.5)|``; the
  reflection and its copy shifted by (dy, dx), ``a R1 + (1 - a) R2``, cropped to the
  part both cover and resized back (bilinear: the code passes ``INTER_CUBIC`` where
  ``cv2.resize`` takes its output array, so the default interpolation applies);
  ``x' = (w g + alpha_t x)^(1/2.2)``;
* **focal**: ``sigma ~ U(1, 5)``, ``b`` the reflection blurred by a Gaussian of side
  ``2 ceil(2 sigma) + 1`` (reflect-101 borders, as ``cv2.GaussianBlur``); per channel,
  with ``M`` the mean of ``b + x`` over the pixels where it exceeds 1 (1 if none),
  ``b <- clip(b - (M - 1) att, 0, 1)``, ``att = 1.08 + U(0, 0.1)``: the anti-saturation
  offset; ``V`` a Gaussian vignette (+-3 standard deviations across the longer side,
  maximum 1); ``x' = clip(V (1 - alpha_t / 2) b + alpha_t x)^(1/2.2)``.

``formula: additive`` keeps triggerlab's earlier form, the paper's equation taken
literally: focal ``x' = clip(x + w b)``, ghost ``x' = clip((1 - w) x + w (a R + (1 - a)
shift(R)))`` without crop, vignette or offset (it brightens where the authors' code
darkens the image by alpha_t). Reflections come from a folder (``path``), one file, or
``pool_size`` built-in procedural scenes (soft seeded light blobs on a dim gradient).
Every draw comes from the generator ``apply`` is given, so a seed fixes the trigger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from triggerlab.catalogue.triggers import ImageShape, ReflectionSpec
from triggerlab.errors import ConfigError
from triggerlab.triggers.colors import rgb_to_channels
from triggerlab.triggers.stamp import load_rgba

GAMMA = 2.2
STRENGTHS = (0.05, 0.45)  # w = 1 - alpha_t (insert_reflection.py:63-64)
SIGMAS = (1.0, 5.0)  # focal blur (line 98)
OFFSETS = (3, 8)  # ghost shift, inclusive (line 72)
GHOST_ALPHAS = (0.15, 0.5)  # |round(U) - U(0.15, 0.5)| (line 78)
ATTENUATION = (1.08, 0.1)  # att = 1.08 + U(0, 0.1) (line 108)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_POOL = 10_000


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


def gaussian_taps(sigmas: torch.Tensor, side: int) -> torch.Tensor:
    """``[B, side]`` normalised Gaussian taps, each image's own ``2 ceil(2 sigma) + 1`` wide
    (``cv2.getGaussianKernel``) and centred, zero beyond."""
    centre = side // 2
    offsets = torch.arange(side, dtype=torch.float64) - centre
    taps = torch.exp(-(offsets[None] ** 2) / (2 * sigmas.double()[:, None] ** 2))
    radius = torch.tensor([blur_kernel_side(float(s)) // 2 for s in sigmas], dtype=torch.float64)
    taps = taps * (offsets[None].abs() <= radius[:, None])
    return taps / taps.sum(dim=1, keepdim=True)


def blur_each(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Each image ``[B, C, H, W]`` blurred with its own sigma, separably, reflect-101 borders."""
    batch, channels, height, width = images.shape
    side = max(blur_kernel_side(float(s)) for s in sigmas)
    taps = gaussian_taps(sigmas, side).to(images).repeat_interleave(channels, dim=0)
    pad = side // 2
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (pad, pad, pad, pad), mode="reflect")
    groups = batch * channels
    flat = F.conv2d(flat, taps.view(groups, 1, side, 1), groups=groups)
    flat = F.conv2d(flat, taps.view(groups, 1, 1, side), groups=groups)
    return flat.view(batch, channels, height, width)


def vignette_kernel(size: int, nsig: float = 3.0) -> torch.Tensor:
    """The authors' ``gen_kernel(size, 3)`` (insert_reflection.py:116-125): the square root of
    the outer product of a Gaussian histogram over ``size`` bins spanning +-nsig, max 1."""
    interval = (2 * nsig + 1.0) / size
    edges = torch.linspace(-nsig - interval / 2, nsig + interval / 2, size + 1, dtype=torch.float64)
    bins = torch.diff(torch.special.ndtr(edges))
    kernel = torch.sqrt(torch.outer(bins, bins))
    kernel = kernel / kernel.sum()
    return kernel / kernel.max()


def ghost_authors(r: torch.Tensor, dy: int, dx: int, a: torch.Tensor) -> torch.Tensor:
    """``a R1 + (1 - a) R2`` on the part both copies cover, resized back (bilinear)."""
    height, width = r.shape[-2:]
    both = a * r[..., dy:, dx:] + (1 - a) * r[..., : height - dy, : width - dx]
    if (dy, dx) == (0, 0):
        return both
    return F.interpolate(both, size=(height, width), mode="bilinear", align_corners=False)


def ghost_additive(r: torch.Tensor, dy: int, dx: int, a: torch.Tensor) -> torch.Tensor:
    """``a R + (1 - a) R shifted down by dy and right by dx`` (zeros enter at the edges)."""
    height, width = r.shape[-2:]
    shifted = torch.zeros_like(r)
    shifted[..., dy:, dx:] = r[..., : height - dy, : width - dx]
    return a * r + (1 - a) * shifted


@dataclass(frozen=True)
class Draws:
    """One image's random choices, ``[B]`` each (offsets ``[B, 2]``)."""

    ghost: torch.Tensor
    strength: torch.Tensor
    index: torch.Tensor
    sigma: torch.Tensor
    attenuation: torch.Tensor
    offset: torch.Tensor
    ghost_alpha: torch.Tensor
    vignette_at: torch.Tensor  # [B, 2]: top-left of the vignette crop


@dataclass(frozen=True)
class Reflection:
    pool: torch.Tensor  # [P, C, H, W] reflections in linear light
    vignette: torch.Tensor  # [L, L], L the longer image side
    spec: ReflectionSpec

    def draw(self, batch: int, generator: torch.Generator | None) -> Draws:
        """Every draw for ``batch`` images, always in this order, whether used or fixed."""
        spec, (height, width) = self.spec, self.pool.shape[-2:]

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)

        ghost = torch.rand(batch, generator=generator, dtype=torch.float64) < spec.ghost_rate
        ghost = ghost if spec.mode == "mixed" else torch.full_like(ghost, spec.mode == "ghost")
        strength = uniform(*STRENGTHS)
        index = torch.randint(self.pool.shape[0], (batch,), generator=generator)
        sigma = uniform(*SIGMAS)
        attenuation = ATTENUATION[0] + uniform(0.0, ATTENUATION[1])
        offset = torch.randint(OFFSETS[0], OFFSETS[1] + 1, (batch, 2), generator=generator)
        ghost_alpha = (
            torch.rand(batch, generator=generator).double().round() - uniform(*GHOST_ALPHAS)
        ).abs()
        # the vignette's crop moves only where a side is 10 pixels or more below the longer one
        size = self.vignette.shape[0]
        room = torch.tensor([size - height - 10, size - width - 10])
        at = (torch.rand(batch, 2, generator=generator) * room.clamp_min(1)).long()
        vignette_at = torch.where(room > 0, at, torch.zeros_like(at))
        if spec.strength is not None:
            strength = torch.full_like(strength, spec.strength)
        if spec.sigma is not None:
            sigma = torch.full_like(sigma, spec.sigma)
        if spec.offset is not None:
            offset = torch.tensor(spec.offset).expand(batch, 2)
        if spec.ghost_alpha is not None:
            ghost_alpha = torch.full_like(ghost_alpha, spec.ghost_alpha)
        return Draws(ghost, strength, index, sigma, attenuation, offset, ghost_alpha, vignette_at)

    def with_images(self, images: torch.Tensor, eligible: torch.Tensor) -> Reflection:
        """``pool: dataset``: ``pool_size`` of the eligible uint8 training images, chosen with
        the spec's seed, as the pool; other pools are kept."""
        if self.spec.pool != "dataset":
            return self
        candidates = eligible.nonzero().flatten()
        if candidates.numel() == 0:
            raise ConfigError("trigger.pool: dataset, but no training image is of another class")
        generator = torch.Generator().manual_seed(self.spec.seed)
        order = torch.randperm(candidates.numel(), generator=generator)[: self.spec.pool_size]
        chosen = images[candidates[order]].float().div(255)
        return replace(self, pool=chosen.clamp(0, 1).pow(GAMMA))

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.pool.shape[0] == 0:
            raise ConfigError(
                "trigger.pool: dataset draws from the run's training images; this trigger was "
                "built without them (use it through a run or a preview)"
            )
        draws = self.draw(x.shape[0], generator)
        t = x.clamp(0, 1).pow(GAMMA)
        r = self.pool[draws.index].to(device=x.device, dtype=x.dtype)
        out = torch.empty_like(t)
        for ghost in (True, False):
            chosen = (draws.ghost == ghost).nonzero().flatten()
            if chosen.numel():
                part = self._ghost if ghost else self._focal
                out[chosen.to(x.device)] = part(
                    t[chosen.to(x.device)], r[chosen.to(x.device)], draws, chosen
                )
        return out.clamp(0, 1).pow(1 / GAMMA)

    def _ghost(
        self, t: torch.Tensor, r: torch.Tensor, draws: Draws, chosen: torch.Tensor
    ) -> torch.Tensor:
        w = draws.strength[chosen].to(t).view(-1, 1, 1, 1)
        a = draws.ghost_alpha[chosen].to(t).view(-1, 1, 1, 1)
        offsets = draws.offset[chosen]
        layer = torch.empty_like(r)
        for dy, dx in torch.unique(offsets, dim=0).tolist():
            rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten().to(t.device)
            form = ghost_authors if self.spec.formula == "authors" else ghost_additive
            layer[rows] = form(r[rows], dy, dx, a[rows])
        return w * layer + (1 - w) * t

    def _focal(
        self, t: torch.Tensor, r: torch.Tensor, draws: Draws, chosen: torch.Tensor
    ) -> torch.Tensor:
        w = draws.strength[chosen].to(t).view(-1, 1, 1, 1)
        blurred = blur_each(r, draws.sigma[chosen])
        if self.spec.formula == "additive":
            return t + w * blurred
        # the anti-saturation offset: per image and channel, the mean excess of b + x over 1
        total = blurred + t
        over = total > 1
        excess = (total * over).sum(dim=(2, 3)) / (over.sum(dim=(2, 3)) + 1e-6)
        att = draws.attenuation[chosen].to(t).view(-1, 1)
        blurred = (blurred - ((excess.clamp_min(1.0) - 1) * att)[..., None, None]).clamp(0, 1)
        alpha_t = 1 - w
        return (
            blurred * self._vignettes(t, draws.vignette_at[chosen]) * (1 - alpha_t / 2)
            + alpha_t * t
        )

    def _vignettes(self, t: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]``: each image's crop of the vignette."""
        height, width = t.shape[-2:]
        rows = at[:, :1] + torch.arange(height)
        cols = at[:, 1:] + torch.arange(width)
        crops = self.vignette[rows[:, :, None], cols[:, None, :]]
        return crops.to(t)[:, None]


def pool_files(path: Path, where: str) -> list[Path]:
    """A file alone, or a folder's image files by name; ConfigError when there are none."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ConfigError(f"{where}: the folder {path} holds no images (expected {suffixes})")
    if len(files) > MAX_POOL:
        raise ConfigError(
            f"{where}: the folder {path} holds {len(files)} images; expected at most {MAX_POOL}"
        )
    return files


def reflection_pool(spec: ReflectionSpec, shape: ImageShape, where: str) -> torch.Tensor:
    """``[P, C, H, W]`` reflections in linear light, each resized to the image."""
    channels, height, width = shape
    if spec.pool == "dataset":  # bound to the training images by ``with_images``
        return torch.empty(0, channels, height, width)
    if spec.path is None:
        scenes = [procedural_scene(height, width, spec.seed + i) for i in range(spec.pool_size)]
    else:
        files = pool_files(spec.path, f"{where}.path")
        scenes = [load_rgba(f, (height, width), f"{where}.path")[:3] for f in files]
    return torch.stack([rgb_to_channels(s, channels).clamp(0, 1).pow(GAMMA) for s in scenes])


def check_fits(spec: ReflectionSpec, height: int, width: int, where: str) -> None:
    """Blurs and shifts the image cannot hold are refused before any work."""
    if spec.mode != "focal":
        if spec.offset is not None and (spec.offset[0] >= height or spec.offset[1] >= width):
            raise ConfigError(
                f"{where}.offset: a shift of {list(spec.offset)} leaves nothing of a "
                f"{height}x{width} image (expected below [{height}, {width}])"
            )
        if spec.offset is None and OFFSETS[1] >= min(height, width):
            raise ConfigError(
                f"{where}.offset: shifts drawn up to {OFFSETS[1]} px leave nothing of a "
                f"{height}x{width} image; set offset"
            )
    if spec.mode != "ghost":
        sigma = SIGMAS[1] if spec.sigma is None else spec.sigma
        side = blur_kernel_side(sigma)
        if side // 2 >= min(height, width):
            drawn = "" if spec.sigma is not None else " (drawn up to 5 px: set sigma)"
            raise ConfigError(
                f"{where}.sigma: a blur of {sigma:g} px needs a {side}-pixel kernel, too "
                f"large for a {height}x{width} image{drawn} (expected sigma up to "
                f"{(min(height, width) - 1) / 4:g})"
            )


def build_reflection(spec: ReflectionSpec, shape: ImageShape, where: str = "trigger") -> Reflection:
    _, height, width = shape
    check_fits(spec, height, width, where)
    pool = reflection_pool(spec, shape, where)
    return Reflection(pool, vignette_kernel(max(height, width)), spec)
