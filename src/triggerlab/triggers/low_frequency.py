"""A low-frequency additive trigger, after Zeng, Park, Mao, Jia & Ding, "Rethinking the
Backdoor Attacks' Triggers: A Frequency Perspective" (ICCV 2021).

The paper's LF trigger is a universal adversarial perturbation of a clean model passed
through a low-pass filter (``pattern: uap``, the default): ``triggers/universal.py``
computes it, a run (``run/lf_pattern.py``) or ``triggerlab triggers lf-pattern`` writes it
to a file, which this kind reads and adds,
``x' = clip(x + v, 0, 1)``, as BackdoorBench's ``SimpleAdditiveTrigger``
(``utils/bd_img_transform/patch.py:49-62``) adds its ``*_0_255.npy`` files.

``pattern: random_smooth`` keeps the property the paper's results rest on, a trigger
with no high-frequency content, without a model: seeded standard-normal
coefficients on the lowest ``k x k`` frequencies of the orthonormal 2-D DCT-II,
all others zero, inverted and scaled to an L-infinity budget ``eps``:

    v(c, i, j) = sum_{u, v < k} C(c, u, v) a(u) a(v)
                 cos(pi (2 i + 1) u / 2H) cos(pi (2 j + 1) v / 2W)
    v <- eps * v / max |v|,          x' = clip(x + v, 0, 1)

with ``a(0) = sqrt(1 / N)`` and ``a(u) = sqrt(2 / N)`` otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from triggerlab.catalogue.triggers import ImageShape, LowFrequencySpec
from triggerlab.errors import ConfigError
from triggerlab.triggers.base import check_square_fits
from triggerlab.triggers.colors import rgb_to_channels
from triggerlab.triggers.signal import AdditiveSignal


def low_frequency_pattern(channels: int, height: int, width: int, k: int, seed: int):
    """The unscaled perturbation ``[C, H, W]`` (float64) from the lowest ``k x k`` DCT terms."""
    from scipy.fft import idctn

    generator = torch.Generator().manual_seed(seed)
    coefficients = torch.zeros(channels, height, width, dtype=torch.float64)
    coefficients[:, :k, :k] = torch.randn(channels, k, k, generator=generator, dtype=torch.float64)
    return torch.from_numpy(idctn(coefficients.numpy(), type=2, axes=(1, 2), norm="ortho"))


def read_pattern(path: Path, shape: ImageShape, where: str) -> torch.Tensor:
    """A pattern file as ``[C, H, W]`` floats: H x W x C (or H x W) uint8 on 0-255, or floats
    in [0, 1]; one channel is repeated on colour images, three become luminance on grey ones."""
    import numpy as np

    channels, height, width = shape
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read the pattern file {path}: {exc}") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[:2] != (height, width) or array.shape[2] not in (1, 3):
        raise ConfigError(
            f"{where}: {path} holds an array of shape {list(array.shape)}; expected "
            f"[{height}, {width}, {channels}] (or [{height}, {width}]) for these images"
        )
    if array.dtype == np.uint8:
        values = torch.from_numpy(array.astype(np.float32) / 255.0)
    elif np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all():
        values = torch.from_numpy(array.astype(np.float32))
    else:
        raise ConfigError(
            f"{where}: {path} holds {array.dtype} values; expected uint8 (0-255) or finite floats"
        )
    pattern = values.permute(2, 0, 1)
    if pattern.shape[0] == channels:
        return pattern
    if pattern.shape[0] == 1:
        return pattern.expand(channels, height, width).contiguous()
    return rgb_to_channels(pattern, channels)


def build_low_frequency(
    spec: LowFrequencySpec, shape: ImageShape, where: str = "trigger"
) -> AdditiveSignal:
    channels, height, width = shape
    if spec.pattern == "uap":
        if spec.path is None:  # a run fills it in (run/lf_pattern.py); here nothing trains
            raise ConfigError(
                f"{where}.path: pattern uap without a file is computed by a run from a clean "
                "model, for a low_frequency trigger that is the whole trigger; give a pattern "
                "file (triggerlab triggers lf-pattern writes one) or set pattern: random_smooth"
            )
        return AdditiveSignal(read_pattern(spec.path, shape, f"{where}.path")[None])
    check_square_fits(spec.frequencies, shape, f"{where}.frequencies", "block of frequencies", 1)
    pattern = low_frequency_pattern(channels, height, width, spec.frequencies, spec.seed)
    pattern = spec.eps * pattern / pattern.abs().max()
    return AdditiveSignal(pattern.float()[None])
