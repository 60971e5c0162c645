"""How visible a trigger is: distances between clean and triggered images.

All on float images in [0, 1], over a fixed sample of test images:

* ``l0_fraction``: fraction of pixel positions where any channel changed;
* ``l2_mean``: mean over images of the L2 norm of the difference (all channels);
* ``linf_mean``: mean over images of the largest absolute change;
* ``psnr_db``: the standard per-image PSNR, ``10 log10(1 / MSE_i)``, averaged over
  the images the trigger changed (an unchanged image's PSNR is infinite; null when
  no image changed);
* ``psnr_pooled_db``: ``10 log10(1 / MSE)`` with the MSE pooled over the whole
  sample (what ``psnr_db`` held in runs made before the per-image PSNR);
* ``ssim``: mean structural similarity per image, as scikit-image's
  ``structural_similarity`` computes it (data range 1, a uniform window: the largest odd
  one up to 7 that fits the image, sample covariances, averaged over the positions where
  the window fits and over the channels), computed here in torch: importing
  scikit-image (and SciPy) cost each run more than a second.

LPIPS is not computed: the ``lpips`` package (and torchmetrics' copy of it) ships
only its linear calibration layers and downloads the AlexNet/VGG backbone weights
from the internet on first use, so it cannot run offline as every metric here must.
"""

from __future__ import annotations

import math

import torch

STEALTH_SAMPLE = 256


def ssim_window(height: int, width: int) -> int:
    side = min(7, height, width)
    return side if side % 2 == 1 else side - 1


def ssim_per_image(x: torch.Tensor, y: torch.Tensor, window: int) -> torch.Tensor:
    """Structural similarity of each pair of float64 ``[N, C, H, W]`` images in [0, 1] (Wang
    et al. 2004 with a uniform ``window``, as scikit-image's default)."""
    c1, c2 = 0.01**2, 0.03**2  # (K1 x data range)^2, (K2 x data range)^2
    n, channels = x.shape[:2]

    def mean(t: torch.Tensor) -> torch.Tensor:  # over each window that fits in the image
        return torch.nn.functional.avg_pool2d(t.reshape(n * channels, 1, *t.shape[2:]), window, 1)

    ux, uy = mean(x), mean(y)
    correction = window**2 / (window**2 - 1)  # sample, not population, covariances
    vx = correction * (mean(x * x) - ux * ux)
    vy = correction * (mean(y * y) - uy * uy)
    vxy = correction * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.reshape(n, -1).mean(dim=1)


def stealth_metrics(clean: torch.Tensor, triggered: torch.Tensor) -> dict[str, float | None]:
    """Distances between two float ``[N, C, H, W]`` batches in [0, 1]."""
    if clean.shape != triggered.shape or clean.ndim != 4:
        raise ValueError(
            "expected two [N, C, H, W] batches of one shape, "
            f"got {tuple(clean.shape)} and {tuple(triggered.shape)}"
        )
    clean, triggered = clean.double().cpu(), triggered.double().cpu()
    diff = triggered - clean
    flat = diff.flatten(1)
    per_image = diff.pow(2).flatten(1).mean(dim=1)  # every image has the same size
    mse = float(per_image.mean())
    changed = per_image[per_image > 0]
    height, width = clean.shape[-2:]
    window = ssim_window(height, width)
    ssim = ssim_per_image(clean, triggered, window).tolist() if window >= 3 else [float("nan")]
    return {
        "l0_fraction": float((diff != 0).any(dim=1).double().mean()),
        "l2_mean": float(flat.norm(dim=1).mean()),
        "linf_mean": float(flat.abs().amax(dim=1).mean()),
        "psnr_db": float((-10 * changed.log10()).mean()) if changed.numel() else None,
        "psnr_pooled_db": 10 * math.log10(1.0 / mse) if mse > 0 else None,
        "ssim": float(sum(ssim) / len(ssim)),
    }


def stealth_of_uint8(
    clean: torch.Tensor, triggered: torch.Tensor, sample: int = STEALTH_SAMPLE
) -> dict[str, float | None]:
    """Stealthiness of stored (uint8) images: the first ``sample`` pairs, as floats in [0, 1]."""
    return stealth_metrics(clean[:sample].float() / 255.0, triggered[:sample].float() / 255.0)
