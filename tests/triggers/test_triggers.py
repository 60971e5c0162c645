"""Patch and image-patch triggers: pixel values computed by hand."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from support.formats import write_image

from triggerlab.catalogue.geometry import resolve_position, resolve_size
from triggerlab.catalogue.triggers import ImageSpec, LinesSpec, PatchSpec
from triggerlab.errors import ConfigError
from triggerlab.triggers import apply_to_uint8
from triggerlab.triggers.overlay import bands


def test_white_patch_bottom_right_replaces_exactly_the_square():
    x = torch.full((2, 1, 8, 8), 0.25)
    out = PatchSpec(size=3, color="white").build((1, 8, 8)).apply(x)
    assert torch.equal(out[:, :, 5:, 5:], torch.ones(2, 1, 3, 3))
    out[:, :, 5:, 5:] = 0.25
    assert torch.equal(out, x)


def test_apply_does_not_modify_its_input():
    x = torch.rand(3, 3, 10, 10)
    before = x.clone()
    PatchSpec(size=4).build((3, 10, 10)).apply(x)
    assert torch.equal(x, before)


def test_opacity_blends_as_one_minus_a_x_plus_a_c():
    x = torch.full((1, 3, 6, 6), 0.2)
    out = PatchSpec(size=2, color="red", opacity=0.5, position="top_left").build((3, 6, 6)).apply(x)
    expected = torch.tensor([0.5 * 0.2 + 0.5 * 1.0, 0.5 * 0.2, 0.5 * 0.2])
    assert torch.allclose(out[0, :, 0, 0], expected)
    assert torch.allclose(out[0, :, 1, 1], expected)
    assert torch.equal(out[0, :, 2, 2], x[0, :, 2, 2])


def test_colour_on_single_channel_is_its_bt601_luminance():
    out = (
        PatchSpec(size=1, color="red", position="top_left")
        .build((1, 4, 4))
        .apply(torch.zeros(1, 1, 4, 4))
    )
    assert out[0, 0, 0, 0].item() == pytest.approx(0.299)
    green = PatchSpec(size=1, color="green001", position="top_left").build((1, 4, 4))
    luma = (0.299 * 102 + 0.587 * 179 + 0.114 * 92) / 255
    assert green.apply(torch.zeros(1, 1, 4, 4))[0, 0, 0, 0].item() == pytest.approx(luma, abs=1e-6)


def test_grey_level_and_rgb_values():
    grey = (
        PatchSpec(size=1, color=128, position="top_left")
        .build((3, 4, 4))
        .apply(torch.zeros(1, 3, 4, 4))
    )
    assert torch.allclose(grey[0, :, 0, 0], torch.full((3,), 128 / 255))
    rgb = (
        PatchSpec(size=1, color=[10, 20, 30], position="top_left")
        .build((3, 4, 4))
        .apply(torch.zeros(1, 3, 4, 4))
    )
    assert torch.allclose(rgb[0, :, 0, 0], torch.tensor([10, 20, 30]) / 255)


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        ("top_left", (1, 1)),
        ("top_right", (1, 16)),
        ("bottom_left", (16, 1)),
        ("bottom_right", (16, 16)),
        ("br", (16, 16)),
        ("center", (8, 8)),
        # midway: floor((center + corner) / 2) on each axis
        ("top_left_center", (4, 4)),
        ("top_right_center", (4, 12)),
        ("bottom_left_center", (12, 4)),
        ("bottom_right_center", (12, 12)),
        ((5, 2), (2, 5)),  # [x, y] -> row y, column x
    ],
)
def test_named_positions_on_a_20px_image_with_margin_1(position, expected):
    spec = PatchSpec(size=3, position=position, margin=1)
    stamp = spec.build((1, 20, 20))
    assert (stamp.top, stamp.left) == expected


def test_fractional_size_rounds_half_up_on_the_shorter_side():
    # reference 001: 4 / 6 / 8 % of a 64-pixel side
    assert [resolve_size(f, 64, 64) for f in (0.04, 0.06, 0.08)] == [3, 4, 5]
    assert resolve_size(0.25, 10, 30) == 3  # 2.5 rounds up, on the 10-pixel side
    assert resolve_size(0.01, 16, 16) == 1  # never below one pixel
    assert resolve_size(4, 64, 64) == 4


def test_rectangular_image_positions():
    assert resolve_position("bottom_right", (2, 2), (6, 10)) == (4, 8)
    assert resolve_position("center", (2, 2), (6, 10)) == (2, 4)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"size": 0}, "size"),
        ({"size": 1.5}, "size"),
        ({"opacity": 0}, "opacity"),
        ({"opacity": 1.01}, "opacity"),
        ({"color": "mauve"}, "color"),
        ({"color": [1, 2]}, "color"),
        ({"color": 300}, "color"),
        ({"position": "upper"}, "position"),
        ({"position": [-1, 0]}, "position"),
        ({"margin": -1}, "margin"),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(changes, field):
    with pytest.raises(ValidationError) as info:
        PatchSpec(**changes)
    assert info.value.errors()[0]["loc"][0] == field


def test_trigger_larger_than_the_image_is_rejected():
    with pytest.raises(ConfigError, match="trigger.size"):
        PatchSpec(size=17).build((1, 16, 16))
    with pytest.raises(ConfigError, match="trigger.position"):
        PatchSpec(size=4, position=(14, 0)).build((1, 16, 16))
    with pytest.raises(ConfigError, match="trigger.position"):
        PatchSpec(size=10, margin=7).build((1, 16, 16))


def test_image_patch_respects_alpha(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    write_image(tmp_path / "t.png", rgba)
    stamp = ImageSpec(path=tmp_path / "t.png", size=4, position="top_left").build((3, 8, 8))
    out = stamp.apply(torch.full((1, 3, 8, 8), 0.5))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(out[0, :, 3, 3], torch.tensor([0.5, 0.5, 0.5]))
    assert torch.equal(out[0, :, 4:, :], torch.full((3, 4, 8), 0.5))


def test_image_patch_on_grey_images_uses_luminance_and_resizes(tmp_path):
    write_image(tmp_path / "t.png", np.full((10, 10, 3), (0, 255, 0), dtype=np.uint8))
    stamp = ImageSpec(path=tmp_path / "t.png", size=2, opacity=0.5).build((1, 6, 6))
    assert stamp.pattern.shape == (1, 2, 2)
    out = stamp.apply(torch.zeros(1, 1, 6, 6))
    assert out[0, 0, 5, 5].item() == pytest.approx(0.5 * 0.587, abs=1e-6)


def test_unreadable_image_file_is_a_config_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match="trigger.path"):
        ImageSpec(path=tmp_path / "broken.png").build((3, 8, 8))
    with pytest.raises(ConfigError, match="trigger.path"):
        ImageSpec(path=tmp_path / "missing.png").build((3, 8, 8))


def test_apply_to_uint8_rounds_to_the_nearest_level():
    images = torch.full((3, 1, 4, 4), 100, dtype=torch.uint8)
    stamp = PatchSpec(size=2, color=255, opacity=0.5).build((1, 4, 4))
    out = apply_to_uint8(stamp, images, batch_size=2)
    assert out.dtype == torch.uint8
    assert out[0, 0, 3, 3].item() == round((100 + 255) / 2)  # 177.5 -> 178
    assert out[2, 0, 0, 0].item() == 100


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 12),
    channels=st.sampled_from([1, 3]),
    opacity=st.floats(0.05, 1.0),
    grey=st.integers(0, 255),
    position=st.sampled_from(
        ["top_left", "top_right", "bottom_left", "bottom_right", "center", "top_left_center"]
    ),
)
def test_patch_changes_only_its_square_and_blends_exactly(size, channels, opacity, grey, position):
    x = torch.rand(2, channels, 12, 12, generator=torch.Generator().manual_seed(size))
    stamp = PatchSpec(size=size, color=grey, opacity=opacity, position=position).build(
        (channels, 12, 12)
    )
    out = stamp.apply(x)
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[stamp.top : stamp.top + size, stamp.left : stamp.left + size] = True
    assert torch.equal(out[..., ~inside], x[..., ~inside])
    expected = (1 - opacity) * x[..., inside] + opacity * (grey / 255)
    assert torch.allclose(out[..., inside], expected, atol=1e-6)
    assert inside.sum().item() == size * size


def test_every_kind_has_examples_that_build_pure_batched_triggers():
    """What a new kind gets checked for by declaring its examples (no other test edits)."""
    from triggerlab.catalogue.triggers import TRIGGER_KINDS, trigger_examples

    examples = trigger_examples()
    assert {spec.kind for spec in examples.values()} == set(TRIGGER_KINDS)
    for name, spec in examples.items():
        for shape in ((1, 24, 24), (3, 32, 32)):
            x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
            before = x.clone()
            trigger = spec.build(shape)
            first = trigger.apply(x, torch.Generator().manual_seed(2))
            again = trigger.apply(x, torch.Generator().manual_seed(2))
            assert torch.equal(x, before), name  # the input is never changed
            assert first.shape == x.shape and first.dtype == x.dtype, name
            assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0, name
            assert torch.equal(first, again), name  # a seed fixes a randomised trigger
            assert not torch.equal(first, x), name  # it does change the image


@settings(max_examples=150, deadline=None)
@given(count=st.integers(1, 60), thickness=st.integers(1, 4), side=st.integers(8, 96))
def test_accepted_line_counts_are_what_an_observer_counts(count, thickness, side):
    try:
        overlay = LinesSpec(count=count, thickness=thickness).build((1, side, side))
    except Exception as exc:  # refused: too many lines for the side
        assert "lines" in str(exc)
        return
    assert bands(overlay.mask[0, 0]) == count
