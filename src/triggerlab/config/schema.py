"""The experiment schema: one pydantic section per part of an experiment; every section
forbids unknown keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from triggerlab.catalogue.datasets import DATASETS
from triggerlab.catalogue.defenses import DEFENSE_KINDS, DefenseKind, NoDefenseSpec
from triggerlab.catalogue.geometry import int_sequence
from triggerlab.catalogue.papers import TRIGGER_PAPERS, preset_of
from triggerlab.catalogue.triggers import TRIGGER_KINDS, PatchSpec, TriggerSpec
from triggerlab.config.model_section import UNION_MEMBER_TAGS, ModelConfig
from triggerlab.config.section import MAX_EPOCHS, MAX_LR, MAX_SEED, MAX_SIDE, Section, plain_name

# Sections that are a tagged union of kinds, and each one's kinds.
UNION_SECTIONS: dict[str, dict[str, type[BaseModel]]] = {
    "trigger": TRIGGER_KINDS,  # type: ignore[dict-item]
    "defense": DEFENSE_KINDS,  # type: ignore[dict-item]
}
__all__ = ["MAX_SEED", "UNION_MEMBER_TAGS", "ModelConfig", "plain_name"]

LabelMode = Literal["all_to_one", "all_to_all", "clean_label"]
# The rate a clean-label run poisons when neither poison.rate nor poison.count is set: half the
# target class of a balanced ten-class training set (the default 0.1 is all of it, or one image
# more than the class holds once rounded), and the rate BackdoorBench's leaderboard runs SIG at.
CLEAN_LABEL_RATE = 0.05
DEFAULT_RATE = 0.1


def paper_label_mode(kind: str, target: Any) -> LabelMode:
    """``poison.label_mode: paper`` resolved: the label mode the trigger kind's paper poisoned
    with (``catalogue/papers.py``); all_to_one for a regression target (a list of values: a
    regression task supports only all_to_one) and for combinators, whose label mode is "any".

    A combination (``compose``) is no paper's attack, so it stays dirty-label even when its
    parts' papers agree: its label mode is set by name (``label_mode: clean_label``).
    """
    paper = TRIGGER_PAPERS.get(kind)
    if isinstance(target, list) or paper is None or paper.label_mode == "any":
        return "all_to_one"
    return paper.label_mode  # type: ignore[return-value]


class DataConfig(Section):
    name: str = Field("digits", description="dataset loader (see `triggerlab datasets`)")
    root: Path | None = Field(None, description="folder holding the dataset files")
    download: bool = Field(
        False,
        description="fetch the dataset into data.root (default: the per-user cache) when its "
        "files are missing (mnist, cifar10, cifar100, gtsrb, tinyimagenet)",
    )
    resize: tuple[int, int] | None = Field(
        None,
        description="resize to N (square) or [H, W] pixels; null keeps the native size; left "
        "out, the dataset's run size (digits: 16, as their native 8 fit few models)",
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
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="split seed; null follows train.seed"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="loader-specific options")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
        return name

    @model_validator(mode="before")
    @classmethod
    def _run_size(cls, data: Any) -> Any:
        """``resize`` left out (not null): the size a run of the dataset uses by default."""
        if not isinstance(data, dict) or "resize" in data:
            return data
        name = data.get("name", cls.model_fields["name"].default)
        dataset = DATASETS.get(name) if isinstance(name, str) else None  # else: refused later
        if dataset is None or dataset.run_size is None:
            return data
        return {**data, "resize": dataset.run_size}

    @field_validator("root")
    @classmethod
    def _files_to_read(cls, root: Path | None, info: ValidationInfo) -> Path | None:
        info_of = DATASETS.get(info.data.get("name", ""))
        if root is not None and info_of is not None and not info_of.needs_root:
            raise ValueError(
                f"dataset {info_of.name!r} reads no files ({info_of.layout}), so a root would "
                "be ignored; expected null"
            )
        return root

    @field_validator("resize", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if int_sequence(value, 2, 1, MAX_SIDE):
            return tuple(value)
        raise ValueError(
            f"invalid size {value!r}; expected an integer 1-{MAX_SIDE} or [height, width]"
        )

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
        None,
        ge=0.0,
        le=1.0,
        description="poisoned share of the training set (default 0.1; 0.05 for a clean-label "
        "run, whose poisoned samples are all of the target class)",
    )
    count: int | None = Field(None, ge=0, le=10**9, description="exact number of poisoned samples")
    target: int | list[float] = Field(
        0, description="the attacker's target: a class, or a vector in label units for regression"
    )
    label_mode: Literal["paper", "all_to_one", "all_to_all", "clean_label"] = Field(
        "paper",
        description="all_to_one: poisoned samples of other classes are relabelled the target; "
        "all_to_all: class y becomes y + 1; clean_label: target-class images carry the trigger, "
        "labels kept; paper: the trigger kind's paper (clean_label for signal and reflection, "
        "all_to_one for the others and for regression)",
    )
    source_classes: list[int] | None = Field(
        None, description="classes poisoned samples are drawn from (default: all eligible)"
    )
    mode: Literal["replace", "append"] = Field(
        "replace", description="trigger samples in place, or append triggered copies"
    )
    sources: Literal["non_target", "all"] = Field(
        "non_target",
        description="all_to_one: draw poisoned samples from non-target classes only (every one "
        "changes label), or from all classes, target included (as BackdoorBench does)",
    )
    schedule: Literal["paper", "static", "per_batch"] = Field(
        "paper",
        description="static: poison a fixed set once, before training; per_batch: poison the "
        "first int(rate x batch) eligible samples of every training batch anew (WaNet, "
        "BppAttack); paper: the trigger kind's paper (per_batch for warp and quantize, static "
        "for the others)",
    )
    rounding: Literal["nearest", "down"] = Field(
        "nearest",
        description="how rate x training samples becomes a count: nearest (Python's round, "
        "halves to even) or down (int(), as the code of references 001 and 002)",
    )

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if isinstance(value, bool | float | str) or (isinstance(value, int) and value < 0):
            raise ValueError(f"expected a class index >= 0 or a list of numbers, got {value!r}")
        if isinstance(value, list) and not value:
            raise ValueError("a regression target needs at least one value")
        if isinstance(value, int) and value > 100_000:
            raise ValueError(f"class {value} is beyond any dataset's classes")
        return value

    @model_validator(mode="after")
    def _rate_or_count(self) -> PoisonConfig:
        if self.rate is not None and self.count is not None:
            raise ValueError(
                "set either poison.rate or poison.count, not both (set the other to null)"
            )
        if self.rate is None and self.count is None:
            self.rate = CLEAN_LABEL_RATE if self.label_mode == "clean_label" else DEFAULT_RATE
        if self.sources == "all" and self.label_mode == "clean_label":
            raise ValueError(
                "poison.sources: all draws from every class, but a clean-label attack only "
                "poisons images of the target class (set sources to non_target)"
            )
        return self


class TrainConfig(Section):
    optimizer: Literal["sgd", "adam"] = "adam"
    loss: Literal["auto", "cross_entropy", "l1", "mse"] = Field(
        "auto", description="auto: cross-entropy for classification, L1 for regression"
    )
    lr: float = Field(0.002, gt=0.0, le=MAX_LR)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="cosine anneals the learning rate to 0 over the epochs"
    )
    epochs: int = Field(
        40, ge=1, le=MAX_EPOCHS, description="training epochs (pre-tuning for pretune_finetune)"
    )
    batch_size: int = Field(32, ge=1, le=1_000_000)
    finetune_epochs: int = Field(
        5,
        ge=1,
        le=MAX_EPOCHS,
        description="data.split pretune_finetune: epochs on the fine-tuning images",
    )
    finetune_lr: float | None = Field(
        None,
        gt=0.0,
        le=MAX_LR,
        description="data.split pretune_finetune: fine-tuning rate (default: lr)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: bool = Field(
        True, description="NHWC memory format: faster convolutions on CPU (oneDNN) and GPU"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="fp32, or mixed precision by autocast: bf16 (CPU or GPU), fp16 (GPU, with a "
        "gradient scaler); evaluation uses the same",
    )
    compile: bool = Field(
        False, description="torch.compile the model for training (falls back with a warning)"
    )
    augment: list[Literal["random_crop", "hflip"]] = Field(
        default_factory=list,
        description="batched on-device augmentation of training batches: random_crop (pad, "
        "then crop back at a random offset), hflip (mirror half the images)",
    )
    crop_padding: int = Field(4, ge=0, le=256, description="random_crop: pixels of zero padding")
    checkpoint_every: int = Field(
        0,
        ge=0,
        le=MAX_EPOCHS,
        description="write a checkpoint every N epochs (0: never); a killed run continues from it",
    )
    keep_checkpoints: bool = Field(
        False, description="keep the last checkpoint when the run completes"
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="drives split, poisoning, triggers, init and batch order"
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads torch uses (null: torch's default, all cores); results depend "
        "on it at the last digits, so grids record theirs here",
    )

    @field_validator("augment")
    @classmethod
    def _once_each(cls, operations: list[str]) -> list[str]:
        if len(set(operations)) != len(operations):
            raise ValueError(f"each augmentation at most once, got {operations}")
        return operations


DEFAULT_TOLERANCES = (5.0, 10.0)


class EvaluationConfig(Section):
    tolerances: list[float] | None = Field(
        None,
        min_length=1,
        description="regression: attack success counts predictions within these errors "
        "of the target, in the labels' error unit (degrees for gaze and head pose); "
        "null: 5 and 10",
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
    def _positive(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and any(v <= 0 for v in values):
            raise ValueError(f"tolerances must be positive, got {values}")
        return values

    @model_validator(mode="after")
    def _bins_settings_need_bins(self) -> EvaluationConfig:
        if self.bins is None:
            extra = [k for k in ("bin_output", "bin_range") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{' and '.join(extra)} only apply with evaluation.bins set")
        return self

    @property
    def resolved_tolerances(self) -> tuple[float, ...]:
        return tuple(self.tolerances) if self.tolerances is not None else DEFAULT_TOLERANCES

    @field_validator("bin_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"bin_range {list(value)} must satisfy low < high")
        return value


class OutputConfig(Section):
    directory: Path = Field(Path("runs"), description="parent folder of run directories")
    name: str | None = Field(
        None, description="run directory name, one plain folder name (default: generated)"
    )
    save_model: bool = Field(False, description="write model.safetensors")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return plain_name(value)


class ExperimentConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    trigger: TriggerSpec = Field(default_factory=PatchSpec)
    poison: PoisonConfig = Field(default_factory=PoisonConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    defense: DefenseKind = Field(default_factory=NoDefenseSpec)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="before")
    @classmethod
    def _preset_poisoning(cls, data: Any) -> Any:
        """A trigger preset's poisoning settings (its paper's label mode) under those given, and
        the clean-label default rate when the paper's label mode is clean-label."""
        if not isinstance(data, dict):
            return data
        trigger, poison = data.get("trigger"), data.get("poison", {})
        if not isinstance(poison, dict):
            return data
        if isinstance(trigger, dict):
            kind = str(trigger.get("kind", "patch"))
            name = trigger.get("preset")
            preset = None if name is None else preset_of(kind, str(name))
            if preset is not None:  # else no preset, or an unknown one the trigger's check names
                poison = {**preset.poison, **poison}
        elif isinstance(trigger, BaseModel) or trigger is None:  # a built spec, or the patch
            kind = str(getattr(trigger, "kind", "patch"))
        else:  # not a trigger: its validation names it
            return data
        if poison.get("rate") is None and poison.get("count") is None:
            # A clean-label run by its paper: its default rate must fit the target class
            mode = poison.get("label_mode", "paper")
            if mode == "paper" and paper_label_mode(kind, poison.get("target", 0)) == "clean_label":
                poison = {**poison, "rate": CLEAN_LABEL_RATE}
        return {**data, "poison": poison}

    @field_validator("trigger", "defense", mode="before")
    @classmethod
    def _default_kind(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "patch" if info.field_name == "trigger" else "none", **value}
        return value

    @model_validator(mode="after")
    def _per_batch_fits(self) -> ExperimentConfig:
        """Per-batch poisoning rewrites samples in place, at least one in a full batch."""
        if self.poison_schedule != "per_batch":
            return self
        why = f"(poison.schedule {self.poison.schedule}, trigger.kind {self.trigger.kind})"
        if self.trigger.stage == "native":  # the loop sees the model's inputs only
            raise ValueError(
                f"trigger.stage: native stamps the stored images before resizing, but poisoning "
                f"is per_batch {why}, which triggers the model's inputs inside the training "
                "loop; set trigger.stage: model_input, or poison.schedule: static"
            )
        if self.poison.mode == "append":
            raise ValueError(
                "poison.mode: append adds triggered copies to the training set, but poisoning "
                f"is per_batch {why}, which poisons samples inside each batch; set "
                "poison.schedule: static to append"
            )
        rate, batch = self.poison.rate, self.train.batch_size
        if rate is not None and rate > 0 and int(batch * rate) == 0:
            raise ValueError(
                f"poison.rate: {rate:g} of a batch of {batch} (train.batch_size) is "
                f"{batch * rate:g} samples, which per-batch poisoning {why} truncates to 0, "
                "as its authors' code does: no sample would be poisoned; expected a rate of at "
                f"least 1/{batch}, a larger batch, or poison.schedule: static"
            )
        return self

    @model_validator(mode="after")
    def _clean_label_sources(self) -> ExperimentConfig:
        """``sources: all`` with the paper's label mode when that is clean-label (an explicit
        ``label_mode: clean_label`` is refused by the poison section itself)."""
        poison = self.poison
        paper_clean = poison.label_mode == "paper" and self.poison_label_mode == "clean_label"
        if poison.sources == "all" and paper_clean:
            raise ValueError(
                f"poison.sources: all draws from every class, but poison.label_mode: paper "
                f"is clean_label for trigger.kind {self.trigger.kind} (its paper's protocol), "
                "which poisons only images of the target class; set poison.label_mode: "
                "all_to_one for the dirty-label form, or poison.sources: non_target"
            )
        return self

    @model_validator(mode="after")
    def _pool_at_the_stamped_size(self) -> ExperimentConfig:
        """Refool's dataset pool draws the training images as the model takes them."""
        trigger = self.trigger
        if trigger.stage == "native" and getattr(trigger, "pool", None) == "dataset":
            raise ValueError(
                "trigger.pool: dataset draws reflections from the training images at the "
                "model's input size, but trigger.stage: native stamps the stored images; set "
                "trigger.stage: model_input, or pool: scenes or files"
            )
        return self

    @property
    def poisons_nothing(self) -> bool:
        """No training sample is poisoned (a clean baseline): ``count`` 0, or ``rate`` 0."""
        if self.poison.count is not None:
            return self.poison.count == 0
        return self.poison.rate == 0

    @property
    def poison_schedule(self) -> Literal["static", "per_batch"]:
        """``poison.schedule`` with ``paper`` resolved by the trigger kind."""
        schedule = self.poison.schedule
        return self.trigger.paper_schedule if schedule == "paper" else schedule

    @property
    def poison_label_mode(self) -> LabelMode:
        """``poison.label_mode`` with ``paper`` resolved by the trigger kind and the task."""
        mode = self.poison.label_mode
        if mode == "paper":
            return paper_label_mode(self.trigger.kind, self.poison.target)
        return mode

    @property
    def poisoning(self) -> PoisonConfig:
        """The poison section as a run uses it: its label mode resolved."""
        if self.poison.label_mode != "paper":
            return self.poison
        return self.poison.model_copy(update={"label_mode": self.poison_label_mode})

    @property
    def split_seed(self) -> int:
        return self.train.seed if self.data.seed is None else self.data.seed

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        for section in UNION_SECTIONS:  # the tag first, as people write it
            data[section] = {"kind": data[section].pop("kind"), **data[section]}
        return yaml.safe_dump(data, sort_keys=False)


# The experiment `triggerlab run` performs with no config: every setting at its default (BadNets
# on the bundled digits at 16 px). A file or grid base sets what differs from it; configs/
# default.yaml writes it out, and a test keeps the two equal.
DEFAULT_EXPERIMENT: dict[str, Any] = {}
