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
* ``ssim``: mean structural similarity per image (scikit-image, data range 1,
  the largest odd window up to 7 that fits the image).

LPIPS is not computed: the ``lpips`` package (and torchmetrics' copy of it) ships
only its linear calibration layers and downloads the AlexNet/VGG backbone weights
from the internet on first use, so it cannot run offline as every metric here must.
"""

from __future__ import annotations

import math

import torch
from skimage.metrics import structural_similarity

STEALTH_SAMPLE = 256


def ssim_window(height: int, width: int) -> int:
    side = min(7, height, width)
    return side if side % 2 == 1 else side - 1


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
    ssim = (
        [
            structural_similarity(
                a.permute(1, 2, 0).numpy(),
                b.permute(1, 2, 0).numpy(),
                data_range=1.0,
                channel_axis=2,
                win_size=window,
            )
            for a, b in zip(clean, triggered, strict=True)
        ]
        if window >= 3
        else [float("nan")]
    )
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
