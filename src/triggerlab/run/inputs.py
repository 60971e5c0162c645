"""What the training loop trains and evaluates on: the whole model on images, or, when the
frozen-feature cache applies, the trainable tail on cached features.

Both paths see the same samples in the same order and give the same numbers up to the
cache's float16 rounding (tested); the cached one forwards only the images a run
changes through the frozen body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from triggerlab.models.transfer import TransferModel
from triggerlab.progress import Reporter
from triggerlab.run.feature_cache import (
    FeatureStore,
    body_digest,
    body_features,
    cache_root,
    pool_features,
    pool_of,
)
from triggerlab.train.devices import model_memory_format, to_input

if TYPE_CHECKING:
    from triggerlab.data.dataset import ImageDataset
    from triggerlab.run.context import RunContext

PROBE = 4


@dataclass(frozen=True)
class Inputs:
    """What the trained module takes for one part of the data, and how many of its images went
    through the frozen body to make it (0 on the uncached path)."""

    values: torch.Tensor
    forwards: int


@dataclass(frozen=True)
class TrainingInputs:
    """The module that trains and the tensors it sees; ``pool`` is set on the cached path."""

    model: nn.Module
    device: torch.device
    cut: nn.Module | None = None
    body: nn.Module | None = None
    pool: np.ndarray | None = None
    built: int = 0  # images this run sent through the frozen body to fill the cache
    record: dict[str, Any] = field(default_factory=dict)

    def of(self, part: ImageDataset, changed: torch.Tensor | None = None) -> Inputs:
        """What the trained module takes for ``part``: its images, or their features (cached
        rows gathered, ``changed`` rows, or all rows when None, computed now)."""
        if self.pool is None:
            return Inputs(part.images, 0)
        assert self.cut is not None and self.body is not None and part.pool_index is not None
        if changed is None:
            features = body_features(self.body, self.cut, part.images, self.device).half()
            return Inputs(features, len(part))
        features = torch.from_numpy(np.asarray(self.pool[part.pool_index.numpy()]))
        if changed.numel():
            fresh = body_features(self.body, self.cut, part.images[changed], self.device)
            features[changed] = fresh.half()
        return Inputs(features, int(changed.numel()))


def _equivalent(model: TransferModel, cut: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether the tail on the body's output is the whole model (the cut is a true tail)."""
    generator = torch.Generator().manual_seed(0)
    probe = torch.randint(0, 256, (PROBE, *shape), generator=generator, dtype=torch.uint8)
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        whole = model(to_input(probe, device, model_memory_format(model)))
        split = cut(body_features(model, cut, probe, device).to(device))
    model.train()
    return whole.shape == split.shape and torch.allclose(whole, split, atol=1e-4, rtol=1e-3)


MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def batch_dependent(model: nn.Module, cut: nn.Module) -> list[str]:
    """Modules of the body below ``cut`` whose output in training mode depends on the batch
    or on chance (batch norms, dropout): with them the body's features are not fixed."""
    inside = {id(m) for m in cut.modules()}
    return [
        f"{name} ({type(module).__name__})"
        for name, module in model.named_modules()
        if isinstance(module, MODE_DEPENDENT) and id(module) not in inside
    ]


def why_not_cached(ctx: RunContext) -> str | None:
    """None when the cache applies to this run, else the reason it does not."""
    if not ctx.cfg.model.feature_cache:
        return "model.feature_cache is off"
    if ctx.cfg.poison_schedule == "per_batch":
        return (
            "poison.schedule is per_batch: the training images are poisoned anew in every "
            "batch, so their features change every epoch"
        )
    if ctx.cfg.train.augment:
        return "train.augment changes the images every epoch, so their features change too"
    model = ctx.model
    if isinstance(model, TransferModel) and model.crops is not None:
        return "model.crops gives training a new random crop of each image, so its features change"
    if not isinstance(model, TransferModel) or model.plan is None or model.plan.cut is None:
        return "the freeze policy trains more than a tail (use classifier or head)"
    varying = batch_dependent(model, model.plan.cut) if model.frozen_mode == "train" else []
    if varying:
        return (
            f"model.frozen_mode: train runs the frozen body's {varying[0]} in training mode "
            "(batch statistics, dropout), so its features depend on the batch: cached ones "
            "would not be what the network computes"
        )
    parts = [ctx.data.train, ctx.data.test, *(x for x in (ctx.data.finetune, ctx.defender) if x)]
    if pool_of(parts) is None:
        return "the dataset's parts do not cover the loaded images once each"
    if not _equivalent(model, model.plan.cut, ctx.data.shape):
        return "the trainable tail is not the model's last step"
    return None


def training_inputs(ctx: RunContext, progress: Reporter | None = None) -> TrainingInputs:
    """The whole model on images, or the tail on cached features when that is exact."""
    reason = why_not_cached(ctx)
    if reason is not None:
        return TrainingInputs(ctx.model, ctx.device, record={"used": False, "reason": reason})
    model = ctx.model
    assert isinstance(model, TransferModel) and model.plan is not None
    cut = model.plan.cut
    assert cut is not None
    weights = ctx.model_info.weights
    key = {
        "data": ctx.cfg.data.model_dump(
            mode="json", exclude={"root", "seed", "split", "test_fraction", "test_subjects"}
        ),
        "model": ctx.cfg.model.name,
        "options": ctx.cfg.model.options,
        "weights": None if weights is None else weights.record()["sha256"] or weights.source,
        # the body's exact weights: fresh ones differ from seed to seed, a file's are its own
        "body": body_digest(model, cut),
        "normalization": ctx.model_info.normalization,
        "cut": model.plan.cut_name,
    }
    if ctx.cfg.trigger.stage == "native":  # loaded at the stored size and resized in one way
        key["loaded"] = "native"
    store = FeatureStore(cache_root() / "features", key)
    parts = [ctx.data.train, ctx.data.test, *(x for x in (ctx.data.finetune, ctx.defender) if x)]
    pool, built = pool_features(store, model, cut, parts, ctx.device, progress)
    record = {"used": True, "file": str(store.features_path), "built_here": built > 0}
    return TrainingInputs(cut, ctx.device, cut, model, pool, built, record)
