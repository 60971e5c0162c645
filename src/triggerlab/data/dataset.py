"""The one in-memory dataset container: uint8 images, targets and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from triggerlab.data.labels import GENERIC, LabelKind, Labels

if TYPE_CHECKING:
    from triggerlab.data.bins import Bins


@dataclass(frozen=True)
class ImageDataset:
    """Images as one uint8 tensor ``[N, C, H, W]`` and their targets.

    Classification targets are int64 ``[N]`` class indices into ``class_names``;
    regression targets are float32 ``[N, K]``, described by ``labels`` (output
    names and kind). ``groups`` holds a subject id per sample where the dataset
    has subjects, so splits can keep subjects apart. ``bins`` is set when the
    classes are bins of a continuous output (reference 003's classification
    variant). ``metadata`` holds provenance only (source files, original size).
    """

    images: torch.Tensor
    targets: torch.Tensor
    class_names: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    groups: torch.Tensor | None = None
    labels: Labels | None = None
    bins: Bins | None = None
    pool_index: torch.Tensor | None = None  # each image's position in the loaded dataset

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.images.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got {self.images.shape[1]}")
        if self.targets.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.targets.shape[0]} targets")
        for name in ("groups", "pool_index"):
            value = getattr(self, name)
            if value is not None and value.shape != (self.images.shape[0],):
                raise ValueError(f"{name} must be [N], got {tuple(value.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: torch.Tensor) -> ImageDataset:
        groups = None if self.groups is None else self.groups[index]
        pool = None if self.pool_index is None else self.pool_index[index]
        return replace(
            self,
            images=self.images[index],
            targets=self.targets[index],
            groups=groups,
            pool_index=pool,
        )

    def with_images(self, images: torch.Tensor) -> ImageDataset:
        return replace(self, images=images)


@dataclass(frozen=True)
class SourceData:
    """What a loader returns: its training part and, where one exists, its official test part."""

    train: ImageDataset
    test: ImageDataset | None = None


@dataclass(frozen=True)
class DataSplit:
    """The train/test pair an experiment uses, already resized and channel-converted.

    ``finetune`` is the second training stage of reference 000's protocol (a few
    images of the held-out test subject); ``None`` for one-stage training.
    """

    train: ImageDataset
    test: ImageDataset
    finetune: ImageDataset | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names

    @property
    def is_regression(self) -> bool:
        return self.train.targets.is_floating_point()

    @property
    def num_outputs(self) -> int:
        """Logits per class for classification; one output per label for regression."""
        return self.train.targets.shape[1] if self.is_regression else len(self.class_names)

    @property
    def labels(self) -> Labels:
        """The continuous outputs' names and kind (``y0, y1, ...`` generic when unnamed)."""
        if self.train.labels is not None:
            return self.train.labels
        return Labels(tuple(f"y{i}" for i in range(self.num_outputs)), GENERIC)

    @property
    def target_names(self) -> list[str]:
        return list(self.labels.names)

    @property
    def label_kind(self) -> LabelKind:
        return self.labels.kind
