"""Zeng et al.'s low-frequency trigger against BackdoorBench's generator (SCLBD/BackdoorBench
@ f02e353, resource/lowFrequency/: gauss_smooth.py, deepfool.py, universal_pert.py),
re-stated here in numpy, on fixed inputs and a fixed linear model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from triggerlab.catalogue.triggers import LowFrequencySpec
from triggerlab.errors import ConfigError
from triggerlab.triggers.universal import (
    low_pass,
    normalise,
    targeted_deepfool,
    universal_perturbation,
)

SHAPE = (3, 12, 12)


def bb_gauss_smooth(image: np.ndarray, sig: float = 6) -> np.ndarray:
    """gauss_smooth.py:16-49 on one H x W x C image: 30 taps 5 apart of a Gaussian of
    sigma 30 (6 px), zero padding (14, 15) on each axis, rows then columns."""
    size_denom = 5.0
    sigma = sig * size_denom
    kernel_size = sigma
    mgrid = np.arange(kernel_size, dtype=np.float32)
    mgrid = (mgrid - (kernel_size - 1.0) / 2.0) * size_denom
    kernel = 1.0 / (sigma * math.sqrt(2.0 * math.pi)) * np.exp(-((mgrid / sigma) ** 2) * 0.5)
    kernel = kernel / np.sum(kernel)
    size = int(kernel_size)
    padd0, evenorodd = int(kernel_size // 2), int(1 - kernel_size % 2)
    before, after = padd0 - evenorodd, padd0
    padded = np.pad(image, ((before, after), (before, after), (0, 0)))
    height, width = image.shape[:2]
    rows = sum(kernel[k] * padded[k : k + height] for k in range(size))
    return sum(kernel[k] * rows[:, k : k + width] for k in range(size))


def bb_normalization(data: np.ndarray) -> np.ndarray:
    """gauss_smooth.py:11-13."""
    return (data - np.min(data)) / (np.max(data) - np.min(data)) * 0.2


def bb_tar_deepfool(image, weight, bias, target, overshoot=0.02, max_iter=100):
    """deepfool.py:7-84 for the linear network ``f(x) = W x + b`` (its gradient of class k is
    row k of W); ``image`` flat."""
    num_classes = len(bias)
    f_image = weight @ image + bias
    order = f_image.argsort()[::-1][:num_classes]
    r_tot = np.zeros_like(image)
    fs = weight @ image + bias
    k_i, loop_i = int(np.argmax(fs)), 0
    while k_i != target and loop_i < max_iter:
        gradients = [weight[order[k]] for k in range(num_classes)]
        k = int(np.where(order == target)[0][0])
        w_k = gradients[k] - gradients[0]
        f_k = fs[order[k]] - fs[order[0]]
        pert = abs(f_k) / np.linalg.norm(w_k)
        r_i = pert * w_k / np.linalg.norm(w_k)
        r_tot = np.float32(r_tot + r_i)
        pert_image = image + (1 + overshoot) * r_tot
        fs = weight @ pert_image + bias
        k_i = int(np.argmax(fs))
        loop_i += 1
    return (1 + overshoot) * r_tot, loop_i


def linear_model(seed: int = 0, uniform: float = 0.0) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """Random weights, plus ``uniform`` x a per-class constant: a brightness direction that a
    smooth non-negative pattern can push along."""
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(math.prod(SHAPE), 10)
    with torch.no_grad():
        brightness = uniform * 0.05 * torch.linspace(0, 1, 10)[:, None]
        layer.weight.copy_(
            torch.randn(10, math.prod(SHAPE), generator=generator) * 0.05 + brightness
        )
        layer.bias.copy_(torch.randn(10, generator=generator))
    model = nn.Sequential(nn.Flatten(), layer).double()
    return model, layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()


def test_the_low_pass_is_backdoorbench_s_gauss_smooth():
    v = torch.rand(*SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = low_pass(v).permute(1, 2, 0).numpy()
    theirs = bb_gauss_smooth(v.permute(1, 2, 0).numpy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    big = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    np.testing.assert_allclose(
        low_pass(big).permute(1, 2, 0).numpy(),
        bb_gauss_smooth(big.permute(1, 2, 0).numpy()),
        rtol=1e-5,
        atol=1e-7,
    )
    np.testing.assert_allclose(normalise(big).numpy(), bb_normalization(big.numpy()))


@pytest.mark.parametrize("target", [0, 3, 7])
def test_targeted_deepfool_is_backdoorbench_s(target):
    model, weight, bias = linear_model()
    x = torch.rand(*SHAPE, generator=torch.Generator().manual_seed(target), dtype=torch.float64)
    ours, steps = targeted_deepfool(model, x, target, max_iter=100)
    theirs, their_steps = bb_tar_deepfool(x.flatten().numpy(), weight, bias, target)
    assert steps == their_steps
    np.testing.assert_allclose(ours.flatten().numpy(), theirs, rtol=1e-5, atol=1e-7)
    assert int(model((x + ours)[None]).argmax()) == target


def bb_universal(images, check, weight, bias, target, orders, delta=0.8, max_iter_uni=50):
    """universal_pert.py:14-182 (max_iter_df 200, overshoot 0.02) for the linear network, with
    the pass orders given (theirs come from np.random.shuffle)."""
    v = np.zeros(images.shape[1:], dtype=np.float32)  # H x W x C
    fooling_rate, itr, rates = 0.0, 0, []

    def predict(batch):
        flat = np.transpose(batch, (0, 3, 1, 2)).reshape(len(batch), -1)
        return (flat @ weight.T + bias).argmax(axis=1)

    def to_flat(image):
        return np.transpose(image, (2, 0, 1)).flatten()

    while fooling_rate < 1 - delta and itr < max_iter_uni:
        for k in orders[itr]:
            cur = images[k : k + 1]
            if predict(cur + v)[0] == predict(cur)[0]:
                dr, iters = bb_tar_deepfool(to_flat((cur + v)[0]), weight, bias, target, 0.02, 200)
                if iters < 200 - 1:
                    dr = np.transpose(dr.reshape(SHAPE), (1, 2, 0))
                    v = v + bb_gauss_smooth(dr)
                    v = bb_normalization(bb_gauss_smooth(v))
        itr += 1
        fooling_rate = float(np.mean(predict(check + v) != predict(check)))
        rates.append(fooling_rate)
        if len(rates) >= 5 and max(rates[-5:]) - min(rates[-5:]) < 0.01:
            break
    return v, rates


@pytest.mark.parametrize(
    ("uniform", "target", "passes"),
    [(0.0, 2, 4), (0.3, 9, 1)],  # never fools 20 %, every pass; fools 20 % and stops at once
)
def test_the_universal_perturbation_is_backdoorbench_s(uniform, target, passes):
    model, weight, bias = linear_model(seed=3, uniform=uniform)
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(6, *SHAPE, generator=generator, dtype=torch.float64)
    check = torch.rand(10, *SHAPE, generator=generator, dtype=torch.float64)
    ours = universal_perturbation(
        model, images, check, target, generator=torch.Generator().manual_seed(5), max_passes=4
    )
    assert ours.passes == passes
    replay = torch.Generator().manual_seed(5)
    orders = [torch.randperm(6, generator=replay).tolist() for _ in range(4)]
    theirs, rates = bb_universal(
        images.permute(0, 2, 3, 1).numpy(),
        check.permute(0, 2, 3, 1).numpy(),
        weight,
        bias,
        target=target,
        orders=orders,
        max_iter_uni=4,
    )
    assert ours.fooling_rates == pytest.approx(rates)
    np.testing.assert_allclose(ours.pattern.permute(1, 2, 0).numpy(), theirs, atol=1e-6)
    assert ours.pattern.min() == 0 and ours.pattern.max() == pytest.approx(0.2)


def test_a_uap_pattern_file_is_read_and_added(tmp_path):
    # BackdoorBench's *_0_255.npy: H x W x 3 uint8, added to the 0-255 image and clipped
    pattern = np.random.default_rng(0).integers(0, 52, (8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "lf.npy", pattern)
    trigger = LowFrequencySpec(pattern="uap", path=tmp_path / "lf.npy").build((3, 8, 8))
    x = torch.full((2, 3, 8, 8), 0.9)
    expected = np.clip(np.full((8, 8, 3), 0.9 * 255) + pattern, 0, 255) / 255
    np.testing.assert_allclose(trigger.apply(x)[1].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    grey = LowFrequencySpec(pattern="uap", path=tmp_path / "lf.npy").build((1, 8, 8))
    luma = pattern @ np.array([0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(grey.apply(torch.zeros(1, 1, 8, 8))[0, 0].numpy(), luma, atol=1e-5)


def test_a_pattern_file_that_does_not_fit_is_refused(tmp_path):
    np.save(tmp_path / "small.npy", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ConfigError, match=r"trigger.path: .* shape \[4, 4, 3\]; expected \[8, 8"):
        LowFrequencySpec(pattern="uap", path=tmp_path / "small.npy").build((3, 8, 8))
    (tmp_path / "bad.npy").write_text("not an array")
    with pytest.raises(ConfigError, match="cannot read the pattern file"):
        LowFrequencySpec(pattern="uap", path=tmp_path / "bad.npy").build((3, 8, 8))
    # without a file, a run computes the pattern; a bare build (nothing trains) refuses
    with pytest.raises(ConfigError, match="trigger.path: pattern uap without a file"):
        LowFrequencySpec(pattern="uap").build((3, 8, 8))
    with pytest.raises(ValueError, match="only pattern uap reads a pattern file"):
        LowFrequencySpec(pattern="random_smooth", path=tmp_path / "small.npy")
