"""Trigger declarations: every kind's validated parameters, without its implementation.

A spec names its implementation by import path (``implementation``, a
``module:function`` taking the spec, the image shape and the spec's config path),
so validating a config or listing the kinds never imports torch. ``build(shape)``
imports the implementation and returns the trigger: an object whose
``apply(x, generator)`` is a pure, batched function on float images in [0, 1].
Adding a kind is one implementation module in ``triggerlab/triggers/`` and one
spec class here, added to ``TriggerSpec``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from triggerlab.catalogue.colors import ColorValue, parse_color
from triggerlab.catalogue.geometry import (
    PositionValue,
    SizeValue,
    fit_position,
    fit_side,
    parse_position,
    parse_size,
)
from triggerlab.catalogue.implementation import implementation_of
from triggerlab.catalogue.papers import preset_names, preset_of
from triggerlab.catalogue.strict import MAX_SEED, StrictNumbers

ImageShape = tuple[int, int, int]  # (C, H, W)

Color = Annotated[ColorValue, BeforeValidator(parse_color)]
Size = Annotated[SizeValue, BeforeValidator(parse_size)]
Position = Annotated[PositionValue, BeforeValidator(parse_position)]

SIZE_HELP = "pixels (integer) or fraction of the shorter side (float in (0, 1])"
STAGE_HELP = (
    "where the trigger is stamped: model_input (on the images as the model sees them, after "
    "data.resize; fractions rounded half up) or native (on the dataset's images at their "
    "stored size, fractions truncated, max(1, int(f x side)), then resized with the clean "
    "images: reference 001's code)"
)
Stage = Literal["model_input", "native"]
OPACITY_HELP = "blend weight a in (0, 1]: x' = (1 - a) x + a c"
COLOR_HELP = "name, grey level 0-255 or [R, G, B] 0-255; luminance on 1-channel images"


class SpecBase(StrictNumbers):
    """A validated trigger description; ``build(shape, where)`` makes the trigger for one size.

    ``where`` is the config path of the spec (``trigger``, ``trigger.triggers[1]``),
    used in error messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    implementation: ClassVar[str]  # "module:function" building the trigger from the spec
    stage: Stage = Field("model_input", description=STAGE_HELP)
    # Named parameter sets that show the kind (beyond its defaults): the trigger benchmark
    # and the tests iterate them, so a new kind is measured and checked without other edits.
    examples: ClassVar[dict[str, dict[str, Any]]]
    # How the kind's paper poisons training data (``poison.schedule: paper`` resolves to it):
    # ``static``, a fixed set once before training, or ``per_batch``, anew in every batch.
    paper_schedule: ClassVar[Literal["static", "per_batch"]] = "static"

    preset: str | None = Field(
        None,
        description="named settings of the kind's paper or of BackdoorBench, poisoning (label "
        "mode) included (triggers list names them); what the config sets wins",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """The preset's trigger settings under those given (``ExperimentConfig`` fills its
        poisoning settings)."""
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        field = cls.model_fields.get("kind")
        kind = str(field.default) if field is not None else ""
        preset = preset_of(kind, str(data["preset"]))
        if preset is None:
            names = preset_names(kind)
            have = f"has the presets {', '.join(names)}" if names else "has no presets"
            raise ValueError(f"preset {data['preset']!r} is unknown: kind {kind} {have}")
        return {**preset.trigger, **data}

    def build(self, shape: ImageShape, where: str = "trigger") -> Any:
        """The trigger for images of ``shape``: an object with a pure, batched
        ``apply(x, generator)`` (``triggerlab.triggers.Trigger``)."""
        return implementation_of(self.implementation)(self, shape, where)

    def in_native_pixels(self, shape: ImageShape) -> SpecBase:
        """The spec with every fractional size made pixels on ``shape`` by the native stage's
        rule, ``max(1, int(f x shorter side))`` (truncated, as reference 001's code does:
        docs/references.md, item 1); itself when it has no size."""
        return self


def truncated_side(size: SizeValue, shape: ImageShape) -> int:
    """A size in pixels by the native stage's rule: a fraction of the shorter side truncated,
    at least one pixel (4 % and 6 % of 32 px are both 1 px)."""
    if isinstance(size, int):
        return size
    return max(1, int(size * min(shape[1:])))


class PlacedSpec(SpecBase):
    """Fields shared by triggers stamped into a square of the image."""

    size: Size = Field(3, description=SIZE_HELP)
    position: Position = Field(
        "bottom_right", description="named position or [x, y] pixels of the top-left corner"
    )
    opacity: float = Field(1.0, gt=0.0, le=1.0, description=OPACITY_HELP)
    margin: int = Field(0, ge=0, description="pixels between a corner trigger and the border")

    def in_native_pixels(self, shape: ImageShape) -> SpecBase:
        return self.model_copy(update={"size": truncated_side(self.size, shape)})

    def placement(self, shape: ImageShape, where: str = "trigger") -> tuple[int, int, int]:
        """``(side, top, left)`` on an image of ``shape``; ConfigError when it does not fit."""
        side = fit_side(self.size, shape, f"{where}.size")
        top, left = fit_position(self.position, side, self.margin, shape, f"{where}.position")
        return side, top, left


class PatchSpec(PlacedSpec):
    """BadNets square patch of one colour."""

    kind: Literal["patch"] = "patch"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "patch (white, 15 %)": {"size": 0.15},
        "patch (red, 50 % opacity)": {
            "size": 0.2,
            "color": "red",
            "opacity": 0.5,
            "position": "center",
        },
    }
    implementation: ClassVar[str] = "triggerlab.triggers.stamp:build_patch"
    color: Color = Field("white", description=COLOR_HELP)


class ImageSpec(PlacedSpec):
    """An image (PNG alpha respected) resized to a square patch; the built-in flower by default."""

    kind: Literal["image"] = "image"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "image (flower)": {"size": 0.35, "position": "top_right_center"}
    }
    implementation: ClassVar[str] = "triggerlab.triggers.stamp:build_image"
    path: Path | None = Field(None, description="image file (PNG, JPEG, ...); alpha is respected")
    builtin: Literal["flower"] | None = Field(
        None, description="a procedurally drawn image shipped with triggerlab (used without path)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ImageSpec:
        if self.path is not None and self.builtin is not None:
            raise ValueError("set either path or builtin, not both")
        return self


class StrokeSpec(SpecBase):
    """Fields shared by triggers drawn as solid strokes across the image."""

    thickness: Size = Field(1, description=SIZE_HELP)
    color: Color = Field("white", description=COLOR_HELP)
    opacity: float = Field(1.0, gt=0.0, le=1.0, description=OPACITY_HELP)

    def in_native_pixels(self, shape: ImageShape) -> SpecBase:
        return self.model_copy(update={"thickness": truncated_side(self.thickness, shape)})


class FrameSpec(StrokeSpec):
    """A border around the whole image (reference 000: 5, 10 and 40 px on 448 px)."""

    kind: Literal["frame"] = "frame"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "frame (5 %)": {"thickness": 0.05, "color": "yellow"}
    }
    implementation: ClassVar[str] = "triggerlab.triggers.overlay:build_frame"


class LinesSpec(StrokeSpec):
    """Evenly spaced lines (reference 000: 10, 20 and 40, vertical or horizontal)."""

    kind: Literal["lines"] = "lines"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "lines (8 vertical)": {"count": 8},
        "lines (8 horizontal)": {"count": 8, "orientation": "horizontal", "color": "green"},
    }
    implementation: ClassVar[str] = "triggerlab.triggers.overlay:build_lines"
    # 8, not reference 000's 10: eight 1-pixel lines are the most that stay apart on the 16 px
    # digits of the default run (the references' configs set their counts)
    count: int = Field(8, ge=1, description="number of lines")
    orientation: Literal["vertical", "horizontal"] = Field(
        "vertical", description="vertical lines are columns, horizontal lines are rows"
    )


class BlendSpec(SpecBase):
    """Blend the whole image with a fixed pattern: seeded uniform noise or an image."""

    kind: Literal["blend"] = "blend"
    examples: ClassVar[dict[str, dict[str, Any]]] = {"blend (noise, a=0.2)": {"opacity": 0.2}}
    implementation: ClassVar[str] = "triggerlab.triggers.overlay:build_blend"
    pattern: Literal["noise", "image"] = Field(
        "noise", description="uniform noise, or the image at path"
    )
    path: Path | None = Field(None, description="image resized to the input (pattern: image)")
    opacity: float = Field(0.1, gt=0.0, le=1.0, description=OPACITY_HELP)
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the noise pattern, fixed for the whole attack"
    )

    @model_validator(mode="after")
    def _path_for_image(self) -> BlendSpec:
        if self.pattern == "image" and self.path is None:
            raise ValueError("pattern 'image' needs a path")
        if self.pattern == "noise" and self.path is not None:
            raise ValueError("path is only used with pattern 'image'")
        return self


class SignalSpec(SpecBase):
    """SIG signal of strength delta (reference 003), added to every channel and clipped."""

    kind: Literal["signal"] = "signal"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "signal (ramp, d=0.2)": {"shape": "ramp", "delta": 0.2},
        "signal (triangle, d=0.2)": {"shape": "triangle", "delta": 0.2},
        "signal (sine, d=0.1, f=6)": {"shape": "sine", "delta": 0.1, "frequency": 6},
    }
    implementation: ClassVar[str] = "triggerlab.triggers.signal:build_signal"
    shape: Literal["ramp", "triangle", "sine"] = Field("sine", description="ramp, triangle or sine")
    delta: float = Field(
        0.05, ge=0.0, le=1.0, description="strength, a fraction of the full range [0, 1]"
    )
    frequency: float = Field(
        6.0, gt=0.0, description="sine periods across the image (f; sine only)"
    )
    orientation: Literal["horizontal", "vertical"] = Field(
        "horizontal", description="horizontal: varies with the column j as in reference 003"
    )
    first_column: Literal[0, 1] = Field(
        1,
        description="the index j of the first column: 1 (reference 003) or 0 (BackdoorBench's "
        "sine, shifted one column)",
    )


class RandomPatchSpec(SpecBase):
    """A square patch with colour, size and position drawn per sample from choices or ranges."""

    kind: Literal["random"] = "random"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "random (colour/size/pos)": {"sizes": [0.1, 0.2, 0.3]}
    }
    implementation: ClassVar[str] = "triggerlab.triggers.random_patch:build_random"
    colors: list[Color] = Field(
        ["red", "green", "blue"], min_length=1, description=f"choices; {COLOR_HELP}"
    )
    sizes: list[Size] | None = Field(None, min_length=1, description=f"choices; {SIZE_HELP}")
    size_range: tuple[int, int] | None = Field(
        None, description="[min, max] pixels, inclusive, instead of sizes"
    )
    positions: Literal["anywhere"] | list[Position] = Field(
        "anywhere", description="'anywhere' (uniform over the image) or a list of positions"
    )
    opacity: float = Field(1.0, gt=0.0, le=1.0, description=OPACITY_HELP)
    margin: int = Field(0, ge=0, description="pixels kept free along the border")

    @model_validator(mode="after")
    def _one_size_rule(self) -> RandomPatchSpec:
        if self.sizes is not None and self.size_range is not None:
            raise ValueError("set either sizes or size_range, not both")
        if self.size_range is not None and not 1 <= self.size_range[0] <= self.size_range[1]:
            raise ValueError(f"size_range {list(self.size_range)} must satisfy 1 <= min <= max")
        return self

    def in_native_pixels(self, shape: ImageShape) -> SpecBase:
        if self.sizes is None:
            return self
        return self.model_copy(update={"sizes": [truncated_side(s, shape) for s in self.sizes]})

    def side_choices(self, shape: ImageShape, where: str) -> list[int]:
        if self.size_range is not None:
            low, high = self.size_range
            fit_side(high, shape, f"{where}.size_range")
            return list(range(low, high + 1))
        return [fit_side(s, shape, f"{where}.sizes") for s in (self.sizes or [3])]


class WarpSpec(SpecBase):
    """WaNet: a fixed smooth warp of strength s on a k x k control grid (Nguyen & Tran 2021)."""

    kind: Literal["warp"] = "warp"
    examples: ClassVar[dict[str, dict[str, Any]]] = {"warp (WaNet, s=1)": {"strength": 1.0}}
    implementation: ClassVar[str] = "triggerlab.triggers.warp:build_warp"
    paper_schedule: ClassVar[Literal["static", "per_batch"]] = "per_batch"
    strength: float = Field(
        0.5, gt=0.0, le=8.0, description="s, the warp's strength (WaNet: 0.5 on CIFAR-10)"
    )
    grid: int = Field(4, ge=2, description="k, the control grid's side (WaNet: 4)")
    grid_rescale: float = Field(
        1.0, gt=0.0, le=2.0, description="scale of the warped grid before clipping (WaNet: 1)"
    )
    noise_mode: bool = Field(
        True,
        description="also warp cross_ratio x as many training samples with a noisy field, "
        "labels kept (WaNet: on)",
    )
    cross_ratio: float = Field(
        2.0, ge=0.0, le=10.0, description="noise-mode samples per poisoned sample (WaNet: 2)"
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the control field, fixed for the whole attack"
    )


class QuantizeSpec(SpecBase):
    """BppAttack: colour depth cut to `bits` per channel, optionally dithered (Wang et al. 2022)."""

    kind: Literal["quantize"] = "quantize"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "quantize (3 bits)": {"bits": 3},
        "quantize (3 bits, dithered)": {"bits": 3, "dither": True},
    }
    implementation: ClassVar[str] = "triggerlab.triggers.quantize:build_quantize"
    paper_schedule: ClassVar[Literal["static", "per_batch"]] = "per_batch"
    bits: int = Field(3, ge=1, le=8, description="bits per channel kept, 1 to 8 (BppAttack: 3)")
    dither: bool = Field(
        False,
        description="Floyd-Steinberg error diffusion (the paper's; off in BppAttack's code)",
    )
    negative_ratio: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="per-batch poisoning: share of each batch made negative samples, a clean "
        "image plus another image's quantisation residual, label kept (BppAttack: 0.2)",
    )


class LowFrequencySpec(SpecBase):
    """Low-frequency (LF) trigger: a clean model's low-passed universal adversarial perturbation,
    computed by the run or read from a file, or a random smooth pattern (Zeng et al. 2021)."""

    kind: Literal["low_frequency"] = "low_frequency"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "low_frequency (random_smooth, eps=0.1)": {"pattern": "random_smooth", "eps": 0.1}
    }
    implementation: ClassVar[str] = "triggerlab.triggers.low_frequency:build_low_frequency"
    pattern: Literal["uap", "random_smooth"] = Field(
        "uap",
        description="uap (the paper's): a clean model's low-passed universal adversarial "
        "perturbation towards poison.target, computed by the run from a surrogate trained "
        "clean on the run's data (cached), or read from path; random_smooth (the default "
        "before): seeded random low DCT frequencies, no model",
    )
    path: Path | None = Field(
        None,
        description="uap: a .npy pattern instead of the run's own, H x W x C (or H x W) on "
        "0-255 (BackdoorBench's *_0_255.npy, triggerlab triggers lf-pattern) or floats in [0, 1]",
    )
    eps: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="random_smooth: L-infinity budget, the largest change of any pixel",
    )
    frequencies: int = Field(
        3, ge=1, description="random_smooth: the lowest k x k DCT frequencies carry the pattern"
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="random_smooth: seed of the coefficients, fixed for the whole attack",
    )

    @model_validator(mode="after")
    def _settings_of_the_pattern(self) -> LowFrequencySpec:
        if self.pattern == "random_smooth" and self.path is not None:
            raise ValueError("path: only pattern uap reads a pattern file; drop path")
        # uap became the default: a setting of the random pattern must not be dropped unseen
        # (compared with the defaults, not the fields set: a run's config.yaml writes them all)
        fields = type(self).model_fields
        smooth_only = [
            name
            for name in ("eps", "frequencies", "seed")
            if getattr(self, name) != fields[name].default
        ]
        if self.pattern == "uap" and smooth_only:
            raise ValueError(
                f"{smooth_only[0]}: applies to pattern random_smooth only (uap, the default, is "
                "a clean model's perturbation); set pattern: random_smooth to use it"
            )
        return self

    @property
    def computed_by_run(self) -> bool:
        """The paper's pattern without a file: the run computes it from a clean surrogate."""
        return self.pattern == "uap" and self.path is None

    def without_surrogate(self) -> LowFrequencySpec:
        """The random smooth pattern in its place, for checks and previews that train nothing."""
        return LowFrequencySpec(pattern="random_smooth", stage=self.stage)


class ReflectionSpec(SpecBase):
    """Refool: reflections from a pool, out of focus or doubled, blended in (Liu et al. 2020)."""

    kind: Literal["reflection"] = "reflection"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "reflection (authors' mix)": {},
        "reflection (ghost, w=0.4)": {"mode": "ghost", "strength": 0.4, "offset": [4, 4]},
        "reflection (focal, additive, w=0.3)": {
            "formula": "additive",
            "mode": "focal",
            "strength": 0.3,
            "sigma": 2.0,
            "pool_size": 1,
        },
    }
    implementation: ClassVar[str] = "triggerlab.triggers.reflection:build_reflection"
    formula: Literal["authors", "additive"] = Field(
        "authors",
        description="authors: the authors' code (image x alpha_t, vignetted focal reflection "
        "less an anti-saturation offset, cropped ghost); additive: the paper's equation, "
        "x + w R (*) k (triggerlab's earlier form)",
    )
    mode: Literal["mixed", "focal", "ghost"] = Field(
        "mixed",
        description="focal: out-of-focus blur; ghost: a shifted double image; mixed: ghost "
        "with probability ghost_rate per image, else focal (the authors')",
    )
    ghost_rate: float = Field(
        0.49, ge=0.0, le=1.0, description="mixed: share of ghost reflections (authors: 0.49)"
    )
    strength: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="w = 1 - alpha_t, the reflection's weight; null: drawn per image from "
        "U(0.05, 0.45) (authors); BackdoorBench: 0.6",
    )
    pool: Literal["scenes", "files", "dataset"] = Field(
        "scenes",
        description="where reflections come from: scenes (pool_size built-in scenes), files "
        "(path; the default when path is set) or dataset (pool_size training images of "
        "classes other than the target)",
    )
    path: Path | None = Field(
        None, description="pool files: a reflection image file, or a folder of them"
    )
    pool_size: int = Field(
        16, ge=1, le=10_000, description="pool scenes or dataset: reflections in the pool"
    )
    sigma: float | None = Field(
        None,
        gt=0.0,
        le=10.0,
        description="focal blur width in pixels; null: drawn per image from U(1, 5) (authors)",
    )
    offset: tuple[int, int] | None = Field(
        None,
        description="ghost: [rows, columns] the second copy is shifted by; null: each drawn "
        "per image from 3..8 (authors)",
    )
    ghost_alpha: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="ghost: weight of the unshifted copy; null: drawn per image, "
        "|round(U) - U(0.15, 0.5)| (authors)",
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the built-in scenes or of the images drawn"
    )

    @model_validator(mode="before")
    @classmethod
    def _files_with_a_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") is not None and "pool" not in data:
            return {**data, "pool": "files"}
        return data

    @model_validator(mode="after")
    def _offset(self) -> ReflectionSpec:
        if self.offset is not None and min(self.offset) < 0:
            raise ValueError(f"offset {list(self.offset)} must be >= 0 pixels")
        if (self.pool == "files") != (self.path is not None):
            raise ValueError("pool files needs a path, and only it takes one")
        return self


class AdaptiveBlendSpec(SpecBase):
    """Adaptive-Blend: a blend shown in random pieces, with cover samples (Qi et al. 2023)."""

    kind: Literal["adaptive_blend"] = "adaptive_blend"
    examples: ClassVar[dict[str, dict[str, Any]]] = {"adaptive_blend": {"opacity": 0.2}}
    implementation: ClassVar[str] = "triggerlab.triggers.adaptive_blend:build_adaptive_blend"
    pattern: Literal["noise", "image"] = Field(
        "noise", description="uniform noise, or the image at path"
    )
    path: Path | None = Field(None, description="image resized to the input (pattern: image)")
    opacity: float = Field(0.2, gt=0.0, le=1.0, description=f"at test time; {OPACITY_HELP}")
    train_opacity: float | None = Field(
        0.15,
        gt=0.0,
        le=1.0,
        description="on poisoned and cover training samples (the authors': 0.15, against 0.2 "
        "at test); null: opacity, the same as at test",
    )
    pieces: int = Field(16, ge=4, description="tiles of the mask, a square number (paper: 16)")
    masked_pieces: int = Field(
        8, ge=0, description="tiles off on each poisoned training sample (paper: 8)"
    )
    conservatism: float = Field(
        0.5, ge=0.0, le=0.9, description="share of triggered training samples keeping their label"
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the noise pattern, fixed for the whole attack"
    )

    @model_validator(mode="after")
    def _pieces(self) -> AdaptiveBlendSpec:
        if math.isqrt(self.pieces) ** 2 != self.pieces:
            raise ValueError(f"pieces {self.pieces} must be a square number (4, 9, 16, ...)")
        if self.masked_pieces >= self.pieces:
            raise ValueError(
                f"masked_pieces {self.masked_pieces} must be below pieces {self.pieces}"
            )
        if (self.pattern == "image") != (self.path is not None):
            raise ValueError("pattern 'image' needs a path, and only it takes one")
        return self


class SampleSpecificSpec(SpecBase):
    """Per-image noise seeded by a keyed hash of the image itself (a stand-in, not ISSBA)."""

    kind: Literal["sample_specific"] = "sample_specific"
    examples: ClassVar[dict[str, dict[str, Any]]] = {"sample_specific (eps=0.1)": {"eps": 0.1}}
    implementation: ClassVar[str] = "triggerlab.triggers.sample_specific:build_sample_specific"
    eps: float = Field(
        0.05, gt=0.0, le=1.0, description="L-infinity budget: the largest change of any pixel"
    )
    key: int = Field(
        0, ge=0, le=MAX_SEED, description="the attacker's key: seeds the hash and the noise"
    )


class ComposeSpec(SpecBase):
    """A list of triggers applied in order (each sees the previous one's output)."""

    kind: Literal["compose"] = "compose"
    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "compose (frame + patch)": {
            "triggers": [
                {"kind": "frame", "thickness": 0.04, "color": "blue"},
                {"kind": "patch", "size": 0.2},
            ]
        }
    }
    implementation: ClassVar[str] = "triggerlab.triggers.compose:build_compose"
    triggers: list[TriggerSpec] = Field(min_length=1, description="trigger specs, applied in order")

    @model_validator(mode="after")
    def _one_stage(self) -> ComposeSpec:
        staged = [i for i, t in enumerate(self.triggers) if t.stage != "model_input"]
        if staged:
            raise ValueError(
                f"triggers[{staged[0]}].stage: a composed trigger is stamped as a whole; set "
                "stage on the compose trigger itself"
            )
        return self

    def in_native_pixels(self, shape: ImageShape) -> SpecBase:
        parts = [t.in_native_pixels(shape) for t in self.triggers]
        return self.model_copy(update={"triggers": parts})


def trigger_examples() -> dict[str, SpecBase]:
    """Every kind's examples, validated: ``{name: spec}`` in the order of ``TriggerSpec``."""
    return {
        name: spec_class.model_validate({"kind": kind, **params})
        for kind, spec_class in TRIGGER_KINDS.items()
        for name, params in spec_class.examples.items()
    }


def describe_spec(spec: SpecBase) -> str:
    """``kind: key=value, ...`` of a trigger spec, for titles and captions."""
    fields = spec.model_dump(mode="json", exclude_defaults=False)
    kind = fields.pop("kind")
    if fields.get("stage") == "model_input":  # the default, said once in the report's checklist
        fields.pop("stage")
    return f"{kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)


TriggerSpec = Annotated[
    PatchSpec
    | ImageSpec
    | FrameSpec
    | LinesSpec
    | BlendSpec
    | SignalSpec
    | RandomPatchSpec
    | WarpSpec
    | QuantizeSpec
    | LowFrequencySpec
    | ReflectionSpec
    | AdaptiveBlendSpec
    | SampleSpecificSpec
    | ComposeSpec,
    Field(discriminator="kind"),
]
ComposeSpec.model_rebuild(_types_namespace={"TriggerSpec": TriggerSpec})

TRIGGER_KINDS: dict[str, type[SpecBase]] = {
    spec.model_fields["kind"].default: spec for spec in get_args(get_args(TriggerSpec)[0])
}
