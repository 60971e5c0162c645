"""Frame, lines, blend, signal, random, compose and the built-in flower: hand-computed pixels."""

import math
import warnings

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from support.formats import write_image

from triggerlab.attack.poison import poison_dataset
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.catalogue.triggers import (
    BlendSpec,
    ComposeSpec,
    FrameSpec,
    ImageSpec,
    LinesSpec,
    PatchSpec,
    RandomPatchSpec,
    SignalSpec,
    TriggerSpec,
)
from triggerlab.config import PoisonConfig, load_config
from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError
from triggerlab.triggers.flower import flower_rgba
from triggerlab.triggers.overlay import line_starts

# ---- frame -----------------------------------------------------------------------------------


def test_frame_colours_exactly_the_border():
    out = FrameSpec(thickness=2, color="white").build((1, 10, 10)).apply(torch.zeros(1, 1, 10, 10))
    expected = torch.ones(10, 10)
    expected[2:8, 2:8] = 0
    assert torch.equal(out[0, 0], expected)


def test_frame_fraction_opacity_and_rgb():
    # 0.05 of 64 = 3.2 -> 3 pixels; red at half opacity over 0.2 grey
    spec = FrameSpec(thickness=0.05, color="red", opacity=0.5)
    out = spec.build((3, 64, 64)).apply(torch.full((1, 3, 64, 64), 0.2))
    assert torch.allclose(out[0, :, 2, 30], torch.tensor([0.6, 0.1, 0.1]))
    assert torch.allclose(out[0, :, 3, 30], torch.full((3,), 0.2))
    assert torch.allclose(out[0, :, 63, 63], torch.tensor([0.6, 0.1, 0.1]))


def test_frame_on_grey_uses_luminance():
    out = FrameSpec(thickness=1, color="blue").build((1, 5, 5)).apply(torch.zeros(1, 1, 5, 5))
    assert out[0, 0, 0, 0].item() == pytest.approx(0.114)


def test_frame_too_thick():
    with pytest.raises(ConfigError, match=r"trigger.thickness: a 5-pixel frame .*expected 1 to 4"):
        FrameSpec(thickness=5).build((1, 10, 10))
    with pytest.raises(ValidationError):
        FrameSpec(thickness=0)


# ---- lines -----------------------------------------------------------------------------------


def test_line_positions_are_centred_in_equal_bands():
    # centres at 2.5, 7.5, 12.5, 17.5; thickness 2 -> first pixels floor(c - 1 + 0.5)
    assert line_starts(4, 2, 20) == [2, 7, 12, 17]
    out = LinesSpec(count=4, thickness=2).build((1, 6, 20)).apply(torch.zeros(1, 1, 6, 20))
    columns = torch.nonzero(out[0, 0, 0]).flatten().tolist()
    assert columns == [2, 3, 7, 8, 12, 13, 17, 18]
    assert torch.equal(out[0, 0], out[0, 0, :1].expand(6, 20))


def test_horizontal_lines_are_rows_with_opacity():
    spec = LinesSpec(count=2, orientation="horizontal", color="green", opacity=0.25)
    out = spec.build((3, 8, 5)).apply(torch.zeros(1, 3, 8, 5))
    rows = torch.nonzero(out[0, 1, :, 0]).flatten().tolist()
    assert rows == [2, 6]  # centres 2 and 6, thickness 1: floor(2 - 0.5 + 0.5) = 2
    assert torch.allclose(out[0, :, 2, 3], torch.tensor([0.0, 0.25, 0.0]))


def test_lines_that_do_not_fit():
    with pytest.raises(
        ConfigError, match=r"trigger.count: 40 lines 1 pixel\(s\) thick do not fit across 32"
    ):
        LinesSpec(count=40).build((1, 32, 32))
    with pytest.raises(ConfigError, match="trigger.count"):
        LinesSpec(count=8, thickness=4).build((1, 32, 32))


# ---- blend -----------------------------------------------------------------------------------


def test_noise_blend_is_seeded_and_blends_with_alpha():
    spec = BlendSpec(opacity=0.2, seed=5)
    x = torch.full((2, 3, 8, 8), 0.5)
    out = spec.build((3, 8, 8)).apply(x)
    noise = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(out[1], 0.8 * 0.5 + 0.2 * noise)
    assert torch.equal(out, BlendSpec(opacity=0.2, seed=5).build((3, 8, 8)).apply(x))
    assert not torch.equal(out, BlendSpec(opacity=0.2, seed=6).build((3, 8, 8)).apply(x))


def test_image_blend_is_resized_to_the_input(tmp_path):
    write_image(tmp_path / "p.png", np.full((4, 4, 3), 255, np.uint8))
    out = (
        BlendSpec(pattern="image", path=tmp_path / "p.png", opacity=0.5)
        .build((1, 6, 6))
        .apply(torch.zeros(1, 1, 6, 6))
    )
    assert torch.allclose(out, torch.full((1, 1, 6, 6), 0.5))
    with pytest.raises(ValidationError, match="needs a path"):
        BlendSpec(pattern="image")
    with pytest.raises(ConfigError, match="trigger.path: cannot read"):
        BlendSpec(pattern="image", path=tmp_path / "none.png").build((1, 6, 6))


# ---- signal ----------------------------------------------------------------------------------


def test_ramp_triangle_and_sine_columns():
    x = torch.zeros(1, 1, 2, 8)
    ramp = SignalSpec(shape="ramp", delta=0.4).build((1, 2, 8)).apply(x)[0, 0, 0]
    assert torch.allclose(ramp, torch.arange(1, 9) * 0.4 / 8)
    tri = SignalSpec(shape="triangle", delta=0.4).build((1, 2, 8)).apply(x)[0, 0, 1]
    assert torch.allclose(tri, torch.tensor([1, 2, 3, 4, 3, 2, 1, 0]) * 0.4 / 8)
    sine = (
        SignalSpec(shape="sine", delta=0.3, frequency=2)
        .build((1, 2, 8))
        .apply(torch.full((1, 1, 2, 8), 0.5))
    )
    j = torch.arange(1, 9, dtype=torch.float64)
    assert torch.allclose(
        sine[0, 0, 0].double(), 0.5 + 0.3 * torch.sin(2 * math.pi * j * 2 / 8), atol=1e-6
    )


def test_signal_is_added_to_every_channel_and_clipped():
    x = torch.tensor([0.95, 0.5, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    out = SignalSpec(shape="ramp", delta=0.2).build((3, 4, 4)).apply(x)
    assert out[0, 0, 0, 3].item() == 1.0  # 0.95 + 0.2 clipped
    assert out[0, 1, 0, 3].item() == pytest.approx(0.7)
    sine = SignalSpec(shape="sine", delta=0.5, frequency=1).build((3, 4, 4)).apply(x)
    assert sine[0, 2, 0, 2].item() == 0.0  # 0 + 0.5 sin(3 pi / 2) clipped at 0


def test_vertical_signal_varies_with_the_row():
    out = (
        SignalSpec(shape="ramp", delta=0.4, orientation="vertical")
        .build((1, 4, 3))
        .apply(torch.zeros(1, 1, 4, 3))
    )
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert torch.equal(out[0, 0, :, 0], out[0, 0, :, 2])


def test_a_sine_above_the_nyquist_limit_warns_with_the_frequency_it_shows():
    # reference 003's f = 100 at 64 columns draws the pixels of a sine of 28 periods
    with pytest.warns(UserWarning, match="exceed the Nyquist limit of 32; .* sine of 28 periods"):
        fast = SignalSpec(shape="sine", delta=0.1, frequency=100).build((3, 64, 64))
    slow = SignalSpec(shape="sine", delta=0.1, frequency=28).build((3, 64, 64))
    assert torch.allclose(fast.signal, -slow.signal, atol=1e-6)  # sin(-x) = -sin(x)
    with pytest.warns(UserWarning, match="trigger.frequency: 32 periods .* vanishes"):
        silent = SignalSpec(shape="sine", delta=0.1, frequency=32).build((3, 64, 64))
    assert silent.signal.abs().max() < 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SignalSpec(shape="sine", delta=0.1, frequency=6).build((3, 64, 64))
        SignalSpec(shape="ramp", delta=0.1, frequency=100).build((3, 64, 64))  # sine only


@pytest.mark.parametrize(
    "changes", [{"delta": 1.5}, {"delta": -0.1}, {"frequency": 0}, {"shape": "square"}]
)
def test_signal_validation(changes):
    with pytest.raises(ValidationError):
        SignalSpec(**changes)


# ---- random ----------------------------------------------------------------------------------


def random_spec(**changes):
    return RandomPatchSpec(**{"colors": ["red", "green", "blue"], "sizes": [2, 3, 4], **changes})


def test_random_patch_same_seed_same_output_samples_differ():
    trigger = random_spec().build((3, 16, 16))
    x = torch.zeros(64, 3, 16, 16)
    a = trigger.apply(x, torch.Generator().manual_seed(3))
    b = trigger.apply(x, torch.Generator().manual_seed(3))
    c = trigger.apply(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_random_patch_draws_from_the_choices():
    trigger = random_spec().build((3, 16, 16))
    out = trigger.apply(torch.zeros(200, 3, 16, 16), torch.Generator().manual_seed(0))
    changed = out.abs().sum(dim=1) > 0  # [B, H, W]
    areas = changed.flatten(1).sum(dim=1)
    assert set(areas.tolist()) == {
        4,
        9,
        16,
    }  # every size drawn, each a full square inside the image
    colours = {tuple(out[b, :, *torch.nonzero(changed[b])[0]].tolist()) for b in range(200)}
    assert colours == {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)}
    rows = torch.nonzero(changed.any(dim=2))[:, 1]
    assert rows.min() == 0 and rows.max() == 15  # "anywhere" reaches both borders


def test_random_patch_named_positions_and_size_range_on_grey():
    spec = RandomPatchSpec(
        colors=["white"], size_range=[2, 3], positions=["top_left", "bottom_right"]
    )
    out = spec.build((1, 8, 8)).apply(torch.zeros(100, 1, 8, 8), torch.Generator().manual_seed(1))
    for image in out[:, 0]:
        rows, cols = torch.nonzero(image, as_tuple=True)
        side = int(rows.max() - rows.min() + 1)
        assert side in (2, 3) and image.sum().item() == side * side
        assert (rows.min(), cols.min()) in ((0, 0), (8 - side, 8 - side))


def test_random_patch_validation():
    with pytest.raises(ValidationError, match="either sizes or size_range"):
        RandomPatchSpec(sizes=[2], size_range=[2, 3])
    with pytest.raises(ConfigError, match="trigger.sizes"):
        RandomPatchSpec(sizes=[20]).build((1, 16, 16))
    with pytest.raises(ValidationError):
        RandomPatchSpec(colors=["pink"])


def test_training_and_test_triggers_share_one_spec():
    """Poisoned training images carry the same kind of random patches as the triggered test set."""
    spec = RandomPatchSpec(colors=["white"], sizes=[2])
    trigger = spec.build((1, 8, 8))
    data = ImageDataset(
        torch.zeros(40, 1, 8, 8, dtype=torch.uint8), torch.arange(4).repeat(10), tuple("abcd")
    )
    task = ClassificationTask(PoisonConfig(rate=0.5), data.class_names)
    poisoned = poison_dataset(data, task, trigger, torch.Generator().manual_seed(0))
    marked = poisoned.train.images[poisoned.indices]
    assert ((marked == 255).flatten(1).sum(dim=1) == 4).all()
    positions = {tuple(torch.nonzero(m[0])[0].tolist()) for m in marked}
    assert len(positions) > 1  # drawn per sample


# ---- compose, image, flower ----------------------------------------------------------------


def test_compose_applies_in_order():
    first = ComposeSpec(
        triggers=[FrameSpec(thickness=1, color="black"), PatchSpec(size=2, color="white")]
    )
    second = ComposeSpec(
        triggers=[PatchSpec(size=2, color="white"), FrameSpec(thickness=1, color="black")]
    )
    x = torch.full((1, 1, 6, 6), 0.5)
    assert first.build((1, 6, 6)).apply(x)[0, 0, 5, 5].item() == 1.0
    assert second.build((1, 6, 6)).apply(x)[0, 0, 5, 5].item() == 0.0
    assert second.build((1, 6, 6)).apply(x)[0, 0, 4, 4].item() == 1.0


def test_compose_errors_name_the_nested_trigger():
    with pytest.raises(ConfigError, match=r"trigger.triggers\[1\].size"):
        ComposeSpec(triggers=[FrameSpec(), PatchSpec(size=9)]).build((1, 8, 8))
    with pytest.raises(ConfigError, match=r"trigger.triggers\[0\].thick: unknown key"):
        load_config(None, ["trigger={kind: compose, triggers: [{kind: frame, thick: 2}]}"])


def test_flower_is_drawn_procedurally_with_alpha():
    rgba = flower_rgba(40)
    assert rgba.shape == (4, 40, 40)
    assert rgba[3, 20, 20].item() == 1.0 and rgba[3, 0, 0].item() == 0.0
    assert 0.0 < rgba[3].mean().item() < 1.0
    assert rgba[0, 20, 20] > 0.9 and rgba[2, 20, 20] < 0.3  # yellow centre
    assert torch.equal(flower_rgba(40), rgba)


def test_image_spec_defaults_to_the_flower():
    stamp = ImageSpec(size=12, position="center").build((3, 20, 20))
    out = stamp.apply(torch.zeros(1, 3, 20, 20))
    assert torch.allclose(out[0, :, 4:16, 4:16], flower_rgba(12)[:3] * flower_rgba(12)[3:])
    with pytest.raises(ValidationError, match="either path or builtin"):
        ImageSpec(path="x.png", builtin="flower")


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "frame", "thickness": 2},
        {"kind": "lines", "count": 3},
        {"kind": "blend"},
        {"kind": "signal", "shape": "triangle"},
        {"kind": "random"},
        {"kind": "image"},
        {"kind": "compose", "triggers": [{"kind": "frame"}, {"kind": "signal", "frequency": 2}]},
    ],
)
def test_every_kind_is_pure_and_keeps_shape_dtype_and_range(raw):
    trigger = TypeAdapter(TriggerSpec).validate_python(raw).build((3, 12, 12))
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    out = trigger.apply(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    half = trigger.apply(x.double(), torch.Generator().manual_seed(0))
    assert half.dtype == torch.float64
