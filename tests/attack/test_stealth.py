"""Stealthiness metrics on cases with known answers."""

import math

import pytest
import torch

from triggerlab.attack.stealth import stealth_metrics, stealth_of_uint8
from triggerlab.catalogue.triggers import FrameSpec, PatchSpec, SignalSpec


def test_sine_signal_psnr_matches_its_mean_square():
    # no clipping around 0.5 grey; mean of sin^2 over whole periods is 1/2, so MSE = delta^2 / 2
    x = torch.full((3, 3, 64, 64), 0.5)
    for delta in (0.01, 0.05, 0.1):
        y = SignalSpec(shape="sine", delta=delta, frequency=6).build((3, 64, 64)).apply(x)
        m = stealth_metrics(x, y)
        assert m["psnr_db"] == pytest.approx(10 * math.log10(2 / delta**2), abs=1e-3)
        assert m["linf_mean"] == pytest.approx(delta, rel=1e-4)
        # sin(2 pi 6 j / 64) is zero at j = 16, 32, 48, 64: 60 of 64 columns change
        assert m["l0_fraction"] == pytest.approx(60 / 64)


def test_patch_l0_l2_linf_are_exact():
    x = torch.zeros(2, 3, 32, 32)
    y = PatchSpec(size=4, color="white").build((3, 32, 32)).apply(x)
    m = stealth_metrics(x, y)
    assert m["l0_fraction"] == pytest.approx(16 / 1024)
    assert m["l2_mean"] == pytest.approx(math.sqrt(16 * 3))
    assert m["linf_mean"] == 1.0
    assert m["psnr_db"] == pytest.approx(10 * math.log10(1024 / 16))
    assert 0 < m["ssim"] < 1


def test_psnr_is_per_image_averaged_and_the_pooled_value_is_kept():
    x = torch.zeros(3, 1, 10, 10)
    y = x.clone()
    y[0, 0, 0, :1] = 1.0  # MSE 1/100: 20 dB
    y[1, 0, 0, :10] = 1.0  # MSE 10/100: 10 dB
    m = stealth_metrics(x, y)  # the third image is unchanged and left out of the average
    assert m["psnr_db"] == pytest.approx(15.0)
    assert m["psnr_pooled_db"] == pytest.approx(10 * math.log10(300 / 11))


def test_identical_images():
    x = torch.rand(2, 1, 16, 16)
    m = stealth_metrics(x, x.clone())
    assert m["l0_fraction"] == 0 and m["l2_mean"] == 0 and m["psnr_db"] is None
    assert m["psnr_pooled_db"] is None
    assert m["ssim"] == pytest.approx(1.0)


def test_uint8_version_uses_a_fixed_sample():
    clean = torch.zeros(300, 1, 8, 8, dtype=torch.uint8)
    frame = FrameSpec(thickness=1).build((1, 8, 8))
    triggered = (frame.apply(clean.float() / 255) * 255).round().byte()
    triggered[256:] = 0  # outside the sample: must not count
    m = stealth_of_uint8(clean, triggered)
    assert m["l0_fraction"] == pytest.approx(28 / 64)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        stealth_metrics(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
