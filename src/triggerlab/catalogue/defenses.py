"""Defence declarations: every kind's validated parameters and what it needs, without its
implementation.

A spec names the function that runs it (``implementation``, ``module:function``
taking the spec and a ``DefenseInputs``), so validating a config or listing the
defences never imports torch. Families: repairs (``finetune``, ``fine_pruning``,
``nad``, ``anp``, ``clp``, ``ibau``), training-time (``abl``), input detectors
(``strip``, ``scale_up``), training-sample detectors (``spectral_signatures``,
``activation_clustering``) and model inspection with repair (``neural_cleanse``).
Adding a defence is one implementation module in ``triggerlab/defenses/`` and one
spec class here, added to ``DefenseKind``.

A kind may offer named presets (``defense.preset``): the settings its authors ran,
filled in for every setting the config leaves out. A kind marked ``oracle`` is handed
the test set and the poisoned samples (``defenses/leakage.py``): a bound for
comparison, never a defence, so its name must start with ``oracle_``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import ConfigDict, Field, model_validator

from triggerlab.catalogue.implementation import implementation_of
from triggerlab.catalogue.strict import StrictNumbers
from triggerlab.errors import ConfigError

Augmentation = Literal["random_crop", "hflip"]  # train.augment's operations


class DefenseSpec(StrictNumbers):
    """A validated defence description; subclasses add their parameters and ``run``."""

    # every number, list elements included, is finite: NaN and infinity are refused by key
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    needs_classes: ClassVar[bool] = False  # it reads class probabilities or class labels
    holds_back_data: ClassVar[bool] = False  # it uses clean training samples set aside

    implementation: ClassVar[str]  # "module:function" running the defence on its inputs
    # It is handed the test set and the poisoned indices (OracleInputs): a bound for
    # comparison. Such a kind must be named ``oracle_...`` so no table mistakes it for a defence.
    oracle: ClassVar[bool] = False
    # Named settings (the authors' protocol): a preset fills every setting the config omits.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("kind")
        kind = field.default if field is not None else None
        if cls.oracle and not (isinstance(kind, str) and kind.startswith("oracle_")):
            raise TypeError(
                f"{cls.__name__} is an oracle (it sees the test set or the poisoned samples); "
                f"its kind must be named oracle_..., not {kind!r}"
            )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """The preset's settings under those given: what the config says wins."""
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        values = cls.presets.get(data["preset"])
        if values is None:  # the preset field's own validation names the presets there are
            return data
        return {**values, **data}

    def check_model(self, model: Any) -> None:
        """Refuse, before any work, parameters that do not fit the run's model (ConfigError)."""

    def run(self, inputs: Any) -> Any:
        """Run the defence on a ``DefenseInputs``; returns its ``DefenseOutcome``."""
        return implementation_of(self.implementation)(self, inputs)


class NoDefenseSpec(DefenseSpec):
    """No defence: the model is evaluated as trained."""

    kind: Literal["none"] = "none"
    implementation: ClassVar[str] = "triggerlab.defenses.base:run_none"


class HeldBackSpec(DefenseSpec):
    """A defence that works from clean samples the defender holds back from training."""

    holds_back_data: ClassVar[bool] = True
    clean_fraction: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="share of the training split the defender holds back, clean (never poisoned)",
    )
    clean_samples: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="hold back about this many clean samples instead (stratified by class)",
    )

    def held_back_share(self, training_size: int) -> float:
        """The share of a training split of ``training_size`` samples to hold back."""
        if self.clean_samples is None:
            return self.clean_fraction
        if self.clean_samples >= training_size:
            raise ConfigError(
                f"defense.clean_samples: {self.clean_samples} is not less than the "
                f"{training_size} samples of the training split; expected at most "
                f"{training_size - 1}, so that some remain to train on"
            )
        return self.clean_samples / training_size


class RetrainingSpec(HeldBackSpec):
    """A defence that fine-tunes on the held-back data: by default with the run's optimiser,
    batch size and augmentation at a constant ``lr``; each can be set apart."""

    epochs: int = Field(5, ge=1, le=10_000, description="fine-tuning epochs on the clean data")
    lr: float = Field(
        1e-3, gt=0.0, le=10.0, description="fine-tuning learning rate (the run's optimiser)"
    )
    optimizer: Literal["run", "sgd"] = Field(
        "run", description="run: the run's optimiser; sgd: SGD with momentum (the authors')"
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="optimizer sgd: its momentum")
    nesterov: bool = Field(False, description="optimizer sgd: Nesterov momentum")
    weight_decay: float | None = Field(
        None, ge=0.0, le=1.0, description="fine-tuning weight decay (null: the run's)"
    )
    batch_size: int | None = Field(
        None, ge=1, le=1_000_000, description="fine-tuning batch size (null: the run's)"
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine anneals lr to 0 over the fine-tuning epochs"
    )
    lr_steps: list[tuple[Annotated[int, Field(le=10_000)], Annotated[float, Field(le=10.0)]]] = (
        Field(
            default_factory=list,
            max_length=16,
            description="[[epoch, lr], ...]: from that epoch (counted from 0) on, that rate",
        )
    )
    augment: list[Augmentation] | None = Field(
        None,
        description="augmentation while fine-tuning (null: the run's train.augment, "
        "with its crop_padding)",
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> RetrainingSpec:
        if self.lr_steps and self.lr_schedule != "constant":
            raise ValueError("lr_steps and lr_schedule cosine exclude each other; choose one")
        epochs = [epoch for epoch, _ in self.lr_steps]
        if epochs != sorted(set(epochs)) or any(e < 0 for e in epochs):
            raise ValueError(f"lr_steps: epochs must rise and be at least 0, got {epochs}")
        if any(lr <= 0 for _, lr in self.lr_steps):
            raise ValueError("lr_steps: every rate must be positive")
        if self.augment is not None and len(set(self.augment)) != len(self.augment):
            raise ValueError(f"augment: each augmentation at most once, got {self.augment}")
        return self


class FinetuneSpec(RetrainingSpec):
    """Train on the held-back clean data alone."""

    kind: Literal["finetune"] = "finetune"
    implementation: ClassVar[str] = "triggerlab.defenses.finetune:run_finetune"


# SCLBD/BackdoorBench config/defense/fp/config.yaml: its pruning and its fine-tuning. It
# fine-tunes with its dataset's training transform (crop, and flip on CIFAR-10): the run's.
FINE_PRUNING_BACKDOORBENCH: dict[str, Any] = {
    "acc_ratio": 0.1,
    "step_ratio": 0.01,
    "clean_fraction": 0.05,
    "epochs": 100,
    "lr": 0.01,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 256,
    "lr_schedule": "cosine",
}


class FinePruningSpec(RetrainingSpec):
    """Prune the least active channels of the classifier's input on clean data, then fine-tune."""

    kind: Literal["fine_pruning"] = "fine_pruning"
    implementation: ClassVar[str] = "triggerlab.defenses.fine_pruning:run_fine_pruning"
    presets: ClassVar[dict[str, dict[str, Any]]] = {"backdoorbench": FINE_PRUNING_BACKDOORBENCH}
    preset: Literal["backdoorbench"] | None = Field(
        None,
        description="backdoorbench: its progressive pruning (acc_ratio 0.1, steps of 1 %) "
        "and fine-tuning (SGD 0.01, cosine, 100 epochs, batch 256)",
    )
    prune_ratio: float = Field(
        0.5, ge=0.0, lt=1.0, description="share of the classifier's input channels pruned"
    )
    acc_ratio: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="prune progressively instead, until the defender's clean accuracy falls by "
        "this share of its unpruned value (BackdoorBench: 0.1)",
    )
    step_ratio: float = Field(
        0.01, gt=0.0, le=1.0, description="acc_ratio: share of the channels pruned per step"
    )


# garrisongys/STRIP, STRIP_CIFAR10DeepArchit_Tb.ipynb cells 19 and 22: 100 overlays per
# input, threshold at a false rejection rate of 1 % (norm.ppf(0.01) of the clean entropies).
STRIP_AUTHORS: dict[str, Any] = {"overlays": 100, "false_rejection": 0.01}


class StripSpec(HeldBackSpec):
    """Flag test inputs whose predictions stay confident under superimposed clean images."""

    kind: Literal["strip"] = "strip"
    implementation: ClassVar[str] = "triggerlab.defenses.strip:run_strip"
    needs_classes: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {"authors": STRIP_AUTHORS}
    preset: Literal["authors"] | None = Field(
        None, description="authors: STRIP's own budget (100 overlays, 1 % false rejection)"
    )
    overlays: int = Field(
        20, ge=1, le=1000, description="clean images blended with each input (paper: 100)"
    )
    blend: float = Field(
        1.0, gt=0.0, le=1.0, description="overlay weight b in x' = clip(x + b o, 0, 1)"
    )
    false_rejection: float = Field(
        0.05, gt=0.0, lt=1.0, description="share of the defender's clean inputs flagged"
    )


class SpectralSignaturesSpec(DefenseSpec):
    """Flag the training samples furthest along their class's top singular direction."""

    kind: Literal["spectral_signatures"] = "spectral_signatures"
    implementation: ClassVar[str] = (
        "triggerlab.defenses.spectral_signatures:run_spectral_signatures"
    )
    expected_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="assumed poisoned share; 1.5 x it is flagged per class",
    )


class ActivationClusteringSpec(DefenseSpec):
    """Flag the smaller of two activation clusters in each class."""

    kind: Literal["activation_clustering"] = "activation_clustering"
    implementation: ClassVar[str] = (
        "triggerlab.defenses.activation_clustering:run_activation_clustering"
    )
    cluster_share: float = Field(
        0.35,
        gt=0.0,
        lt=0.5,
        description="a class's smaller cluster is flagged up to this share",
    )


# bolunwang/backdoor: gtsrb_visualize_example.py:50-67 (1,000 steps of NB_SAMPLE 1000 //
# BATCH_SIZE 32 = 31 mini-batches, init_cost 1e-3, success 0.99) and
# mad_outlier_detection.py:35-59 (flag below the median with an index above 2, no other
# condition: max_norm_ratio 1).
NEURAL_CLEANSE_AUTHORS: dict[str, Any] = {
    "steps": 1000,
    "batches_per_step": 31,
    "init_cost": 1e-3,
    "attack_success": 0.99,
    "anomaly_threshold": 2.0,
    "max_norm_ratio": 1.0,
}


class NeuralCleanseSpec(RetrainingSpec):
    """Reverse-engineer a trigger per class, flag outliers, and unlearn their triggers."""

    kind: Literal["neural_cleanse"] = "neural_cleanse"
    implementation: ClassVar[str] = "triggerlab.defenses.neural_cleanse:run_neural_cleanse"
    needs_classes: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {"authors": NEURAL_CLEANSE_AUTHORS}
    preset: Literal["authors"] | None = Field(
        None,
        description="authors: Neural Cleanse's own reversal budget (1,000 steps of 31 "
        "mini-batches of 32) and outlier rule (max_norm_ratio 1)",
    )
    steps: int = Field(200, ge=1, le=100_000, description="most optimisation steps per class")
    batches_per_step: int = Field(10, ge=1, le=10_000, description="mini-batches of 32 per step")
    init_cost: float = Field(
        1e-3, gt=0.0, le=1e3, description="mask-norm weight once the trigger first succeeds"
    )
    attack_success: float = Field(
        0.99, gt=0.0, le=1.0, description="success a reversed trigger must reach to count"
    )
    anomaly_threshold: float = Field(2.0, gt=0.0, le=100.0, description="flag above this index")
    max_norm_ratio: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="and only a mask at most this share of the median's (1: the paper's rule)",
    )
    unlearn: bool = Field(True, description="fine-tune with the flagged classes' reversed triggers")


# bboylyg/NAD: config.py:15-25 (epochs, batch, lr, momentum, weight decay, ratio, betas, p),
# main.py:143-147 (Nesterov SGD), utils/util.py:68-79 (0.1, then 0.01 from epoch 2),
# data_loader.py:10-16 (crop with padding 4, flip); the teacher: README, BackdoorBench te_epochs.
NAD_AUTHORS: dict[str, Any] = {
    "clean_fraction": 0.05,
    "epochs": 20,
    "teacher_epochs": 10,
    "lr": 0.1,
    "lr_steps": [(2, 0.01)],
    "optimizer": "sgd",
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 1e-4,
    "batch_size": 64,
    "augment": ["random_crop", "hflip"],
    # betas: the default (null) is the authors' 500, 1000, 1000, the last of them on a model
    # with fewer stages
    "p": 2.0,
}


# A NAD weight far above the authors' (500, 1000) makes the attention term swamp the task loss.
Beta = Annotated[float, Field(ge=0.0, le=1e5)]


class NadSpec(RetrainingSpec):
    """Fine-tune a teacher on clean data, then distil its attention into the backdoored model."""

    kind: Literal["nad"] = "nad"
    implementation: ClassVar[str] = "triggerlab.defenses.nad:run_nad"
    presets: ClassVar[dict[str, dict[str, Any]]] = {"authors": NAD_AUTHORS}
    preset: Literal["authors"] | None = Field(
        None,
        description="authors: NAD's own schedule (20 epochs, SGD 0.1 then 0.01 from epoch 2, "
        "crop and flip, batch 64; teacher 10 epochs)",
    )
    teacher_epochs: int = Field(10, ge=1, le=10_000, description="the teacher's fine-tuning epochs")
    betas: Annotated[list[Beta], Field(min_length=1, max_length=8)] | None = Field(
        None,
        description="attention-loss weight (0 to 1e5) of each of the model's last stages, "
        "earliest first, at most one per stage; null: the authors' 500, 1000, 1000 (the last "
        "of them on a model with fewer stages)",
    )
    p: float = Field(2.0, gt=0.0, le=8.0, description="power of the attention maps")

    def check_model(self, model: Any) -> None:
        implementation_of("triggerlab.defenses.nad:stage_betas")(self, model)


class AnpSpec(HeldBackSpec):
    """Prune the neurons that adversarial perturbation shows to be backdoor-sensitive."""

    kind: Literal["anp"] = "anp"
    implementation: ClassVar[str] = "triggerlab.defenses.anp:run_anp"
    needs_classes: ClassVar[bool] = True
    iterations: int = Field(2000, ge=1, le=1_000_000, description="mask optimisation steps")
    batch_size: int = Field(128, ge=1, le=65536, description="clean images per step")
    eps: float = Field(0.4, gt=0.0, le=1.0, description="bound of the neuron perturbations")
    alpha: float = Field(0.2, ge=0.0, le=1.0, description="weight of the unperturbed loss")
    mask_lr: float = Field(0.2, gt=0.0, le=100.0, description="learning rate of the masks")
    threshold: float = Field(
        0.2, ge=0.0, lt=1.0, description="prune neurons whose mask is at or below"
    )


class ClpSpec(DefenseSpec):
    """Prune the channels with an outlying Lipschitz bound, without any data."""

    kind: Literal["clp"] = "clp"
    implementation: ClassVar[str] = "triggerlab.defenses.clp:run_clp"
    u: float = Field(3.0, gt=0.0, le=100.0, description="prune above mean + u x std per layer")


class IbauSpec(HeldBackSpec):
    """Unlearn the universal adversarial perturbation a backdoor creates, by implicit
    hypergradient on the defender's clean data."""

    kind: Literal["ibau"] = "ibau"
    implementation: ClassVar[str] = "triggerlab.defenses.ibau:run_ibau"
    needs_classes: ClassVar[bool] = True
    rounds: int = Field(5, ge=1, le=10_000, description="perturbation-and-unlearning rounds")
    fixed_point_iterations: int = Field(5, ge=1, le=1000, description="K of the hypergradient")
    batch_size: int = Field(100, ge=1, le=65536, description="clean images per batch")
    lr: float = Field(1e-4, gt=0.0, le=10.0, description="Adam learning rate of the outer steps")
    bound: float = Field(
        0.18, gt=0.0, le=10.0, description="L2 bound of the perturbation, x the all-ones norm"
    )
    portion: float = Field(
        0.01, gt=0.0, le=1.0, description="share of each batch carrying the perturbation"
    )


# bboylyg/ABL config.py:20-34: tuning_epochs 10, finetuning_epochs 60, unlearning_epochs 5
# of which the first only evaluates (backdoor_unlearning.py:129-243), so 4 epochs of
# ascent; isolation_ratio 0.01, gradient_ascent_type Flooding with gamma (flooding) 0.5,
# lr_unlearning 5e-4.
ABL_AUTHORS: dict[str, Any] = {
    "isolation_epochs": 10,
    "isolation_loss": "flooding",
    "gamma": 0.5,
    "isolation_ratio": 0.01,
    "finetune_epochs": 60,
    "unlearn_epochs": 4,
    "unlearn_lr": 5e-4,
}


class AblSpec(DefenseSpec):
    """Train afresh on the poisoned set, isolating and then unlearning the easiest samples."""

    kind: Literal["abl"] = "abl"
    implementation: ClassVar[str] = "triggerlab.defenses.abl:run_abl"
    needs_classes: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {"authors": ABL_AUTHORS}
    preset: Literal["authors"] | None = Field(
        None,
        description="authors: ABL's own epochs (isolation 10 with Flooding, fine-tuning 60, "
        "unlearning 4 of ascent: the config's 5, the first of which only evaluates)",
    )
    isolation_epochs: int = Field(
        20, ge=1, le=10_000, description="epochs of isolation training (LGA or Flooding)"
    )
    isolation_loss: Literal["lga", "flooding"] = Field(
        "lga",
        description="lga: sign(L - gamma) L (the paper); flooding: |L - gamma| + gamma "
        "(the authors' code's default)",
    )
    isolation_ratio: float = Field(
        0.01, gt=0.0, lt=1.0, description="share of training samples isolated"
    )
    gamma: float = Field(
        0.5, gt=0.0, le=100.0, description="the loss level LGA or Flooding holds the batch at"
    )
    finetune_epochs: int = Field(
        20, ge=0, le=10_000, description="epochs on the other samples before unlearning"
    )
    lr: float | None = Field(
        None, gt=0.0, le=10.0, description="learning rate of isolation and fine-tuning (the run's)"
    )
    unlearn_epochs: int = Field(20, ge=1, le=10_000, description="epochs of gradient ascent")
    unlearn_lr: float = Field(5e-4, gt=0.0, le=10.0, description="SGD learning rate of unlearning")


# THUYimingLi/BackdoorBox core/defenses/SCALE_UP.py:21-165: scales 3-11 in steps of 2, one
# mean and standard deviation of the clean SPC (init_spc_norm, lines 49-77), flagged at a
# standardised score of at least 0.5 (lines 28-29).
SCALE_UP_BACKDOORBOX: dict[str, Any] = {
    "scales": [3.0, 5.0, 7.0, 9.0, 11.0],
    "standardise": "overall",
    "threshold": 0.5,
}


class ScaleUpSpec(HeldBackSpec):
    """Flag test inputs whose prediction survives amplifying their pixel values."""

    kind: Literal["scale_up"] = "scale_up"
    implementation: ClassVar[str] = "triggerlab.defenses.scale_up:run_scale_up"
    needs_classes: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {"backdoorbox": SCALE_UP_BACKDOORBOX}
    preset: Literal["backdoorbox"] | None = Field(
        None,
        description="backdoorbox: BackdoorBox's SCALE-UP (one mean and deviation over the "
        "clean data, flagged at a score of at least 0.5)",
    )
    standardise: Literal["per_class", "overall"] = Field(
        "per_class",
        description="per_class: the clean SPC's mean and deviation of the input's predicted "
        "class (the paper); overall: one of each over all clean data (BackdoorBox)",
    )
    threshold: float | None = Field(
        None,
        ge=-100.0,
        le=100.0,
        description="flag a standardised score at least this (null: the 1 - false_rejection "
        "quantile of the defender's clean scores)",
    )
    # above 255 every nonzero pixel of a uint8 image saturates, as at 255 itself
    scales: list[Annotated[float, Field(gt=1.0, le=255.0)]] = Field(
        [3.0, 5.0, 7.0, 9.0, 11.0],
        min_length=1,
        max_length=64,
        description="amplification factors, each above 1 and at most 255",
    )
    false_rejection: float = Field(
        0.05, gt=0.0, lt=1.0, description="share of the defender's clean inputs flagged"
    )


DefenseKind = Annotated[
    NoDefenseSpec
    | FinetuneSpec
    | FinePruningSpec
    | StripSpec
    | SpectralSignaturesSpec
    | ActivationClusteringSpec
    | NeuralCleanseSpec
    | NadSpec
    | AnpSpec
    | ClpSpec
    | IbauSpec
    | AblSpec
    | ScaleUpSpec,
    Field(discriminator="kind"),
]

DEFENSE_KINDS: dict[str, type[DefenseSpec]] = {
    spec.model_fields["kind"].default: spec for spec in get_args(get_args(DefenseKind)[0])
}
