"""The torch SSIM of the stealth metrics equals scikit-image's structural_similarity."""

import pytest
import torch
from skimage.metrics import structural_similarity

from triggerlab.attack.stealth import ssim_per_image, ssim_window, stealth_metrics


@pytest.mark.parametrize("shape", [(3, 3, 16, 16), (2, 1, 8, 8), (2, 3, 5, 9), (1, 1, 3, 3)])
def test_torch_ssim_equals_scikit_image(shape):
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(shape, generator=generator, dtype=torch.float64)
    triggered = clean.clone()
    triggered[:, :, :2, :2] = 1.0  # a patch
    triggered[-1] = torch.rand(shape[1:], generator=generator, dtype=torch.float64)
    window = ssim_window(*shape[2:])
    expected = [
        structural_similarity(
            a.permute(1, 2, 0).numpy(),
            b.permute(1, 2, 0).numpy(),
            data_range=1.0,
            channel_axis=2,
            win_size=window,
        )
        for a, b in zip(clean, triggered, strict=True)
    ]
    got = ssim_per_image(clean, triggered, window)
    assert got.tolist() == pytest.approx(expected, abs=1e-12)
    assert stealth_metrics(clean, triggered)["ssim"] == pytest.approx(sum(expected) / len(expected))
