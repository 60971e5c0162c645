"""The ``model:`` section: architecture, starting weights, input normalisation, freeze policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from triggerlab.catalogue.models import MODELS, TIMM_PREFIX
from triggerlab.config.section import Section


class Normalization(Section):
    mean: list[float] = Field(
        min_length=1, max_length=3, description="per channel, in [0, 1] units"
    )
    std: list[float] = Field(min_length=1, max_length=3, description="per channel, positive")

    @model_validator(mode="after")
    def _matching(self) -> Normalization:
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need one value each per channel, std positive")
        return self


class Crops(Section):
    """Reference 001's TinyImageNet views of a stored image (torchvision's ImageNet recipe)."""

    size: int = Field(224, ge=8, le=4096, description="side of the crop the network sees")
    resize: int = Field(
        256, ge=8, le=8192, description="evaluation: the side the image is resized to first"
    )
    flip: bool = Field(True, description="training: mirror left-right with probability 1/2")

    @model_validator(mode="after")
    def _crop_fits(self) -> Crops:
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be at least size ({self.size})")
        return self


class UnfreezeLast(Section):
    unfreeze_last: int = Field(
        ge=1, le=100_000, description="the last N parameter tensors train (reference 001's sweep)"
    )


def _named_or_custom(value: Any) -> str:
    """Union member of a setting that is a name or a mapping: errors then name only that one."""
    return "custom" if isinstance(value, dict | BaseModel) else "named"


# Tags of such unions; error messages leave them out of the key.
UNION_MEMBER_TAGS = ("named", "custom")

FreezePolicy = Annotated[
    Annotated[
        Literal["none", "classifier", "classifier_and_bn", "head", "ref001_paper", "ref001_code"],
        Tag("named"),
    ]
    | Annotated[UnfreezeLast, Tag("custom")],
    Discriminator(_named_or_custom),
]
NormalizationSetting = Annotated[
    Annotated[
        Literal["auto", "none", "imagenet", "cifar10", "cifar10_ref001", "half"], Tag("named")
    ]
    | Annotated[Normalization, Tag("custom")],
    Discriminator(_named_or_custom),
]


class ModelConfig(Section):
    name: str = Field(
        "small_cnn", description="architecture (see `triggerlab models`), or timm/<name>"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="architecture options")
    pretrained: Literal["imagenet"] | Path | None = Field(
        None,
        description="null: fresh weights; imagenet: the architecture's ImageNet weights; or the "
        "path of a checkpoint (safetensors or a state dict), e.g. a run's model.safetensors",
    )
    normalization: NormalizationSetting = Field(
        "auto",
        description="input normalisation inside the model: auto (the pretrained weights' own, "
        "else none), none, imagenet, cifar10, cifar10_ref001 (CIFAR-10 statistics as reference "
        "001's code writes them), half (mean 0.5, std 0.5 on every channel: reference 001's "
        "MNIST, reference 002), or {mean: [...], std: [...]}",
    )
    freeze: FreezePolicy = Field(
        "none",
        description="what trains: none (everything), classifier (the final linear layer), "
        "classifier_and_bn (and batch norms), head (the classifier module), {unfreeze_last: N}, "
        "ref001_paper / ref001_code (reference 001's per-backbone sets as its paper states them "
        "and as its code applied them; docs/references.md)",
    )
    frozen_mode: Literal["eval", "train"] = Field(
        "eval",
        description="how frozen layers run while training: eval (as pretrained: running "
        "batch-norm statistics, no dropout) or train (the whole network in training mode, as "
        "reference 001's code: frozen batch norms use batch statistics and update theirs)",
    )
    first_conv: Literal["pretrained", "fresh", "fresh_grey"] = Field(
        "pretrained",
        description="a pretrained network's first convolution: pretrained (kept; grey images "
        "repeated to RGB), fresh (a new trainable one of the same shape on the repeated grey "
        "image: reference 001's code on MNIST) or fresh_grey (a new trainable one taking the "
        "one grey channel, no repeat)",
    )
    crops: Crops | None = Field(
        None,
        description="{size, resize, flip}: the network sees crops of the stored images, "
        "training: a random resized crop to size (and a flip), evaluation: resize, then a "
        "centre crop (reference 001's TinyImageNet transforms)",
    )
    feature_cache: bool = Field(
        True,
        description="when everything below the trainable head is frozen, compute its features "
        "once per dataset and reuse them across runs",
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name in MODELS:
            return name
        if name.startswith(TIMM_PREFIX) and name.removeprefix(TIMM_PREFIX):
            return name  # timm's own names are checked when the model is built (timm is heavy)
        raise ValueError(
            f"unknown model {name!r}; expected one of {', '.join(MODELS)}, or timm/<name>"
        )

    @model_validator(mode="after")
    def _fresh_conv_needs_weights(self) -> ModelConfig:
        if self.first_conv != "pretrained" and self.pretrained is None:
            raise ValueError(
                f"first_conv: {self.first_conv} replaces a pretrained network's first "
                "convolution; without model.pretrained every layer is fresh already"
            )
        return self

    @field_validator("pretrained", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("expected null, imagenet or the path of a checkpoint")
        return value
