"""WaNet warp, BppAttack quantisation, LF, Refool reflection, Adaptive-Blend and
sample-specific noise: each checked pixel by pixel against its paper's formula,
written independently here (NumPy loops), and for determinism and bad parameters."""

import json
import math

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from support.formats import write_image

from triggerlab.attack.poison import poison_dataset
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.catalogue.triggers import (
    AdaptiveBlendSpec,
    LowFrequencySpec,
    QuantizeSpec,
    ReflectionSpec,
    SampleSpecificSpec,
    TriggerSpec,
    WarpSpec,
)
from triggerlab.config import PoisonConfig, load_config
from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError
from triggerlab.grid.plan import run_id
from triggerlab.run.experiment import run_experiment
from triggerlab.triggers import apply_to_uint8
from triggerlab.triggers.reflection import procedural_scene
from triggerlab.triggers.sample_specific import PRIME, keyed_integers
from triggerlab.triggers.warp import control_field

ADAPTER = TypeAdapter(TriggerSpec)
NEW_KINDS = [
    {"kind": "warp", "strength": 1.0},
    {"kind": "warp", "noise_mode": True},
    {"kind": "quantize", "bits": 2},
    {"kind": "quantize", "bits": 2, "dither": True},
    {"kind": "low_frequency", "pattern": "random_smooth", "eps": 0.1},
    {"kind": "reflection"},
    {"kind": "reflection", "mode": "ghost", "offset": [1, 2]},
    {"kind": "adaptive_blend"},
    {"kind": "sample_specific"},
]


def images(shape=(3, 3, 12, 10), seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def bilinear(image: np.ndarray, gx: float, gy: float) -> np.ndarray:
    """``grid_sample`` of one point, align_corners=True, zeros outside: by the definition."""
    _, height, width = image.shape
    px, py = (gx + 1) / 2 * (width - 1), (gy + 1) / 2 * (height - 1)
    x0, y0 = math.floor(px), math.floor(py)
    out = np.zeros(image.shape[0])
    for yy, xx, w in (
        (y0, x0, (1 - (px - x0)) * (1 - (py - y0))),
        (y0, x0 + 1, (px - x0) * (1 - (py - y0))),
        (y0 + 1, x0, (1 - (px - x0)) * (py - y0)),
        (y0 + 1, x0 + 1, (px - x0) * (py - y0)),
    ):
        if 0 <= yy < height and 0 <= xx < width:
            out += w * image[:, yy, xx]
    return out


# ---- warp (WaNet) ---------------------------------------------------------------------------


def test_warp_field_is_scaled_to_mean_absolute_one_and_passes_through_its_control_points():
    field = control_field(4, seed=3)
    assert field.shape == (1, 2, 4, 4)
    assert field.abs().mean().item() == pytest.approx(1.0)
    warp = WarpSpec(strength=0.5, grid=4, seed=3).build((1, 13, 13))
    # bicubic with align_corners=True reproduces the control values at the image corners
    for (r, c), (fr, fc) in {(0, 0): (0, 0), (0, 12): (0, 3), (12, 0): (3, 0)}.items():
        identity = torch.tensor([-1 + 2 * c / 12, -1 + 2 * r / 12])
        expected = (identity + 0.5 * field[0, :, fr, fc] / 13).clamp(-1, 1)
        assert torch.allclose(warp.grid[0, r, c], expected, atol=1e-6)


def test_warp_samples_each_pixel_bilinearly_at_the_warped_grid():
    x = images()
    warp = WarpSpec(strength=2.0, grid=3, seed=1).build((3, 12, 10))
    out = warp.apply(x)
    grid = warp.grid[0].double().numpy()
    for b in range(x.shape[0]):
        for i in range(12):
            for j in range(10):
                expected = bilinear(x[b].double().numpy(), *grid[i, j])
                np.testing.assert_allclose(out[b, :, i, j].numpy(), expected, atol=1e-5)


def test_warp_noise_mode_adds_a_fresh_offset_of_at_most_one_over_h():
    warp = WarpSpec(strength=0.5, noise_mode=True, cross_ratio=2).build((1, 16, 16))
    assert warp.cover_ratio == 2 and WarpSpec(noise_mode=False).build((1, 16, 16)).cover_ratio == 0
    assert WarpSpec().build((1, 16, 16)).cover_ratio == 2  # WaNet's noise mode: on
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(2, 1, 16, 16).contiguous()
    first = warp.apply_cover(ramp, torch.Generator().manual_seed(0))
    again = warp.apply_cover(ramp, torch.Generator().manual_seed(0))
    assert torch.equal(first, again) and not torch.equal(first[0], first[1])
    # on a horizontal ramp the sampled value moves with x: at most (1/16) * (15/2) / 15 away
    assert (first - warp.apply(ramp)).abs().max() <= 1 / 16 / 2 + 1e-6


@pytest.mark.slow
def test_warp_rejects_a_control_grid_larger_than_the_image_and_bad_strengths():
    with pytest.raises(ConfigError, match=r"trigger.grid: a 9x9 control grid is larger than"):
        WarpSpec(grid=9).build((1, 8, 8))
    for bad in ({"strength": 0}, {"strength": 9}, {"grid": 1}, {"cross_ratio": -1}):
        with pytest.raises(ValidationError):
            WarpSpec(**bad)


# ---- quantize (BppAttack) -------------------------------------------------------------------


def floyd_steinberg_reference(image: np.ndarray, levels: int) -> np.ndarray:
    """The textbook raster-order loop (BppAttack's dithering), errors leaving the image dropped."""
    work = image.astype(np.float64).copy()
    out = np.zeros_like(work)
    _, height, width = work.shape
    for i in range(height):
        for j in range(width):
            old = work[:, i, j].copy()
            new = np.clip(np.round(old * (levels - 1)), 0, levels - 1) / (levels - 1)
            out[:, i, j] = new
            error = old - new
            for di, dj, w in ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16)):
                if 0 <= i + di < height and 0 <= j + dj < width:
                    work[:, i + di, j + dj] += w * error
    return out


def test_quantize_keeps_two_to_the_bits_levels():
    x = images()
    out = QuantizeSpec(bits=3).build((3, 12, 10)).apply(x)
    assert torch.allclose(out, torch.round(x * 7) / 7)
    assert len(torch.unique(torch.round(out * 7))) <= 8
    assert torch.equal(
        QuantizeSpec(bits=1).build((3, 1, 1)).apply(torch.tensor([[[[0.49]]]])),
        torch.zeros(1, 1, 1, 1),
    )


@pytest.mark.parametrize("bits", [1, 2, 5])
def test_dithering_matches_the_raster_order_loop(bits):
    x = images((2, 3, 7, 9), seed=bits)
    out = QuantizeSpec(bits=bits, dither=True).build((3, 7, 9)).apply(x.double())
    for b in range(2):
        expected = floyd_steinberg_reference(x[b].double().numpy(), 2**bits)
        np.testing.assert_allclose(out[b].numpy(), expected, atol=1e-12)


def test_dithering_keeps_the_mean_tone_that_plain_rounding_loses():
    flat = torch.full((1, 1, 32, 32), 0.3)
    plain = QuantizeSpec(bits=1).build((1, 32, 32)).apply(flat)
    dithered = QuantizeSpec(bits=1, dither=True).build((1, 32, 32)).apply(flat)
    assert plain.mean() == 0 and abs(dithered.mean().item() - 0.3) < 0.02


def test_quantize_bits_outside_one_to_eight_are_refused():
    for bits in (0, 9):
        with pytest.raises(ValidationError):
            QuantizeSpec(bits=bits)


# ---- low_frequency (LF) ---------------------------------------------------------------------


def test_low_frequency_pattern_is_the_inverse_dct_of_the_lowest_coefficients():
    channels, height, width, k, eps = 2, 6, 5, 2, 0.08
    trigger = LowFrequencySpec(pattern="random_smooth", eps=eps, frequencies=k, seed=4).build(
        (channels, height, width)
    )
    coefficients = torch.randn(
        channels, k, k, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    ).numpy()

    def a(u, n):
        return math.sqrt((1 if u == 0 else 2) / n)

    expected = np.zeros((channels, height, width))
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                expected[c, i, j] = sum(
                    coefficients[c, u, v]
                    * a(u, height)
                    * a(v, width)
                    * math.cos(math.pi * (2 * i + 1) * u / (2 * height))
                    * math.cos(math.pi * (2 * j + 1) * v / (2 * width))
                    for u in range(k)
                    for v in range(k)
                )
    expected *= eps / np.abs(expected).max()
    np.testing.assert_allclose(trigger.signal[0].numpy(), expected, atol=1e-6)
    grey = torch.full((1, channels, height, width), 0.5)
    assert (trigger.apply(grey) - grey).abs().max().item() == pytest.approx(eps, abs=1e-6)


def test_low_frequency_rejects_more_frequencies_than_pixels_and_bad_budgets():
    with pytest.raises(
        ConfigError,
        match=r"trigger.frequencies: a 9x9 block of frequencies is larger than the 8x8 image",
    ):
        LowFrequencySpec(pattern="random_smooth", frequencies=9).build((1, 8, 8))
    for bad in ({"eps": 0}, {"eps": 1.5}, {"frequencies": 0}):
        with pytest.raises(ValidationError):
            LowFrequencySpec(pattern="random_smooth", **bad)


# ---- reflection (Refool) --------------------------------------------------------------------


def test_focal_reflection_adds_the_gaussian_blurred_reflection_in_linear_light(tmp_path):
    reflection = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    path = tmp_path / "r.png"
    write_image(path, reflection)
    spec = ReflectionSpec(formula="additive", mode="focal", path=path, strength=0.4, sigma=1.0)
    trigger = spec.build((3, 9, 11))
    r = (reflection.astype(np.float64) / 255).transpose(2, 0, 1) ** 2.2
    side = 2 * math.ceil(2 * 1.0) + 1  # the authors' kernel: 5
    taps = np.exp(-((np.arange(side) - side // 2) ** 2) / 2.0)
    taps /= taps.sum()
    padded = np.pad(r, ((0, 0), (2, 2), (2, 2)), mode="reflect")
    blurred = np.zeros_like(r)
    for di in range(side):
        for dj in range(side):
            blurred += taps[di] * taps[dj] * padded[:, di : di + 9, dj : dj + 11]
    x = images((1, 3, 9, 11))
    expected = np.clip(x[0].double().numpy() ** 2.2 + 0.4 * blurred, 0, 1) ** (1 / 2.2)
    np.testing.assert_allclose(trigger.apply(x)[0].numpy(), expected, atol=1e-5)


def test_ghost_reflection_blends_the_reflection_and_its_shifted_copy():
    spec = ReflectionSpec(
        formula="additive",
        mode="ghost",
        strength=0.3,
        offset=(2, 1),
        ghost_alpha=0.25,
        seed=5,
        pool_size=1,
    )
    trigger = spec.build((1, 8, 8))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    r = (procedural_scene(8, 8, 5) * luma).sum(0).double().numpy() ** 2.2
    x = images((1, 1, 8, 8))
    out = trigger.apply(x)
    for i, j in ((0, 0), (1, 5), (4, 4), (7, 7)):
        shifted = r[i - 2, j - 1] if i >= 2 and j >= 1 else 0.0
        layer = 0.3 * (0.25 * r[i, j] + 0.75 * shifted)
        expected = min(max(0.7 * x[0, 0, i, j].item() ** 2.2 + layer, 0), 1) ** (1 / 2.2)
        assert out[0, 0, i, j].item() == pytest.approx(expected, abs=1e-5)


def test_reflection_rejects_blurs_and_shifts_the_image_cannot_hold(tmp_path):
    with pytest.raises(ConfigError, match=r"trigger.sigma: a blur of 5 px needs a 21-pixel"):
        ReflectionSpec(mode="focal", sigma=5).build((1, 8, 8))
    with pytest.raises(ConfigError, match=r"trigger.offset: a shift of \[8, 0\]"):
        ReflectionSpec(mode="ghost", offset=(8, 0)).build((1, 8, 8))
    with pytest.raises(ConfigError, match="cannot read image file"):
        ReflectionSpec(path=tmp_path / "none.png").build((1, 32, 32))
    with pytest.raises(ConfigError, match=r"trigger.offset: shifts drawn up to 8 px"):
        ReflectionSpec(mode="ghost").build((1, 8, 8))
    with pytest.raises(ConfigError, match=r"trigger.sigma: .* \(drawn up to 5 px: set sigma\)"):
        ReflectionSpec(mode="focal").build((1, 8, 8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"trigger.path: the folder .* holds no images"):
        ReflectionSpec(path=tmp_path / "empty").build((1, 32, 32))
    for bad in ({"strength": 0}, {"strength": 2}, {"offset": (-1, 0)}, {"ghost_alpha": 1.5}):
        with pytest.raises(ValidationError):
            ReflectionSpec(**bad)


# ---- adaptive_blend (Qi et al. 2023) --------------------------------------------------------


def test_adaptive_blend_shows_the_whole_pattern_at_test_time_and_some_pieces_in_training():
    spec = AdaptiveBlendSpec(opacity=0.2, train_opacity=0.5, pieces=4, masked_pieces=1)
    trigger = spec.build((1, 8, 8))
    x = torch.zeros(6, 1, 8, 8)
    assert torch.allclose(trigger.apply(x), 0.2 * trigger.pattern.expand(6, 1, 8, 8))
    payload = trigger.apply_payload(x, torch.Generator().manual_seed(0))
    tiles = [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)), (slice(4, 8), slice(0, 4))]
    tiles.append((slice(4, 8), slice(4, 8)))
    shown = set()
    for b in range(6):
        on = [bool(payload[b, 0, r, c].any()) for r, c in tiles]
        assert sum(on) == 3  # 4 pieces, 1 off
        shown.add(tuple(on))
        for (r, c), lit in zip(tiles, on, strict=True):
            expected = 0.5 * trigger.pattern[0, r, c] if lit else torch.zeros(4, 4)
            assert torch.allclose(payload[b, 0, r, c], expected)
    assert len(shown) > 1  # the hidden piece is drawn per sample


def test_adaptive_blend_trains_at_its_authors_opacity_by_default_and_keeps_old_ids():
    """The authors train at 0.15 and test at 0.2 (``catalogue/papers.py``'s preset); null
    is the old default, training at the test opacity, and keeps its run ids."""
    x = torch.zeros(2, 1, 8, 8)
    old = AdaptiveBlendSpec(train_opacity=None)
    for spec, trained in ((AdaptiveBlendSpec(), 0.15), (old, 0.2)):
        trigger = spec.build((1, 8, 8))
        payload = trigger.apply_payload(x, torch.Generator().manual_seed(0))
        lit = payload != 0
        assert torch.allclose(payload[lit], trained * trigger.pattern.expand_as(payload)[lit])
        assert torch.allclose(trigger.apply(x), 0.2 * trigger.pattern.expand(2, 1, 8, 8))
    # ids computed by the code before the change: its default (null) and an explicit 0.15
    old_default = load_config(None, ["trigger={kind: adaptive_blend, train_opacity: null}"])
    assert run_id(old_default) == "4fe5cee41d8e"
    assert run_id(load_config(None, ["trigger={kind: adaptive_blend}"])) == "cbfe55319a54"


def test_adaptive_blend_poisons_with_cover_samples_that_keep_their_labels():
    data = ImageDataset(torch.zeros(100, 1, 8, 8, dtype=torch.uint8), torch.arange(100) % 4)
    task = ClassificationTask(PoisonConfig(rate=0.1, target=0), "abcd")
    trigger = AdaptiveBlendSpec(conservatism=0.5, pieces=4, masked_pieces=2).build((1, 8, 8))
    result = poison_dataset(data, task, trigger, torch.Generator().manual_seed(1))
    assert result.count == 10 and result.cover_indices.numel() == 10
    assert not set(result.cover_indices.tolist()) & set(result.indices.tolist())
    assert torch.equal(
        result.train.targets[result.cover_indices], data.targets[result.cover_indices]
    )
    assert (result.train.targets[result.indices] == 0).all()
    changed = result.train.images.flatten(1).any(dim=1)
    assert torch.equal(torch.nonzero(changed).flatten(), result.changed)
    # conservatism 0.75: three cover samples per poisoned one
    heavy = AdaptiveBlendSpec(conservatism=0.75, pieces=4, masked_pieces=2).build((1, 8, 8))
    assert poison_dataset(data, task, heavy, torch.Generator()).cover_indices.numel() == 30


def test_cover_samples_that_do_not_fit_are_refused():
    data = ImageDataset(torch.zeros(20, 1, 8, 8, dtype=torch.uint8), torch.arange(20) % 2)
    task = ClassificationTask(PoisonConfig(rate=0.4, target=0), "ab")
    trigger = WarpSpec(noise_mode=True, cross_ratio=2.0).build((1, 8, 8))
    with pytest.raises(ConfigError, match="8 poisoned samples need 16 cover samples .* only 12"):
        poison_dataset(data, task, trigger, torch.Generator())


def test_adaptive_blend_validation():
    with pytest.raises(ValidationError, match="square number"):
        AdaptiveBlendSpec(pieces=8)
    with pytest.raises(ValidationError, match="must be below pieces"):
        AdaptiveBlendSpec(pieces=4, masked_pieces=4)
    with pytest.raises(ConfigError, match=r"trigger.pieces: a 9x9 grid of tiles is larger"):
        AdaptiveBlendSpec(pieces=81).build((1, 8, 8))
    with pytest.raises(ValidationError):
        AdaptiveBlendSpec(conservatism=0.95)


# ---- sample_specific ------------------------------------------------------------------------


def test_sample_specific_noise_follows_the_keyed_hash_of_the_image():
    trigger = SampleSpecificSpec(eps=0.1, key=7).build((1, 3, 4))
    x = torch.randint(0, 256, (1, 1, 3, 4), generator=torch.Generator().manual_seed(2))
    w, a, b, c, d = (row.tolist() for row in keyed_integers(7, 12))
    q = x.flatten().tolist()
    h = sum(qi * wi for qi, wi in zip(q, w, strict=True)) % PRIME
    expected = []
    for n in range(12):
        u = (h * a[n] + b[n]) % PRIME
        u = ((u ^ (u >> 13)) * c[n] + d[n]) % PRIME
        expected.append(min(max(q[n] / 255 + 0.1 * (2 * u / PRIME - 1), 0.0), 1.0))
    out = trigger.apply(x.double() / 255)
    np.testing.assert_allclose(out.flatten().numpy(), expected, atol=1e-12)


def test_sample_specific_noise_is_the_same_in_any_batch_and_differs_between_images():
    trigger = SampleSpecificSpec(eps=0.05).build((3, 8, 8))
    x = torch.randint(0, 256, (5, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    alone = apply_to_uint8(trigger, x[2:3])
    together = apply_to_uint8(trigger, x.flip(0))
    assert torch.equal(alone[0], together[2])
    noise = together.float() - x.flip(0).float()
    assert noise.abs().max() <= 0.05 * 255 + 0.5
    assert not torch.equal(noise[0], noise[1])
    other_key = apply_to_uint8(SampleSpecificSpec(eps=0.05, key=1).build((3, 8, 8)), x[2:3])
    assert not torch.equal(alone, other_key)


# ---- every new kind -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", NEW_KINDS, ids=lambda r: "-".join(map(str, r.values())))
def test_every_new_kind_is_pure_seeded_and_keeps_shape_dtype_and_range(raw):
    trigger = ADAPTER.validate_python(raw).build((3, 12, 12))
    x = images((4, 3, 12, 12))
    before = x.clone()
    out = trigger.apply(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, before) and out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    assert torch.equal(out, trigger.apply(x, torch.Generator().manual_seed(0)))
    assert trigger.apply(x.double(), torch.Generator().manual_seed(0)).dtype == torch.float64
    rebuilt = ADAPTER.validate_python(raw).build((3, 12, 12))
    assert torch.equal(out, rebuilt.apply(x, torch.Generator().manual_seed(0)))


TINY_GAZE = ["data.name=synthetic_gaze", "data.resize=16", "data.options={count: 80, subjects: 4}"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "raw",
    [
        "{kind: warp, strength: 1.0, grid: 4, noise_mode: true}",
        "{kind: quantize, bits: 2, dither: true}",
        "{kind: low_frequency, pattern: random_smooth, eps: 0.1}",
        "{kind: reflection, mode: ghost}",
        "{kind: adaptive_blend, pieces: 4, masked_pieces: 2}",
        "{kind: sample_specific, eps: 0.1}",
    ],
)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_new_kind_runs_a_whole_experiment(tmp_path, raw, task):
    data = [*TINY_GAZE, "poison.target=[0.0, 0.3]"] if task == "regression" else ["data.resize=16"]
    cfg = load_config(
        None,
        [*data, f"trigger={raw}", "train.epochs=1", "output.save_model=false"],
    )
    result = run_experiment(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == task and summary["status"] == "complete"
    # Refool's paper is clean-label, at the clean-label default rate; regression is all-to-one
    clean = task == "classification" and "reflection" in raw
    assert summary["poison"]["label_mode"] == ("clean_label" if clean else "all_to_one")
    assert summary["poison"]["rate"] == (0.05 if clean else 0.1)
    assert summary["stealth"]["linf_mean"] > 0
    per_poisoned = 2 if "noise_mode" in raw else 1 if "adaptive" in raw else 0
    assert summary["poison"]["cover_count"] == round(summary["poison"]["count"] * per_poisoned)
    assert (tmp_path / "run" / "cover_indices.csv").is_file() == (per_poisoned > 0)
    assert result.summary["final"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["trigger.kind=quantize", "trigger.bits=9"], "trigger.bits"),
        (["trigger.kind=warp", "trigger.strength=0"], "trigger.strength"),
        (["trigger.kind=warp", "trigger.grid=20"], "trigger.grid: a 20x20 control grid"),
        (["trigger.kind=low_frequency", "trigger.eps=2"], "trigger.eps"),
        (["trigger.kind=adaptive_blend", "trigger.pieces=10"], "square number"),
        (["trigger.kind=reflection", "trigger.sigma=9"], "trigger.sigma: a blur of 9 px"),
    ],
)
def test_bad_parameters_exit_2_with_one_message_and_no_run(tmp_path, settings, message):
    from typer.testing import CliRunner

    from triggerlab.cli import app

    args = ["run", "-q", "--out", str(tmp_path)]
    for item in settings:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())
