"""The experiment config: a validated pydantic model, loaded from YAML with ``--set`` overrides.

Every section forbids unknown keys. ``load_config`` turns any problem into one
``ConfigError`` whose message names the offending keys.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from triggerlab.errors import ConfigError
from triggerlab.triggers import TRIGGER_KINDS, PatchSpec, TriggerSpec
from triggerlab.triggers.geometry import int_sequence


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    name: str = Field("digits", description="dataset loader (see `triggerlab datasets`)")
    root: Path | None = Field(None, description="folder holding the dataset files")
    resize: tuple[int, int] | None = Field(
        None, description="resize to N (square) or [H, W] pixels; null keeps the native size"
    )
    channels: Literal[1, 3] | None = Field(
        None, description="1 (luminance) or 3 (grey repeated); null keeps the native channels"
    )
    split: Literal["official", "random", "pretune_finetune"] = Field(
        "official",
        description="official split where the dataset has one, else seeded random (by subject "
        "where subjects are known); pretune_finetune: reference 000's protocol, pre-tune on every "
        "subject but one, fine-tune on finetune_count images of it, test on its other images",
    )
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="test share of a random split")
    test_subjects: list[int] | None = Field(
        None,
        min_length=1,
        description="subjects held out for testing (one for pretune_finetune, whose default is "
        "the last subject); a grid over single subjects is leave-one-subject-out",
    )
    finetune_count: int = Field(
        100, ge=1, description="pretune_finetune: the held-out subject's fine-tuning images"
    )
    seed: int | None = Field(None, ge=0, description="split seed; null follows train.seed")
    options: dict[str, Any] = Field(default_factory=dict, description="loader-specific options")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from triggerlab.data.registry import DATASETS

        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
        return name

    @field_validator("resize", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if int_sequence(value, 2, 1):
            return tuple(value)
        raise ValueError(f"invalid size {value!r}; expected a positive integer or [height, width]")

    @model_validator(mode="after")
    def _one_held_out_subject(self) -> DataConfig:
        if self.split == "pretune_finetune" and self.test_subjects and len(self.test_subjects) > 1:
            raise ValueError(
                f"split pretune_finetune holds out one subject, got test_subjects "
                f"{self.test_subjects}"
            )
        return self


class PoisonConfig(Section):
    rate: float | None = Field(
        None, ge=0.0, le=1.0, description="poisoned share of the training set (default 0.1)"
    )
    count: int | None = Field(None, ge=0, description="exact number of poisoned samples")
    target: int | list[float] = Field(
        0, description="the attacker's target: a class, or a vector in label units for regression"
    )
    label_mode: Literal["all_to_one", "all_to_all", "clean_label"] = "all_to_one"
    source_classes: list[int] | None = Field(
        None, description="classes poisoned samples are drawn from (default: all eligible)"
    )
    mode: Literal["replace", "append"] = Field(
        "replace", description="trigger samples in place, or append triggered copies"
    )

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if isinstance(value, bool | float | str) or (isinstance(value, int) and value < 0):
            raise ValueError(f"expected a class index >= 0 or a list of numbers, got {value!r}")
        if isinstance(value, list) and not value:
            raise ValueError("a regression target needs at least one value")
        return value

    @model_validator(mode="after")
    def _rate_or_count(self) -> PoisonConfig:
        if self.rate is not None and self.count is not None:
            raise ValueError(
                "set either poison.rate or poison.count, not both "
                "(e.g. --set poison.rate=null --set poison.count=100)"
            )
        if self.rate is None and self.count is None:
            self.rate = 0.1
        return self


class ModelConfig(Section):
    name: str = Field("small_cnn", description="architecture (see `triggerlab models`)")
    options: dict[str, Any] = Field(default_factory=dict, description="architecture options")

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from triggerlab.models import MODELS

        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
        return name


class TrainConfig(Section):
    optimizer: Literal["sgd", "adam"] = "adam"
    loss: Literal["auto", "cross_entropy", "l1", "mse"] = Field(
        "auto", description="auto: cross-entropy for classification, L1 for regression"
    )
    lr: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only")
    weight_decay: float = Field(0.0, ge=0.0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine anneals the learning rate to 0 over the epochs"
    )
    epochs: int = Field(10, ge=1, description="training epochs (pre-tuning for pretune_finetune)")
    batch_size: int = Field(64, ge=1)
    finetune_epochs: int = Field(
        5, ge=1, description="data.split pretune_finetune: epochs on the fine-tuning images"
    )
    finetune_lr: float | None = Field(
        None, gt=0.0, description="data.split pretune_finetune: fine-tuning rate (default: lr)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: bool = Field(
        True, description="NHWC memory format: faster convolutions on CPU (oneDNN) and GPU"
    )
    seed: int = Field(
        0, ge=0, description="drives split, poisoning, triggers, init and batch order"
    )


class EvaluationConfig(Section):
    tolerances: list[float] = Field(
        [5.0, 10.0],
        min_length=1,
        description="regression: attack success counts predictions within these errors "
        "of the target "
        "(degrees for gaze and head pose)",
    )

    bins: int | None = Field(
        None, ge=2, description="regression: split one output's range into this many equal bins"
    )
    bin_output: str | None = Field(
        None, description="the output the bins split (default: the first)"
    )
    bin_range: tuple[float, float] | None = Field(
        None, description="[low, high] of the binned output (default: the training labels' range)"
    )

    @field_validator("tolerances")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError(f"tolerances must be positive, got {values}")
        return values

    @field_validator("bin_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"bin_range {list(value)} must satisfy low < high")
        return value


class DefenseConfig(Section):
    kind: Literal[
        "none",
        "finetune",
        "fine_pruning",
        "strip",
        "spectral_signatures",
        "activation_clustering",
        "neural_cleanse",
    ] = Field(
        "none",
        description="repair the model (finetune, fine_pruning), detect triggered inputs (strip), "
        "detect poisoned training samples (spectral_signatures, activation_clustering) or "
        "reverse-engineer triggers per class and unlearn them (neural_cleanse)",
    )
    clean_fraction: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="share of the training split the defender holds back, clean (never poisoned)",
    )
    epochs: int = Field(5, ge=1, description="fine-tuning epochs on the clean data")
    lr: float = Field(1e-3, gt=0.0, description="fine-tuning learning rate (the run's optimiser)")
    prune_ratio: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="fine_pruning: share of the last convolution's channels pruned",
    )
    overlays: int = Field(20, ge=1, description="strip: clean images blended with each input")
    blend: float = Field(
        1.0, gt=0.0, le=1.0, description="strip: overlay weight b in x' = clip(x + b o, 0, 1)"
    )
    false_rejection: float = Field(
        0.05, gt=0.0, lt=1.0, description="strip: share of the defender's clean inputs flagged"
    )
    expected_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="spectral_signatures: assumed poisoned share; 1.5 x it is flagged per class",
    )
    steps: int = Field(300, ge=1, description="neural_cleanse: optimisation steps per class")
    cost: float = Field(
        3.0, gt=0.0, description="neural_cleanse: weight of the mask's mean in the loss"
    )
    unlearn: bool = Field(
        True, description="neural_cleanse: fine-tune with the flagged classes' reversed triggers"
    )
    cluster_share: float = Field(
        0.35,
        gt=0.0,
        lt=0.5,
        description="activation_clustering: a class's smaller cluster is flagged up to this share",
    )


class OutputConfig(Section):
    directory: Path = Field(Path("runs"), description="parent folder of run directories")
    name: str | None = Field(None, description="run directory name (default: generated)")
    save_model: bool = Field(False, description="write model.safetensors")


class ExperimentConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    trigger: TriggerSpec = Field(default_factory=PatchSpec)
    poison: PoisonConfig = Field(default_factory=PoisonConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @field_validator("trigger", mode="before")
    @classmethod
    def _default_kind(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "patch", **value}
        return value

    @property
    def split_seed(self) -> int:
        return self.train.seed if self.data.seed is None else self.data.seed

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        data["trigger"] = {"kind": data["trigger"].pop("kind"), **data["trigger"]}
        return yaml.safe_dump(data, sort_keys=False)


# The experiment `triggerlab run` performs with no config: BadNets on the bundled digits.
DEFAULT_EXPERIMENT: dict[str, Any] = {
    "data": {"name": "digits", "resize": 16},
    "trigger": {"kind": "patch", "color": "white", "size": 3, "position": "bottom_right"},
    "poison": {"rate": 0.1, "target": 0},
    "model": {"name": "small_cnn"},
    "train": {
        "optimizer": "adam",
        "lr": 0.002,
        "lr_schedule": "cosine",
        "epochs": 40,
        "batch_size": 32,
        "seed": 0,
    },
}


def split_assignments(text: str) -> list[str]:
    """Split ``"kind=frame colors=[red, blue]"`` on whitespace outside brackets and quotes."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    quote = ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char.isspace() and depth == 0:
            if current:
                items.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        items.append("".join(current))
    return items


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as a YAML scalar or list)."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(
            f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. poison.rate=0.05"
        )
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: cannot parse the value ({exc})") from exc
    return parts, value


def set_dotted(raw: dict[str, Any], parts: list[str], value: Any, context: str) -> None:
    """Set ``raw[a][b][c] = value`` for ``parts = [a, b, c]``, creating sections as needed.

    Setting a section's ``kind`` to a different value (``trigger.kind=frame``)
    starts that section afresh: the old kind's parameters would not fit the new
    one. ``context`` names the setting in error messages.
    """
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"{context}: {prefix} is a value, not a section")
        node = child
    if parts[-1] == "kind" and node.get("kind", value) != value:
        node.clear()
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides to a deep copy of a raw config mapping."""
    result = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        set_dotted(result, parts, value, f"--set {item!r}")
    return result


def section_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (the parent of an unknown key)."""
    cls: type[BaseModel] = ExperimentConfig
    for part in loc:
        if isinstance(part, str) and part in TRIGGER_KINDS and cls is not ExperimentConfig:
            cls = TRIGGER_KINDS[part]
            continue
        field = cls.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            cls = annotation
        elif part == "trigger":
            cls = PatchSpec
        else:
            return []
    is_trigger = cls in TRIGGER_KINDS.values()  # their kind is the tag, set first; list the rest
    return [n for n in cls.model_fields if not (is_trigger and n == "kind")]


def _is_union_tag(loc: tuple[Any, ...], i: int) -> bool:
    """Pydantic inserts the discriminator value ("patch") into locations; users never write it."""
    return (
        i > 0
        and loc[i] in TRIGGER_KINDS
        and (loc[i - 1] == "trigger" or isinstance(loc[i - 1], int))
    )


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        parts = [p for i, p in enumerate(loc) if not _is_union_tag(loc, i)]
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
        key = key or "(top level)"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = section_keys(loc[:-1])
            message = "unknown key" + (f"; expected one of {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            message = "required key is missing"
        elif "input" in e and e["type"] not in ("union_tag_invalid", "value_error"):
            message += f" (got {e['input']!r})"
        lines.append(f"  {key}: {message}")
    return f"invalid config {source}:\n" + "\n".join(lines)


def validate_config(raw: Any, source: str = "") -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid config {source}: expected a mapping of sections, got {type(raw).__name__}"
        )
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc})") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The config at ``path`` (or the embedded default) with ``--set`` overrides applied."""
    raw = DEFAULT_EXPERIMENT if path is None else read_yaml(path)
    source = "(embedded default)" if path is None else str(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid config {source}: expected a mapping of sections, got {type(raw).__name__}"
        )
    return validate_config(apply_overrides(raw, overrides or []), source)
