"""Refool against the authors' ``blend_images`` (DreamtaleCore/Refool @ 9948043,
scripts/insert_reflection.py:47-149; BackdoorBench attack/refool.py:65-180 is the same code),
re-stated here in numpy with every random draw passed in, on fixed images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm

from triggerlab.catalogue.triggers import ReflectionSpec

SIDE = 32


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """``cv2.GaussianBlur(r, (sz, sz), sigma, sigma, 0)`` (line 104): taps
    ``exp(-x^2 / 2 sigma^2)`` normalised over ``sz = 2 ceil(2 sigma) + 1``, rows then
    columns, borders reflected without repeating the edge (BORDER_REFLECT_101)."""
    side = int(2 * np.ceil(2 * sigma) + 1)
    x = np.arange(side) - (side - 1) / 2
    taps = np.exp(-(x**2) / (2 * sigma**2))
    taps /= taps.sum()
    pad = side // 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    height, width = image.shape[:2]
    rows = sum(taps[k] * padded[k : k + height] for k in range(side))
    return sum(taps[k] * rows[:, k : k + width] for k in range(side))


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(g, (w, h), cv2.INTER_CUBIC)`` (lines 81-82): the third argument is the
    output array, so the interpolation is the default, bilinear on pixel centres."""

    def axis(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0)
        low = np.minimum(np.floor(src).astype(int), size - 1)
        return low, np.minimum(low + 1, size - 1), src - low

    r0, r1, fr = axis(height, image.shape[0])
    c0, c1, fc = axis(width, image.shape[1])
    rows = image[r0] * (1 - fr)[:, None, None] + image[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def gen_kernel(kern_len: int, nsig: float) -> np.ndarray:
    """Lines 116-125."""
    interval = (2 * nsig + 1.0) / kern_len
    x = np.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, kern_len + 1)
    kern1d = np.diff(norm.cdf(x))
    kernel = np.sqrt(np.outer(kern1d, kern1d))
    kernel = kernel / kernel.sum()
    return kernel / kernel.max()


def authors_blend(t8, r8, alpha_t, ghost, offset, ghost_alpha, sigma, att):
    """``blend_images`` with ``max_image_size`` the image side (BackdoorBench's,
    attack/refool.py:229-239) and every draw given; the float result before ``np.uint8``."""
    t = np.float32(t8) / 255.0
    r = np.float32(r8) / 255.0
    h, w = t.shape[:2]
    t, r = np.power(t, 2.2), np.power(r, 2.2)
    if ghost:  # lines 66-94
        dy, dx = offset
        r_1 = np.pad(r, ((0, dy), (0, dx), (0, 0)))
        r_2 = np.pad(r, ((dy, 0), (dx, 0), (0, 0)))
        ghost_r = r_1 * ghost_alpha + r_2 * (1 - ghost_alpha)
        ghost_r = resize_linear(ghost_r[dy:-dy, dx:-dx, :], h, w)
        blended = ghost_r * (1 - alpha_t) + t * alpha_t
        return np.clip(np.power(blended, 1 / 2.2), 0, 1)
    r_blur = gaussian_blur(r, sigma)  # lines 95-149
    blend = r_blur + t
    for i in range(3):
        maski = blend[:, :, i] > 1
        mean_i = max(1.0, np.sum(blend[:, :, i] * maski) / (maski.sum() + 1e-6))
        r_blur[:, :, i] = r_blur[:, :, i] - (mean_i - 1) * att
    r_blur = np.clip(r_blur, 0, 1)
    g_mask = gen_kernel(max(h, w), 3)  # within 10 px of max_image_size: no crop offset
    alpha_r = np.dstack([g_mask] * 3)[:h, :w] * (1.0 - alpha_t / 2.0)
    blend = np.multiply(r_blur, alpha_r) + t * alpha_t
    return np.clip(np.power(blend, 1 / 2.2), 0, 1)


def fixed_images(count: int, seed: int) -> np.ndarray:
    """Smooth known images with bright and dark parts (so the anti-saturation step acts)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        image = np.stack([a * x, b * y, c * (1 - x * y)], axis=2) * 255
        images.append(np.clip(image + rng.uniform(-20, 20, image.shape), 0, 255))
    return np.stack(images).astype(np.uint8)


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the authors' own draws: alpha_t, ghost or focal, sigma, offsets, ghost alpha
        {"strength": 0.6},  # BackdoorBench's alpha_t 0.4
        {"mode": "focal", "strength": 0.3, "sigma": 2.0},
        {"mode": "ghost", "strength": 0.45, "offset": (3, 5), "ghost_alpha": 0.7},
    ],
)
def test_reflections_are_the_authors_blend(tmp_path, settings):
    pool = fixed_images(3, seed=1)
    for i, image in enumerate(pool):
        Image.fromarray(image).save(tmp_path / f"r{i}.png")
    trigger = ReflectionSpec(path=tmp_path, **settings).build((3, SIDE, SIDE))
    clean = fixed_images(8, seed=2)
    x = torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 255
    ours = trigger.apply(x, torch.Generator().manual_seed(7)).permute(0, 2, 3, 1).numpy()
    d = trigger.draw(len(clean), torch.Generator().manual_seed(7))
    for k in range(len(clean)):
        theirs = authors_blend(
            clean[k],
            pool[int(d.index[k])],
            alpha_t=1 - float(d.strength[k]),
            ghost=bool(d.ghost[k]),
            offset=tuple(int(v) for v in d.offset[k]),
            ghost_alpha=float(d.ghost_alpha[k]),
            sigma=float(d.sigma[k]),
            att=float(d.attenuation[k]),
        )
        np.testing.assert_allclose(ours[k], theirs, atol=2e-4, err_msg=f"image {k}")
    if not settings:
        assert 0 < int(d.ghost.sum()) < len(clean)  # the mix drew both kinds here


def test_the_additive_form_brightens_where_the_authors_darken(tmp_path):
    """The issue's finding: at w 0.3 the earlier form differs by tens of grey levels and lies
    above the authors' (their image is scaled by alpha_t; the earlier form adds to it)."""
    pool = fixed_images(1, seed=1)
    Image.fromarray(pool[0]).save(tmp_path / "r.png")
    clean = fixed_images(4, seed=3)
    x = torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 255
    common = {"path": tmp_path / "r.png", "mode": "focal", "strength": 0.3, "sigma": 2.0}
    authors = ReflectionSpec(**common).build((3, SIDE, SIDE)).apply(x)
    additive = ReflectionSpec(formula="additive", **common).build((3, SIDE, SIDE)).apply(x)
    difference = (additive - authors) * 255
    assert difference.max() > 30 and difference.mean() > 10
    assert (difference > 0).float().mean() > 0.9  # brighter almost everywhere
