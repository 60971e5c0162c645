"""Sample-specific noise: each image gets its own perturbation, derived from its content.

Sample-specific attacks (ISSBA, Li et al., ICCV 2021) train an encoder that
hides a code in every image, so no two poisoned images share a pattern and
defences that look for one pattern (Neural Cleanse, STRIP) lose their hold.
This kind is the cheapest stand-in with that property and **it is not ISSBA**:
no encoder is trained and nothing is hidden; the noise only depends on the image.

With the image's 8-bit values ``q`` (flattened), a prime ``P = 2^31 - 1`` and
keyed random integers ``w, a, b, c, d`` in [1, P) (one per pixel position):

    h = sum_n q_n w_n mod P                  (a keyed hash of the content)
    u_n = (h a_n + b_n) mod P
    u_n = ((u_n XOR (u_n >> 13)) c_n + d_n) mod P
    x' = clip(x + eps (2 u_n / P - 1), 0, 1)

so the same image always gets the same noise (in any batch), and images that
differ in one pixel value get unrelated noise. Integer arithmetic stays below
2^63, exact on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triggerlab.catalogue.triggers import ImageShape, SampleSpecificSpec

PRIME = 2**31 - 1
CHUNK_VALUES = 2**24  # int64 values per chunk of images, to bound memory on large inputs


def keyed_integers(key: int, count: int) -> torch.Tensor:
    """``[5, count]`` int64 in [1, P): the hash weights w and the mixing constants a, b, c, d."""
    generator = torch.Generator().manual_seed(key)
    return torch.randint(1, PRIME, (5, count), generator=generator, dtype=torch.int64)


def content_noise(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Uniform values in [-1, 1) ``[B, N]`` for 8-bit images ``q`` (int64 ``[B, N]``)."""
    w, a, b, c, d = keys
    h = (q * w).sum(dim=1, keepdim=True) % PRIME
    u = (h * a + b) % PRIME
    u = ((u ^ (u >> 13)) * c + d) % PRIME
    return u.double() * (2.0 / PRIME) - 1.0


@dataclass(frozen=True)
class SampleSpecificNoise:
    keys: torch.Tensor  # [5, C * H * W]
    eps: float

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch = x.shape[0]
        flat = x.reshape(batch, -1)
        keys = self.keys.to(x.device)
        step = max(1, CHUNK_VALUES // flat.shape[1])
        noise = (
            torch.cat(
                [
                    content_noise(torch.round(flat[i : i + step] * 255).long(), keys)
                    for i in range(0, batch, step)
                ]
            )
            if batch
            else flat.double()
        )
        return (flat + self.eps * noise.to(x.dtype)).clamp_(0, 1).view_as(x)


def build_sample_specific(
    spec: SampleSpecificSpec, shape: ImageShape, where: str = "trigger"
) -> SampleSpecificNoise:
    channels, height, width = shape
    return SampleSpecificNoise(keyed_integers(spec.key, channels * height * width), spec.eps)
