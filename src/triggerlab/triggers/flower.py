"""The built-in ``flower`` trigger image, drawn procedurally (no third-party artwork).

Six rounded petals around a yellow centre, rendered at 4x the requested side
and averaged down (with premultiplied alpha) so edges are antialiased at any size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PETAL_RGB = (0.86, 0.22, 0.52)
PETAL_EDGE_RGB = (0.55, 0.08, 0.30)
CENTRE_RGB = (0.98, 0.80, 0.15)
CENTRE_EDGE_RGB = (0.80, 0.45, 0.05)


def flower_rgba(side: int, petals: int = 6, supersample: int = 4) -> torch.Tensor:
    """Float RGBA ``[4, side, side]`` in [0, 1]: a flower on a transparent background."""
    n = side * supersample
    axis = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2.0 - 1.0
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    radius = torch.sqrt(x**2 + y**2)
    angle = torch.atan2(y, x) + math.pi / 2  # a petal points straight up
    # Petal outline in polar form: a rounded rose curve between 0.4 and 0.95 of the half-side.
    outline = 0.4 + 0.55 * torch.abs(torch.cos(petals * angle / 2)) ** 0.6
    petal = radius <= outline
    centre = radius <= 0.3
    # Shade petals darker towards their tips and the centre darker towards its rim.
    petal_shade = (radius / outline).clamp(0, 1)
    centre_shade = (radius / 0.3).clamp(0, 1)

    def mix(a: tuple[float, ...], b: tuple[float, ...], t: torch.Tensor) -> torch.Tensor:
        return torch.stack([(1 - t) * ca + t * cb for ca, cb in zip(a, b, strict=True)])

    rgb = torch.where(
        centre,
        mix(CENTRE_RGB, CENTRE_EDGE_RGB, centre_shade**2),
        mix(PETAL_RGB, PETAL_EDGE_RGB, petal_shade**3),
    )
    alpha = (petal | centre).to(torch.float64).unsqueeze(0)
    premultiplied = torch.cat([rgb * alpha, alpha]).unsqueeze(0)
    small = F.avg_pool2d(premultiplied, supersample)[0]
    coverage = small[3:].clamp_min(1e-12)
    colour = torch.where(small[3:] > 0, small[:3] / coverage, torch.zeros_like(small[:3]))
    return torch.cat([colour, small[3:]]).clamp(0, 1).float()
