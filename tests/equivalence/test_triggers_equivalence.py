"""Triggers against their authors' code, on fixed inputs (issue 25, item 9).

Each test re-states, in a few lines written anew, what the cited file of the authors'
code (or BackdoorBench's, "BB", github.com/SCLBD/BackdoorBench) computes, and compares
triggerlab's trigger with it: pixels before the images are stored, then after, where the
one documented storage difference (BB truncates to uint8, triggerlab rounds;
docs/authors_code.md section 0.1) is asserted explicitly. The facts and the places in the
authors' code are in docs/authors_code.md, section 2.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from support import REPO

from triggerlab.catalogue.triggers import (
    AdaptiveBlendSpec,
    BlendSpec,
    PatchSpec,
    QuantizeSpec,
    SignalSpec,
    WarpSpec,
)
from triggerlab.triggers import map_uint8

SHAPE = (3, 32, 32)


@pytest.fixture
def images() -> np.ndarray:
    """Two known 32x32 RGB images, HWC uint8 as BB's numpy code holds them."""
    rng = np.random.default_rng(2025)
    return rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)


def chw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))


def ours_float(trigger, images: np.ndarray) -> np.ndarray:
    """triggerlab's triggered images in 0..255 before they are stored, HWC."""
    x = chw(images).float() / 255
    return (trigger.apply(x) * 255).permute(0, 2, 3, 1).numpy().astype(np.float64)


def ours_stored(trigger, images: np.ndarray) -> np.ndarray:
    return map_uint8(trigger.apply, chw(images)).permute(0, 2, 3, 1).numpy()


def bb_stored(values: np.ndarray) -> np.ndarray:
    """BB's storage of a triggered image: clip, then truncate (BB:
    utils/aggregate_block/bd_attack_generate.py:39-44)."""
    return np.clip(values, 0, 255).astype(np.uint8)


# ---- BadNets: BB utils/bd_img_transform/patch.py:37-47 (AddMaskPatchTrigger) --------------


def bb_badnets(images: np.ndarray) -> np.ndarray:
    # BB's default trigger image: a 3x3 white square at rows and columns 29-31 of 32
    # (BB: resource/badnet/generate_white_square.py:7-10), non-zero pixels replacing the image
    trigger = np.zeros((32, 32, 3), dtype=np.uint8)
    trigger[29:32, 29:32, :] = 255
    return images * (trigger == 0) + trigger * (trigger > 0)


def test_badnets_is_bbs_white_square_pixel_for_pixel(images):
    patch = PatchSpec(size=3, position="bottom_right", color="white").build(SHAPE)
    assert np.array_equal(ours_stored(patch, images), bb_badnets(images))


# ---- Blended: BB utils/bd_img_transform/blended.py:22-23 ----------------------------------


def bb_blended(images: np.ndarray, pattern: np.ndarray, alpha: float) -> np.ndarray:
    return (1 - alpha) * images.astype(np.float64) + alpha * pattern.astype(np.float64)


def test_blended_is_bbs_blend_before_storage_and_within_one_level_after(images, tmp_path):
    pattern = np.random.default_rng(7).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pattern).save(tmp_path / "pattern.png")  # BB resizes it to 32x32: as is
    spec = BlendSpec(pattern="image", path=tmp_path / "pattern.png", opacity=0.2)
    blend = spec.build(SHAPE)
    theirs = bb_blended(images, pattern, 0.2)
    assert np.abs(ours_float(blend, images) - theirs).max() < 1e-3
    stored = ours_stored(blend, images).astype(int)
    # the one difference: triggerlab rounds where BB truncates
    assert np.array_equal(stored, np.round(theirs).astype(int))
    assert set(np.unique(stored - bb_stored(theirs))) <= {0, 1}


# ---- SIG: BB utils/bd_img_transform/sig.py:41-53 ------------------------------------------


def bb_sig(images: np.ndarray, delta: float = 40, f: float = 6) -> np.ndarray:
    """v[i, j] = delta sin(2 pi j f / m), j = 0..m-1 the column, m the width; added to every
    channel of the uint32 image (clipping and truncation come with storage)."""
    m = images.shape[2]
    columns = np.arange(m)
    pattern = delta * np.sin(2 * np.pi * columns * f / m)
    return images.astype(np.uint32) + pattern[None, None, :, None]


def test_sig_is_bbs_signal_one_column_later(images):
    """Reference 003's equations count the columns j = 1..m, BB's code j = 0..m-1: triggerlab's
    column c carries BB's column c + 1 (docs/authors_code.md 2.3 (a)), the rest is equal."""
    signal = SignalSpec(shape="sine", delta=40 / 255, frequency=6).build(SHAPE)
    ours = ours_float(signal, images)
    theirs = np.clip(bb_sig(images), 0, 255)
    # triggerlab's column c is x + v(c + 1); BB's column c + 1 of an image whose column c + 1
    # equals our image's column c: compare the signal itself on a flat grey image
    grey = np.full((1, 32, 32, 3), 128, dtype=np.uint8)
    ours_signal = ours_float(signal, grey)[0, 0, :, 0] - 128
    theirs_signal = bb_sig(grey)[0, 0, :, 0].astype(np.float64) - 128
    assert np.abs(ours_signal[:-1] - theirs_signal[1:]).max() < 1e-3
    assert abs(ours_signal[-1] - theirs_signal[0]) < 1e-3  # j = m is j = 0 again (f whole)
    # on the images: equal where BB's pattern is rolled by one column
    rolled = np.clip(
        images.astype(np.float64) + np.roll(theirs_signal, -1)[None, None, :, None], 0, 255
    )
    assert np.abs(ours - rolled).max() < 1e-3
    assert not np.allclose(ours, theirs, atol=1e-3)  # the difference is real, not rounding
    # counting from column 0, as BB's code does, the two are one computation
    bb_like = SignalSpec(shape="sine", delta=40 / 255, frequency=6, first_column=0).build(SHAPE)
    assert np.abs(ours_float(bb_like, images) - theirs).max() < 1e-3


# ---- WaNet: its authors' train.py:342-352 (field) and 72-79 (warp) --------------------------


def wanet(images: torch.Tensor, k: int, s: float, rescale: float, seed: int) -> torch.Tensor:
    """The authors' warp of a batch: the field from torch's generator seeded ``seed``."""
    torch.manual_seed(seed)
    height = images.shape[2]
    ins = torch.rand(1, 2, k, k) * 2 - 1
    ins = ins / torch.mean(torch.abs(ins))
    noise_grid = F.interpolate(ins, size=height, mode="bicubic", align_corners=True)
    noise_grid = noise_grid.permute(0, 2, 3, 1)
    array1d = torch.linspace(-1, 1, steps=height)
    x, y = torch.meshgrid(array1d, array1d, indexing="ij")
    identity_grid = torch.stack((y, x), 2)[None, ...]
    grid = torch.clamp((identity_grid + s * noise_grid / height) * rescale, -1, 1)
    return F.grid_sample(images, grid.repeat(images.shape[0], 1, 1, 1), align_corners=True)


@pytest.mark.parametrize(("k", "s", "rescale"), [(4, 0.5, 1.0), (4, 1.0, 1.0), (8, 0.75, 0.98)])
def test_warp_is_wanets_warp_bit_for_bit(images, k, s, rescale):
    x = chw(images).float() / 255
    spec = WarpSpec(grid=k, strength=s, grid_rescale=rescale, seed=11)
    ours = spec.build(SHAPE).apply(x)
    assert torch.equal(ours, wanet(x, k, s, rescale, seed=11))


# ---- BppAttack: its authors' bppattack.py:113-136 (dithering) and 177-184 (squeeze) --------


def bpp_squeeze(values: np.ndarray, levels: int) -> np.ndarray:
    """``round(y / 255 (L - 1)) / (L - 1) 255`` on 0..255 values (half to even)."""
    return np.round(values / 255.0 * (levels - 1)) / (levels - 1) * 255


def bpp_dither(image: np.ndarray, levels: int) -> np.ndarray:
    """Floyd-Steinberg in raster order on one CHW image of 0..255 floats; the error goes on
    unclipped; the authors round the result to integers afterwards (line 180)."""
    image = image.astype(np.float64).copy()
    _, h, w = image.shape
    for y in range(h):
        for x in range(w):
            old = image[:, y, x].copy()
            new = np.round(old / 255.0 * (levels - 1)) / (levels - 1) * 255
            error = old - new
            image[:, y, x] = new
            if x + 1 < w:
                image[:, y, x + 1] += error * 7 / 16
            if y + 1 < h and x + 1 < w:
                image[:, y + 1, x + 1] += error * 1 / 16
            if y + 1 < h:
                image[:, y + 1, x] += error * 5 / 16
            if x - 1 >= 0 and y + 1 < h:
                image[:, y + 1, x - 1] += error * 3 / 16
    return np.round(image)


@pytest.mark.parametrize("bits", [3, 5])
def test_quantize_is_bppattacks_squeeze(images, bits):
    quantize = QuantizeSpec(bits=bits).build(SHAPE)
    theirs = bpp_squeeze(images.astype(np.float64), 2**bits)
    assert np.abs(ours_float(quantize, images) - theirs).max() < 1e-3
    # stored: the level (36.43 for level 1 of 8) rounds to the nearest integer in triggerlab;
    # the authors keep the float in memory, so half a grey level at most
    assert np.abs(ours_stored(quantize, images) - theirs).max() <= 0.5 + 1e-9


def test_dithered_quantize_is_bppattacks_raster_loop(images):
    quantize = QuantizeSpec(bits=3, dither=True).build(SHAPE)
    ours = ours_stored(quantize, images).transpose(0, 3, 1, 2).astype(np.float64)
    theirs = np.stack([bpp_dither(image, 8) for image in images.transpose(0, 3, 1, 2)])
    assert np.array_equal(ours, np.clip(theirs, 0, 255))


# ---- Adaptive-Blend: its authors' poison_tool_box/adaptive_blend.py:123-135 (test time) -----


def test_adaptive_blends_test_time_trigger_is_the_authors_unmasked_blend(images, tmp_path):
    """At test time the authors blend the whole pattern at alpha 0.2, no piece masked."""
    pattern = np.random.default_rng(3).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pattern).save(tmp_path / "pattern.png")
    spec = AdaptiveBlendSpec(pattern="image", path=tmp_path / "pattern.png", opacity=0.2)
    theirs = images + 0.2 * (pattern.astype(np.float64) - images)
    assert np.abs(ours_float(spec.build(SHAPE), images) - theirs).max() < 1e-3


# ---- every kind: compared with its authors' code, or named as having none -------------------

EQUIVALENCE = REPO / "tests" / "equivalence"
COVERAGE = {
    "patch": [("test_triggers_equivalence.py", "test_badnets_is_bbs_white_square_pixel_for_pixel")],
    "blend": [
        (
            "test_triggers_equivalence.py",
            "test_blended_is_bbs_blend_before_storage_and_within_one_level_after",
        )
    ],
    "signal": [
        ("test_triggers_equivalence.py", "test_sig_is_bbs_signal_one_column_later"),
        ("test_equivalence_sig.py", "test_the_backdoorbench_preset_draws_backdoorbench_s_signal"),
    ],
    "warp": [
        ("test_triggers_equivalence.py", "test_warp_is_wanets_warp_bit_for_bit"),
        ("../attack/test_per_batch.py", "test_wanet_per_batch_equals_the_authors_training_batch"),
    ],
    "quantize": [
        ("test_triggers_equivalence.py", "test_quantize_is_bppattacks_squeeze"),
        ("test_triggers_equivalence.py", "test_dithered_quantize_is_bppattacks_raster_loop"),
        ("../attack/test_per_batch.py", "test_bpp_per_batch_equals_the_authors_training_batch"),
    ],
    "low_frequency": [
        ("test_equivalence_low_frequency.py", "test_the_low_pass_is_backdoorbench_s_gauss_smooth"),
        ("test_equivalence_low_frequency.py", "test_the_universal_perturbation_is_backdoorbench_s"),
    ],
    "reflection": [("test_equivalence_refool.py", "test_reflections_are_the_authors_blend")],
    "adaptive_blend": [
        (
            "test_triggers_equivalence.py",
            "test_adaptive_blends_test_time_trigger_is_the_authors_unmasked_blend",
        )
    ],
}
# Kinds with no authors' code to compare with, and why.
OWN = {
    "image": "BadNets with an image: BB's AddMaskPatchTrigger, which the patch test covers; "
    "triggerlab's image stamp respects the PNG's alpha instead of BB's zero pixels (2.1)",
    "frame": "reference 000's frame: its authors published no code",
    "lines": "reference 000's lines: its authors published no code",
    "random": "triggerlab's own (a patch of colour, size and position drawn per sample)",
    "compose": "triggerlab's own: its parts, applied in order, are each covered",
    "sample_specific": "a stand-in that says it is not ISSBA (2.9): no authors' code computes it",
}


def test_every_trigger_kind_is_compared_with_its_authors_code_or_says_why_not():
    from triggerlab.catalogue.triggers import TRIGGER_KINDS

    assert set(COVERAGE) | set(OWN) == set(TRIGGER_KINDS)
    assert not set(COVERAGE) & set(OWN)
    for kind, tests in COVERAGE.items():
        for file, name in tests:
            assert f"def {name}(" in (EQUIVALENCE / file).read_text(), f"{kind}: {file}::{name}"
