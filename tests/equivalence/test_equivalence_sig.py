"""SIG against BackdoorBench's computation (SCLBD/BackdoorBench @ f02e353,
utils/bd_img_transform/sig.py:41-53), re-stated here, on fixed images."""

from __future__ import annotations

import numpy as np
import torch

from triggerlab.catalogue.triggers import SignalSpec


def backdoorbench_sig(img: np.ndarray, delta: float = 40, f: float = 6) -> np.ndarray:
    """One HxWxC image on 0..255: ``delta sin(2 pi j f / m)`` for the column j = 0..m-1 (m the
    width), the same on every row and channel, added and clipped; returned before BB's
    ``np.uint8`` truncation (sig.py:51-52), which triggerlab replaces by rounding."""
    m = img.shape[1]
    j = np.arange(m, dtype=np.float64)
    pattern = (delta * np.sin(2 * np.pi * j * f / m)).astype(np.float32)  # float32 as theirs
    return np.clip(img.astype(np.uint32) + pattern[None, :, None], 0, 255)


def fixed_images() -> np.ndarray:
    """2 x 32 x 32 x 3 known uint8 images: a ramp and a checkerboard of dark and light."""
    ramp = np.broadcast_to(np.arange(32, dtype=np.uint8)[:, None, None] * 8, (32, 32, 3))
    board = ((np.indices((32, 32)).sum(axis=0) % 2) * 215 + 20).astype(np.uint8)
    return np.stack([ramp, np.repeat(board[..., None], 3, axis=2)])


def test_the_backdoorbench_preset_draws_backdoorbench_s_signal():
    images = fixed_images()
    trigger = SignalSpec(preset="backdoorbench").build((3, 32, 32))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255
    ours = trigger.apply(x).permute(0, 2, 3, 1).numpy() * 255
    theirs = np.stack([backdoorbench_sig(image) for image in images])
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    # stored: BB truncates, triggerlab rounds; they differ by at most one level
    stored = np.clip(np.round(ours), 0, 255) - np.uint8(theirs)
    assert stored.min() >= 0 and stored.max() <= 1


def test_the_default_starts_at_column_one_as_reference_003():
    grey = np.full((1, 32, 32, 3), 128, dtype=np.uint8)  # 128 +- 40: nothing clips
    x = torch.from_numpy(grey).permute(0, 3, 1, 2).double() / 255
    spec = SignalSpec(delta=40 / 255, frequency=6.0)
    ours = spec.build((3, 32, 32)).apply(x).permute(0, 2, 3, 1).numpy()[0] * 255 - 128
    theirs = backdoorbench_sig(grey[0]) - 128
    assert np.abs(ours - theirs).max() > 5  # not BackdoorBench's pixels
    # reference 003's column c carries BB's column c + 1: the same sine, one column on
    np.testing.assert_allclose(ours[:, :-1], theirs[:, 1:], atol=1e-3)
