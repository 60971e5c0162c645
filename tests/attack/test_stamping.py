"""Where the trigger is stamped (``trigger.stage``): reference 001's code stamps the stored
image, ``max(1, int(f x side))`` native pixels, and upsamples it afterwards
(docs/references.md, item 1)."""

import warnings

import pytest
import torch

from triggerlab.attack.poison import poison_dataset
from triggerlab.attack.stamping import NativeStamping, stamp_all, stamping_for
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.config import load_config
from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.prepare import split_source
from triggerlab.grid.plan import plan_grid, preflight, run_id
from triggerlab.grid.spec import GridSpec


def cifar_like(count=20, side=32, channels=3):
    """Black images at CIFAR-10's stored size, two classes, an official split."""
    train = ImageDataset(
        torch.zeros(count, channels, side, side, dtype=torch.uint8),
        torch.arange(count) % 2,
        ("a", "b"),
    )
    test = ImageDataset(
        torch.zeros(4, channels, side, side, dtype=torch.uint8), torch.arange(4) % 2, ("a", "b")
    )
    return SourceData(train=train, test=test)


def stamped(size, stage, position="top_left", resize=128, source=None, channels=None):
    source = source or cifar_like()
    settings = [
        f"trigger.size={size}",
        f"trigger.position={position}",
        f"trigger.stage={stage}",
        f"data.resize={resize}",
    ]
    if channels is not None:
        settings.append(f"data.channels={channels}")
    cfg = load_config(None, settings)
    data = split_source(source, cfg.data, 0)
    stamping = stamping_for(cfg, source, data.shape)
    trigger = stamping.build(cfg)
    return stamp_all(stamping, trigger, data.test, torch.Generator().manual_seed(0)), stamping


def footprint(images):
    """(pixels at the trigger's full colour, pixels it changed) on the first black image."""
    first = images[0, 0]
    return int((first == 255).sum()), int((first > 0).sum())


@pytest.mark.parametrize(
    ("fraction", "native_side", "full", "changed"),
    [
        # one native pixel upsampled 4x in a corner: a 2x2 full-colour core, 32 pixels around
        # it partly coloured (docs/references.md's table), 6x6 changed in all
        (0.04, 1, 4, 36),
        (0.06, 1, 4, 36),  # 6 % of 32 is 1.92: truncated to 1, the same trigger as 4 %
        (0.08, 2, 36, 100),  # two native pixels: 6x6 full, 64 partly coloured, 10x10 changed
    ],
)
def test_a_native_corner_trigger_is_truncated_then_upsampled(fraction, native_side, full, changed):
    images, stamping = stamped(fraction, "native")
    assert stamping.shape == (3, 32, 32)
    assert images.shape[-2:] == (128, 128)
    spec = load_config(None, [f"trigger.size={fraction}"]).trigger
    assert spec.in_native_pixels(stamping.shape).size == native_side
    assert footprint(images) == (full, changed)
    rows, cols = torch.nonzero(images[0, 0]).unbind(1)
    assert int(rows.max()) + 1 == int(cols.max()) + 1 == 4 * native_side + 2  # from the corner


def test_four_and_six_percent_are_one_trigger_natively_and_two_at_the_model_input():
    four, _ = stamped(0.04, "native")
    six, _ = stamped(0.06, "native")
    assert torch.equal(four, six)
    sides = []
    for fraction in (0.04, 0.06, 0.08):
        images, _ = stamped(fraction, "model_input")
        full, changed = footprint(images)
        assert full == changed  # a crisp square
        sides.append(round(full**0.5))
    assert sides == [5, 8, 10]  # half-up rounding at 128 px


def test_a_native_middle_pixel_never_reaches_the_full_colour():
    """A 1-px centre trigger on 32 px sits at index 15 and becomes a blob with no full pixel."""
    images, _ = stamped(0.04, "native", position="center")
    full, changed = footprint(images)
    assert full == 0 and changed == 64
    rows = torch.nonzero(images[0, 0]).unbind(1)[0]
    assert (int(rows.min()), int(rows.max())) == (15 * 4 - 2, 15 * 4 + 5)


def test_native_stamping_on_grey_images_happens_before_the_channel_repeat():
    source = cifar_like(side=28, channels=1)
    images, stamping = stamped(0.08, "native", resize=64, source=source, channels=3)
    assert stamping.shape == (1, 28, 28)
    assert images.shape[1] == 3 and torch.equal(images[:, 0], images[:, 2])
    assert footprint(images)[1] > 0


def test_poisoned_training_images_are_the_resized_native_stamps_and_the_rest_untouched():
    source = cifar_like()
    source.train.images[:, :, 10:20, 10:20] = 100  # something the trigger does not cover
    cfg = load_config(
        None, ["trigger.size=0.08", "trigger.stage=native", "data.resize=64", "poison.rate=0.25"]
    )
    data = split_source(source, cfg.data, 0)
    stamping = stamping_for(cfg, source, data.shape)
    assert isinstance(stamping, NativeStamping)
    task = ClassificationTask(cfg.poison, data.class_names)
    result = poison_dataset(
        data.train, task, stamping.build(cfg), torch.Generator().manual_seed(0), stamping=stamping
    )
    poisoned = result.train.images
    untouched = torch.ones(len(data.train), dtype=torch.bool)
    untouched[result.indices] = False
    assert torch.equal(poisoned[untouched], data.train.images[untouched])
    native = source.train.images[result.source_indices].clone()
    native[:, :, -2:, -2:] = 255  # 8 % of 32 px, bottom right
    expected = torch.nn.functional.interpolate(
        native.float(), size=(64, 64), mode="bilinear", align_corners=False
    )
    assert torch.equal(poisoned[result.indices], expected.round().clamp(0, 255).byte())


def test_the_default_stage_leaves_run_ids_unchanged():
    plain = load_config(None, ["trigger.size=0.04"])
    explicit = load_config(None, ["trigger.size=0.04", "trigger.stage=model_input"])
    native = load_config(None, ["trigger.size=0.04", "trigger.stage=native"])
    assert run_id(plain) == run_id(explicit) != run_id(native)
    assert "stage" not in str(plain.model_dump(exclude_defaults=True))


def test_a_composed_trigger_takes_its_stage_as_a_whole():
    from triggerlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"triggers\[1\].stage: a composed trigger"):
        load_config(
            None,
            [
                "trigger.kind=compose",
                "trigger.triggers=[{kind: frame}, {kind: patch, stage: native}]",
            ],
        )


@pytest.mark.slow  # plans and checks a grid of runs
def test_the_preflight_names_native_twins():
    """Digits are stored at 8 px: 4 % and 6 % of them are one pixel, the same trigger."""
    spec = GridSpec(
        base={"data": {"resize": 32}, "trigger": {"stage": "native"}},
        grid={"trigger.size": [0.04, 0.06]},
    )
    with pytest.warns(UserWarning, match="draw identical triggers"):
        preflight(plan_grid(spec))
    model_input = GridSpec(base={"data": {"resize": 32}}, grid={"trigger.size": [0.04, 0.06]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preflight(plan_grid(model_input))
