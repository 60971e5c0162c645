"""Per-batch poisoning (WaNet, BppAttack): equal to the authors' training-loop computation on
fixed inputs, seeded, and chosen anew in every batch and epoch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from triggerlab.attack.per_batch import PerBatchPoison, batch_counts, first_positions
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.catalogue.triggers import PatchSpec, QuantizeSpec, WarpSpec
from triggerlab.config import PoisonConfig, load_config
from triggerlab.data.dataset import ImageDataset
from triggerlab.train.checkpoint import read_checkpoint
from triggerlab.train.loop import StagePlan, fit

CLASSES = tuple(str(c) for c in range(4))


def dataset(n: int = 64, side: int = 8, seed: int = 0) -> ImageDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, side, side), generator=generator, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(n) % 4, CLASSES)


def hook(data, trigger, rate=0.1, seed=7, **poison) -> PerBatchPoison:
    task = ClassificationTask(PoisonConfig(rate=rate, **poison), CLASSES)
    return PerBatchPoison(data, task, trigger, rate, torch.Generator().manual_seed(seed))


# ---- the authors' computations, re-stated ----------------------------------------------------


def authors_wanet_grids(k: int, height: int, field_seed: int):
    """WaNet's fields (VinAIResearch/Warping-based_Backdoor_Attack-release train.py:343-352):
    ``noise_grid`` upsampled bicubically from a k x k field scaled to mean |.| 1, and the
    identity grid stacked (column, row)."""
    ins = torch.rand(1, 2, k, k, generator=torch.Generator().manual_seed(field_seed)) * 2 - 1
    ins = ins / torch.mean(torch.abs(ins))
    noise_grid = F.interpolate(ins, size=height, mode="bicubic", align_corners=True)
    noise_grid = noise_grid.permute(0, 2, 3, 1)
    array1d = torch.linspace(-1, 1, steps=height)
    x, y = torch.meshgrid(array1d, array1d, indexing="ij")
    return torch.stack((y, x), 2)[None, ...], noise_grid


def authors_wanet_batch(inputs, targets, rate_bd, cross_ratio, s, target, k, seed, draws):
    """One training batch as WaNet's train.py:67-89 makes it (all2one; BackdoorBench
    attack/wanet.py:575-598 is the same with ``int(bs * rate)`` for rates of a sample or
    more): the first ``int(bs x rate)`` warped and relabelled, the next ``int(num_bd x
    cross_ratio)`` warped with fresh noise and their labels kept."""
    height = inputs.shape[2]
    identity_grid, noise_grid = authors_wanet_grids(k, height, seed)
    bs = inputs.shape[0]
    num_bd = int(bs * rate_bd)
    num_cross = int(num_bd * cross_ratio)
    grid_temps = torch.clamp(identity_grid + s * noise_grid / height, -1, 1)  # grid_rescale 1
    ins = torch.rand(num_cross, height, height, 2, generator=draws) * 2 - 1
    grid_temps2 = torch.clamp(grid_temps.repeat(num_cross, 1, 1, 1) + ins / height, -1, 1)
    inputs_bd = F.grid_sample(
        inputs[:num_bd], grid_temps.repeat(num_bd, 1, 1, 1), align_corners=True
    )
    targets_bd = torch.ones_like(targets[:num_bd]) * target
    inputs_cross = F.grid_sample(
        inputs[num_bd : num_bd + num_cross], grid_temps2, align_corners=True
    )
    total_inputs = torch.cat([inputs_bd, inputs_cross, inputs[num_bd + num_cross :]])
    return total_inputs, torch.cat([targets_bd, targets[num_bd:]])


def authors_bpp_batch(inputs, targets, rate_bd, neg_rate, squeeze_num, target, residual_of):
    """One training batch as BppAttack's code (RU-System-Software-and-Security/BppAttack,
    bppattack.py:168-196) makes it (all2one, no dithering, images in 0..255 as
    ``back_to_np_4d`` gives them with GTSRB's identity normalisation, lines 81-83): the
    first ``int(bs x rate)`` quantised and relabelled, the next ``int(bs x neg_rate)`` given
    another image's residual, clipped, labels kept. ``residual_of(n)``: n residuals of other
    training images (lines 503-526 pool them; BackdoorBench attack/bpp.py:899-913 draws the
    partners uniformly)."""
    bs = inputs.shape[0]
    num_bd = int(bs * rate_bd)
    num_neg = int(bs * neg_rate)
    inputs_bd = inputs[:num_bd] * 255
    inputs_bd = torch.round(inputs_bd / 255.0 * (squeeze_num - 1)) / (squeeze_num - 1) * 255
    targets_bd = torch.ones_like(targets[:num_bd]) * target
    inputs_negative = inputs[num_bd : num_bd + num_neg] * 255 + residual_of(num_neg)
    inputs_negative = torch.clamp(inputs_negative, 0, 255)
    total_inputs = torch.cat([inputs_bd, inputs_negative, inputs[num_bd + num_neg :] * 255])
    return total_inputs / 255, torch.cat([targets_bd, targets[num_bd:]])


# ---- equivalence -----------------------------------------------------------------------------


def test_wanet_per_batch_equals_the_authors_training_batch():
    data = dataset(n=40, side=8)
    spec = WarpSpec(strength=0.5, grid=4, seed=3)  # noise mode on, cross ratio 2: the defaults
    poisoning = hook(data, spec.build((3, 8, 8)), rate=0.1, seed=11, target=2, sources="all")
    x, y = data.images.float() / 255, data.targets.clone()
    ours_x, ours_y = poisoning(x, y, torch.arange(40))
    theirs_x, theirs_y = authors_wanet_batch(
        x, y, 0.1, 2.0, 0.5, 2, 4, 3, torch.Generator().manual_seed(11)
    )
    assert torch.equal(ours_y, theirs_y)
    assert torch.allclose(ours_x, theirs_x, atol=1e-6)
    assert not torch.equal(ours_x[4:12], x[4:12])  # 4 warped, 8 noise-warped, 28 clean
    assert torch.equal(ours_x[12:], x[12:])


def test_bpp_per_batch_equals_the_authors_training_batch():
    data = dataset(n=40, side=8)
    spec = QuantizeSpec(bits=3)  # squeeze_num 8; negative_ratio 0.2, the authors' default
    poisoning = hook(data, spec.build((3, 8, 8)), rate=0.2, seed=5, target=1, sources="all")
    x, y = data.images.float() / 255, data.targets.clone()
    ours_x, ours_y = poisoning(x, y, torch.arange(40))

    def residual_of(count: int) -> torch.Tensor:  # the same partners, drawn the same way
        partners = torch.randint(40, (count,), generator=torch.Generator().manual_seed(5))
        mates = data.images[partners].float()
        return torch.round(mates / 255.0 * 7) / 7 * 255 - mates

    theirs_x, theirs_y = authors_bpp_batch(x, y, 0.2, 0.2, 8, 1, residual_of)
    assert torch.equal(ours_y, theirs_y)
    assert torch.allclose(ours_x, theirs_x, atol=1e-5)
    assert poisoning.last is not None and poisoning.last.negative.tolist() == list(range(8, 16))


def test_a_clean_baseline_gets_no_negative_samples():
    data = dataset(n=40)
    clean = hook(data, QuantizeSpec(bits=3).build((3, 8, 8)), rate=0.0, sources="all")
    x = data.images.float() / 255
    out, labels = clean(x, data.targets, torch.arange(40))
    assert torch.equal(out, x) and torch.equal(labels, data.targets)


def test_counts_truncate_per_batch_as_the_authors_code_does():
    assert batch_counts(128, 0.1, 2.0, 0.0) == (12, 24, 0)  # 12.8 -> 12: 9.4 % of the batch
    assert batch_counts(80, 0.1, 2.0, 0.0) == (8, 16, 0)  # CIFAR-10's last batch
    assert batch_counts(128, 0.2, 0.0, 0.2) == (25, 0, 25)
    assert batch_counts(10, 0.5, 10.0, 0.0) == (5, 5, 0)  # cover samples only where left


# ---- eligibility -----------------------------------------------------------------------------


def test_first_eligible_positions_in_batch_order_and_none_beyond_them():
    mask = torch.tensor([False, True, False, True, True])
    order, valid = first_positions(mask, 2)
    assert order.tolist() == [1, 3] and valid.all()
    order, valid = first_positions(mask, 4)
    assert order.tolist() == [1, 3, 4, 0] and valid.tolist() == [True, True, True, False]


def test_non_target_sources_poison_only_other_classes_and_keep_the_rest():
    data = dataset(n=16)
    data = ImageDataset(data.images, torch.tensor([0] * 14 + [1, 2]), CLASSES)  # 2 eligible
    patch = PatchSpec(size=2, color="white").build((3, 8, 8))
    poisoning = hook(data, patch, rate=0.25, target=0)  # 4 asked, 2 eligible
    x, y = data.images.float() / 255, data.targets.clone()
    out_x, out_y = poisoning(x, y, torch.arange(16))
    assert out_y.tolist() == [0] * 16
    changed = (out_x != x).flatten(1).any(dim=1)
    assert torch.nonzero(changed).flatten().tolist() == [14, 15]
    assert int(poisoning.counts[0]) == 2 and poisoning.ever.sum() == 2


# ---- anew per batch and epoch, fixed by the seeds --------------------------------------------


class Spy:
    """Records which training samples each batch poisoned, and the batches as learnt."""

    def __init__(self, inner: PerBatchPoison) -> None:
        self.inner, self.generator = inner, inner.generator
        self.poisoned: list[list[int]] = []
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x, y, index):
        x, y = self.inner(x, y, index)
        plan = self.inner.last
        assert plan is not None
        self.poisoned.append(sorted(index[plan.poisoned[plan.valid]].tolist()))
        self.inputs.append(x)
        return x, y


class Task:
    metric_names = ("clean_acc",)

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs, targets)

    def predict(self, outputs):
        return outputs.argmax(1)


def train_with(data: ImageDataset, order_seed: int, poison_seed: int, epochs: int = 3) -> Spy:
    cfg = load_config(None, [f"train.epochs={epochs}", "train.batch_size=16"]).train
    spy = Spy(hook(data, WarpSpec(grid=2).build((3, 8, 8)), rate=0.25, seed=poison_seed))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    fit(
        model,
        Task(),
        data.images,
        data.targets,
        cfg=cfg,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(order_seed),
        evaluate=lambda m: {"clean_acc": 0.0},
        on_epoch=lambda r: None,
        transform=spy,
    )
    return spy


def test_poisoned_samples_change_every_batch_and_epoch_and_a_seed_fixes_them():
    data = dataset(n=64)
    first, again = train_with(data, 0, 7), train_with(data, 0, 7)
    assert first.poisoned == again.poisoned  # the same seeds: the same samples ...
    assert all(torch.equal(a, b) for a, b in zip(first.inputs, again.inputs, strict=True))
    per_epoch = [sorted(i for b in first.poisoned[e * 4 : e * 4 + 4] for i in b) for e in range(3)]
    assert all(len(p) == 16 for p in per_epoch)  # 4 batches of 16 at 0.25: 4 each
    assert per_epoch[0] != per_epoch[1] != per_epoch[2]  # ... anew every epoch
    assert int(first.inner.ever.sum()) > 16  # more images poisoned over epochs than in one
    other_order = train_with(data, 1, 7)
    assert other_order.poisoned != first.poisoned  # the batch order chooses the samples
    other_noise = train_with(data, 0, 8)
    assert other_noise.poisoned == first.poisoned  # the per-batch stream draws the noise
    assert not torch.equal(other_noise.inputs[0], first.inputs[0])


def fit_two_epochs(data: ImageDataset, folder, resume=None) -> nn.Module:
    """Two epochs with per-batch poisoning, a checkpoint after the first (``folder``)."""
    cfg = load_config(None, ["train.epochs=2", "train.batch_size=16", "train.checkpoint_every=1"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    fit(
        model,
        Task(),
        data.images,
        data.targets,
        cfg=cfg.train,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        evaluate=lambda m: {"clean_acc": 0.0},
        on_epoch=lambda r: None,
        stage=StagePlan(folder=folder, resume=resume),
        transform=hook(data, WarpSpec(grid=2).build((3, 8, 8)), rate=0.25),
    )
    return model


def test_a_resumed_training_draws_the_same_per_batch_noise(tmp_path):
    """The per-batch generator is saved in checkpoints: continuing from epoch 1 ends with the
    weights of the uninterrupted training."""
    data = dataset(n=32)
    (tmp_path / "config.yaml").write_text("{}\n")  # checkpoints are tied to the run's config
    whole = fit_two_epochs(data, tmp_path)
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint is not None and "rng.per_batch" in checkpoint.tensors
    resumed = fit_two_epochs(data, tmp_path, resume=checkpoint)
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_a_short_wanet_run_on_digits_poisons_per_batch_end_to_end(tmp_path):
    from triggerlab.run.experiment import run_experiment

    settings = ["trigger.kind=warp", "train.epochs=2", "poison.sources=all"]
    result = run_experiment(load_config(None, settings), tmp_path / "wanet")
    poison = result.summary["poison"]
    assert poison["schedule"] == "per_batch"
    per_batch = poison["per_batch"]
    # 1,438 digits in batches of 32: 44 of 32 and one of 30, 3 poisoned each, 6 noise-warped
    assert per_batch["batches_per_epoch"] == 45
    assert per_batch["poisoned_per_epoch"] == 135 and per_batch["cover_per_epoch"] == 270
    assert per_batch["poisoned_seen"] == 270 and per_batch["cover_seen"] == 540
    assert 135 < per_batch["ever_poisoned"] <= 270
    assert (poison["count"], poison["cover_count"]) == (135, 270)  # what training saw
    assert poison["fraction"] == pytest.approx(135 / 1438)
    assert poison["static_set"]["count"] == 144  # round(0.1 x 1,438), for the defences
    assert "per_batch" in result.summary["feature_cache"]["reason"]
    static = run_experiment(
        load_config(None, [*settings, "poison.schedule=static", "train.epochs=1"]),
        tmp_path / "static",
    )
    assert static.summary["poison"]["schedule"] == "static"
    assert "per_batch" not in static.summary["poison"]


@pytest.mark.slow  # loads the digits and builds two models
def test_the_feature_cache_is_refused_for_per_batch_poisoning_with_the_reason():
    from triggerlab.run.inputs import why_not_cached
    from triggerlab.run.prepare import prepare

    frozen = ["trigger.kind=warp", "model.freeze=classifier", "model.options={width: 4}"]
    assert why_not_cached(prepare(load_config(None, [*frozen, "poison.schedule=static"]))) is None
    reason = why_not_cached(prepare(load_config(None, frozen)))
    assert reason is not None and reason.startswith("poison.schedule is per_batch")
