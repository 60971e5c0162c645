"""Reference 001's TinyImageNet views: batched crops that match torchvision's transforms, and
the test-time crop that removes small corner triggers."""

import pytest
import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from triggerlab.config import load_config
from triggerlab.models import build_configured
from triggerlab.models.crops import Crops, random_boxes, resize_center_crop, resized_crops
from triggerlab.models.transfer import TransferModel


def stamped(side: int, row: int, col: int, size: int = 64) -> torch.Tensor:
    """A black 64-px image with a white ``side`` x ``side`` square at (row, col)."""
    x = torch.zeros(1, 3, size, size)
    x[:, :, row : row + side, col : col + side] = 1.0
    return x


def test_the_test_crop_is_torchvisions_resize_256_and_center_crop_224():
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours = resize_center_crop(x, 256, 224)
    theirs = TF.center_crop(TF.resize(x, [256], InterpolationMode.BILINEAR, antialias=True), [224])
    assert ours.shape == (3, 3, 224, 224)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("corner", ["top_left", "top_right", "bottom_left", "bottom_right"])
def test_the_test_crop_removes_a_two_pixel_corner_trigger(corner):
    row = 0 if corner.startswith("top") else 62
    col = 0 if corner.endswith("left") else 62
    view = resize_center_crop(stamped(2, row, col), 256, 224)
    assert float(view.max()) == 0.0  # not one pixel of the trigger reaches the network
    assert float(resize_center_crop(stamped(3, 0, 0), 256, 224).max()) == 0.0  # nor 3 px
    larger = resize_center_crop(stamped(5, 0, 0), 256, 224)
    assert int((larger == 1.0).sum()) == 3 * 2 * 2  # 5 px leaves a 2x2 patch (3 channels)
    middle = resize_center_crop(stamped(2, 31, 31), 256, 224)
    assert int((middle == 1.0).sum()) > 0  # a middle trigger survives


def test_a_random_resized_crop_is_torchvisions_resized_crop_of_its_box():
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[0, 0, 64, 64], [5, 9, 30, 41], [40, 0, 24, 17], [0, 50, 14, 14]])
    ours = resized_crops(x, boxes, 224)
    for image, crop, (top, left, h, w) in zip(x, ours, boxes.tolist(), strict=True):
        theirs = TF.resized_crop(image, top, left, h, w, [224, 224], antialias=False)
        torch.testing.assert_close(crop, theirs)  # the box's edges clamp, as a cut-out image


def test_random_boxes_follow_random_resized_crops_rules_and_the_seed():
    boxes = random_boxes(4000, 64, 64, torch.Generator().manual_seed(2))
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 64) & (left + w <= 64)).all())
    area = (h * w).float() / 64**2
    assert float(area.min()) > 0.06 and float(area.max()) <= 1.0
    ratio = w.float() / h.float()
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.6
    assert 0.45 < float(area.mean()) < 0.6  # E[scale] = 0.54, less the tries that do not fit
    again = random_boxes(4000, 64, 64, torch.Generator().manual_seed(2))
    assert torch.equal(boxes, again)


def test_the_model_sees_random_crops_in_training_and_the_fixed_one_in_evaluation():
    crops = Crops(224, 256, True, torch.Generator().manual_seed(3))
    seen = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 224 * 224, 2))
    net.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].clone()))
    model = TransferModel(net, crops=crops)
    x = stamped(2, 0, 0).expand(8, -1, -1, -1)
    model.train()
    model(x)
    model.eval()
    model(x)
    model(x)
    training, first, second = seen
    assert training.shape == first.shape == (8, 3, 224, 224)
    assert float(training.max()) > 0  # some random crops keep (and enlarge) the corner
    assert torch.equal(first, second) and float(first.max()) == 0.0


def test_configured_crops_are_seeded_by_the_run():
    settings = ["model.name=resnet18_cifar", "model.options={width: 4}"]
    cfg = load_config(None, [*settings, "model.crops={size: 40, resize: 48}"]).model
    views = []
    for _ in range(2):
        torch.manual_seed(7)
        model, _ = build_configured(cfg, (3, 32, 32), 10)
        views.append(model.crops(torch.rand(2, 3, 32, 32, generator=torch.Generator()), True))
    assert views[0].shape == (2, 3, 40, 40)
    assert torch.equal(views[0], views[1])


def test_the_footprint_estimate_counts_the_crops_the_network_sees():
    from triggerlab.run.footprint import _meta_footprint

    settings = ["model.name=resnet18_cifar", "model.options={width: 4}"]
    plain = _meta_footprint(load_config(None, settings), (3, 16, 16), 10)
    cropped_cfg = load_config(None, [*settings, "model.crops={size: 64, resize: 72}"])
    cropped = _meta_footprint(cropped_cfg, (3, 16, 16), 10)
    assert plain is not None and cropped is not None
    assert cropped.kept > 10 * plain.kept  # 16 times the pixels


def test_the_code_faithful_tinyimagenet_configs_test_view_hides_its_small_corner_triggers():
    from support import REPO

    from triggerlab.grid.plan import plan_grid
    from triggerlab.grid.spec import load_grid_spec
    from triggerlab.models import crops_of

    path = REPO / "configs" / "ref001_tinyimagenet_code_training.yaml"
    runs = [r.config for r in plan_grid(load_grid_spec(path), None)]
    vgg = next(c for c in runs if c.model.name == "vgg19_bn")
    assert (vgg.train.optimizer, vgg.model.freeze, vgg.model.frozen_mode) == (
        "sgd",
        "ref001_code",
        "train",
    )
    survivors = {}  # (size, position) -> does any trigger pixel reach the tested network
    for cfg in runs:
        key = (cfg.trigger.size, str(cfg.trigger.position))
        if cfg.trigger.color == "white" and key not in survivors:
            triggered = cfg.trigger.build((3, 64, 64)).apply(torch.zeros(1, 3, 64, 64))
            seen = crops_of(cfg.model)(triggered, training=False)  # type: ignore[misc]
            survivors[key] = float(seen.max()) > 0
    assert len(survivors) == 3 * 5
    for (size, position), survives in survivors.items():
        assert survives == (position == "center" or size == 5), (size, position)
