"""Where a trigger is stamped: on the images the model takes, or on the dataset's images at
their stored (native) size before they are resized (``trigger.stage``).

Reference 001's code writes its trigger into the stored 32x32 CIFAR-10 (28x28 MNIST)
arrays and upsamples afterwards, so a 1-pixel trigger reaches the network as a blurred
4x4 blob (docs/references.md, item 1). ``NativeStamping`` does the same: it stamps the
native image of each chosen sample (found by its ``pool_index``) and resizes the result
with the very function that made the clean images (``data.prepare.model_input_images``),
so clean and triggered images differ only where the trigger was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from triggerlab.config import DataConfig, ExperimentConfig
from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.prepare import model_input_images, native_pool
from triggerlab.triggers import Trigger, map_uint8
from triggerlab.triggers.base import ImageMap


class Stamping(Protocol):
    """How a run's trigger reaches the images: ``stamp`` returns the triggered model inputs
    of ``data``'s ``rows``; ``shape`` is the image shape the trigger is built for."""

    stage: str
    shape: tuple[int, int, int]

    def stamp(
        self,
        apply: ImageMap,
        data: ImageDataset,
        rows: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor: ...

    def build(self, cfg: ExperimentConfig) -> Trigger: ...

    def record(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ModelInputStamping:
    """The trigger on the model's inputs (after ``data.resize``): triggerlab's default."""

    shape: tuple[int, int, int]
    stage: str = "model_input"

    def stamp(
        self,
        apply: ImageMap,
        data: ImageDataset,
        rows: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        return map_uint8(apply, data.images[rows], generator)

    def build(self, cfg: ExperimentConfig) -> Trigger:
        return cfg.trigger.build(self.shape)  # type: ignore[no-any-return]

    def record(self) -> dict[str, Any]:
        return {"stage": self.stage, "stamped_shape": list(self.shape)}


@dataclass(frozen=True)
class NativeStamping:
    """The trigger on the stored images, which are then resized as the clean ones were."""

    pool: torch.Tensor  # uint8 [P, C, h, w]: the loaded images, row i with pool_index i
    data: DataConfig
    stage: str = "native"

    @property
    def shape(self) -> tuple[int, int, int]:
        _, channels, height, width = self.pool.shape
        return (channels, height, width)

    def stamp(
        self,
        apply: ImageMap,
        data: ImageDataset,
        rows: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        assert data.pool_index is not None, "every part of a split knows its loaded images"
        native = self.pool[data.pool_index[rows]]
        return model_input_images(map_uint8(apply, native, generator), self.data)

    def build(self, cfg: ExperimentConfig) -> Trigger:
        """Fractional sizes in native pixels by reference 001's truncation, then built there."""
        spec = cfg.trigger.in_native_pixels(self.shape)
        return spec.build(self.shape)  # type: ignore[no-any-return]

    def record(self) -> dict[str, Any]:
        return {"stage": self.stage, "stamped_shape": list(self.shape)}


def stamping_for(
    cfg: ExperimentConfig, source: SourceData | None, model_shape: tuple[int, int, int]
) -> Stamping:
    """The run's stamping: ``source`` is the data as loaded (at native size for the native
    stage, see ``data.prepare.load_source``)."""
    if cfg.trigger.stage == "native":
        assert source is not None, "the native stage stamps the loaded images"
        return NativeStamping(native_pool(source), cfg.data)
    return ModelInputStamping(model_shape)


def stamp_all(
    stamping: Stamping, trigger: Trigger, data: ImageDataset, generator: torch.Generator
) -> torch.Tensor:
    """Every image of ``data`` triggered (the triggered test set)."""
    return stamping.stamp(trigger.apply, data, torch.arange(len(data)), generator)
