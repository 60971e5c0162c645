"""What a grid will cost, said before any work: its runs, the trainings left after sharing,
which train a head on the frozen-feature cache and which cannot (and why), the training FLOPs
of each kind of run and of the whole grid, and the wall time that should take here and on a
named accelerator.

FLOPs are counted, not guessed: each kind's network is built on PyTorch's meta device (shapes
without storage) and one forward and one backward pass go through ``FlopCounterMode``, which
counts matrix products and convolutions (2 per multiply-add; element-wise work is left out).
A training step is that forward plus backward, times the samples and the epochs; each epoch's
evaluation is a forward over the clean and the triggered test set. A run on cached features
counts only its head, plus the frozen body's forward over the images the run changes (and,
once per cache, over the whole dataset). Defences are not counted.

The wall time on this machine comes from timing, for each kind of run, a few training steps
and evaluation batches of the module it trains (built for real, fresh weights), since the
share of the machine's arithmetic a small network reaches varies tenfold with its layers'
shapes; the frozen body's forwards of the cached path are counted at a calibrated rate (a
float32 matrix product's, times the share of it a small CNN's training reaches; measured
once per machine and kept in the cache folder). On an accelerator it is the FLOPs over the
accelerator's peak times a stated utilisation. Both add a fixed cost per run (loading,
poisoning, figures, writing) that the FLOPs leave out.

How the runs stack (``grid.stacking``: many runs of one shape trained as one stacked model,
heads on cached features as one stack of heads) is said on the plan's stacking line, with the
rule that chose it; the estimates still count every training alone.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from triggerlab.errors import ArgumentError, ConfigError, DataFormatError, TriggerlabError
from triggerlab.grid.plan import PlannedRun, cell_label
from triggerlab.train.loop import EVAL_BATCH_SIZE

if TYPE_CHECKING:
    from triggerlab.config import ExperimentConfig
    from triggerlab.data.dataset import DataSplit
    from triggerlab.grid.stacking import Kinds, Stack

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets.
ACCELERATORS: dict[str, float] = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card: 756
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "V100": 125.0,  # fp16 tensor cores (no bf16)
}
# Small image models keep an accelerator far from its peak (launch overheads, small kernels):
# a stated assumption, printed beside every estimate, and changed with --utilization.
ACCELERATOR_UTILIZATION = 0.2
# Seconds of a run that no FLOP count sees (loading, poisoning, figures, writing) inside a
# grid's worker, which imported torch once: the phases benchmarks/run_fixed_cost.py records,
# about 0.5 s on the project's 2-core machine; an assumption, printed.
FIXED_COST_S = 0.5
CALIBRATION_FORMAT = 2
CALIBRATION_MAX_AGE_S = 7 * 24 * 3600


@dataclass(frozen=True)
class StepFlops:
    """FLOPs per sample of a module: one forward, and one training step (forward + backward)."""

    forward: float
    train: float


def _conv_backward(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: Any,
    output_mask: list[bool],
    out_shape: Any = None,
    **_kwargs: Any,
) -> int:
    """A convolution's backward: the input's gradient and the weights' gradient each cost what
    the forward does. (PyTorch's own formula leaves out the groups in the weights' gradient, and
    counts a depthwise convolution's backward as many times too large as it has channels.)"""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward}
    )


def count_flops(module: nn.Module, shape: tuple[int, ...], batch: int = 2) -> StepFlops:
    """FLOPs per sample of ``module`` on inputs of ``shape`` (real or meta parameters): a
    forward pass in evaluation mode, and a forward plus backward pass in training mode."""
    device = next(iter(module.parameters()), torch.zeros(0)).device
    x = torch.zeros(batch, *shape, device=device)
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad(), flop_counter() as forward:
            module(x)
        module.train()
        with flop_counter() as step:
            output = module(x)
            if output.requires_grad:  # a module with nothing to train has no backward pass
                output.float().sum().backward()
    finally:
        module.train(was_training)
        module.zero_grad(set_to_none=True)
    return StepFlops(forward.get_total_flops() / batch, step.get_total_flops() / batch)


def cut_input_shape(model: nn.Module, cut: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one sample of ``cut``'s input when ``model`` sees images of ``shape``."""
    seen: list[tuple[int, ...]] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append(tuple(inputs[0].shape[1:]))

    handle = cut.register_forward_pre_hook(hook)
    device = next(iter(model.parameters()), torch.zeros(0)).device
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, *shape, device=device))
    finally:
        handle.remove()
    return seen[0]


def meta_model(
    cfg: ExperimentConfig, shape: tuple[int, int, int], outputs: int, device: str = "meta"
) -> nn.Module:
    """The configured model on the meta device (or ``device``): the architecture (ImageNet
    weights are never loaded: the architecture is the same, and grey images repeat to 3
    channels as they would), the input adapter and the freeze policy."""
    from triggerlab.models import factory_of
    from triggerlab.models.transfer import TransferModel

    model_cfg = cfg.model
    rgb = model_cfg.pretrained == "imagenet"
    channels = 3 if rgb else shape[0]
    with torch.device(device):
        net = factory_of(model_cfg.name)(channels, tuple(shape[1:]), outputs, **model_cfg.options)
        repeat = 3 if rgb and shape[0] == 1 else None
        if model_cfg.freeze == "none" and repeat is None:
            return net
        model = TransferModel(net, None, None, repeat)
    if model_cfg.freeze != "none":
        model.freeze(model_cfg.freeze)
    return model


@dataclass
class RunKind:
    """Runs that cost the same: one network, input, data size, schedule and cache path."""

    label: str
    cached: bool
    reason: str | None  # why the cache does not apply (None: it does)
    trained_module: str  # what trains: the whole model, or the head on cached features
    trainable_parameters: int
    input_shape: list[int]  # of the trained module: an image, or a feature vector
    train_samples: int
    test_samples: int
    epochs: int  # every stage's epochs together
    batch_size: int
    flops_per_sample: dict[str, float]  # forward and train of the trained module; body forward
    runs: int = 0
    trainings: int = 0
    cache_builds: int = 0  # distinct caches to fill (one per seed for fresh weights)
    changed_images: int = 0  # cached path: images all trainings send through the frozen body
    # measured here (None: not measured): one training step of a batch, one evaluation batch
    step_s: float | None = None
    evaluation_batch_s: float | None = None
    body_image_s: float | None = None  # cached path: the frozen body's forward of one image

    def training_flops(self) -> float:
        """One training: its steps and each epoch's evaluation (clean and triggered)."""
        per = self.flops_per_sample
        steps = per["train"] * self.train_samples * self.epochs
        return steps + per["forward"] * 2 * self.test_samples * self.epochs

    def batches(self) -> tuple[int, int]:
        """Training steps and evaluation batches of one training."""
        steps = -(-self.train_samples // self.batch_size) * self.epochs
        return steps, 2 * -(-self.test_samples // EVAL_BATCH_SIZE) * self.epochs

    def training_seconds(self, calibration: Calibration) -> float:
        """Estimated seconds of one training on this machine: its batches at the times
        measured here; unmeasured, each batch at its FLOPs at the calibrated rate, or the fixed
        cost of a batch when that is longer (a small head's batch is all overhead)."""
        steps, evaluations = self.batches()
        per, rate, floor = self.flops_per_sample, calibration.effective, calibration.batch_s
        step_s = self.step_s or max(floor, self.batch_size * per["train"] / rate)
        evaluation_s = self.evaluation_batch_s or max(
            floor, min(EVAL_BATCH_SIZE, self.test_samples) * per["forward"] / rate
        )
        return steps * step_s + evaluations * evaluation_s

    def achieved_flops_per_s(self) -> float | None:
        """Training FLOP/s of the measured step."""
        if not self.step_s:
            return None
        return (
            min(self.batch_size, self.train_samples) * self.flops_per_sample["train"] / self.step_s
        )

    def seconds(self, calibration: Calibration) -> float:
        """All this kind's trainings and its frozen-body work, on this machine."""
        training = self.trainings * self.training_seconds(calibration)
        if self.body_image_s is not None:
            images = self.changed_images + self.cache_builds * (
                self.train_samples + self.test_samples
            )
            return training + images * self.body_image_s
        body = self.total_flops() - self.trainings * self.training_flops()
        return training + body / calibration.effective

    def cache_flops(self) -> float:
        """Filling one cache: the frozen body's forward over every image of the dataset."""
        return self.flops_per_sample["body_forward"] * (self.train_samples + self.test_samples)

    def total_flops(self) -> float:
        # the cached path also sends the images a run changes through the frozen body: its
        # poisoned training images and the triggered test set
        changed = self.flops_per_sample["body_forward"] * self.changed_images
        return (
            self.trainings * self.training_flops()
            + self.cache_builds * self.cache_flops()
            + changed
        )


@dataclass(frozen=True)
class Calibration:
    """This machine's float32 matrix-product rate, the share of it a small CNN's training
    step reaches, and the time of a tiny model's training step (the fixed cost of a batch:
    the optimiser's step, the framework's calls). A batch is estimated at its FLOPs over
    (rate x utilisation), or at the fixed cost when that is longer."""

    matmul_flops_per_s: float
    utilization: float
    batch_s: float
    threads: int
    machine: str
    measured_at: float
    seconds: float  # the calibration's own time

    @property
    def effective(self) -> float:
        return self.matmul_flops_per_s * self.utilization


@dataclass
class GridCost:
    """The plan's cost: what ``triggerlab plan`` prints and ``plan.json`` holds."""

    runs: int
    trainings: int
    kinds: list[RunKind]
    calibration: Calibration | None
    workers: int = 1
    fixed_cost_s: float = FIXED_COST_S
    accelerator: str = "H100"
    utilization: float = ACCELERATOR_UTILIZATION
    stacking: str = "off: each run trains alone"
    notes: list[str] = field(default_factory=list)

    def total_flops(self) -> float:
        return sum(kind.total_flops() for kind in self.kinds)

    def here_s(self) -> float | None:
        """Estimated wall seconds on this machine (None without a calibration)."""
        if self.calibration is None:
            return None
        # the calibration ran with a worker's share of the cores: workers run side by side
        busy = sum(k.seconds(self.calibration) for k in self.kinds)
        return (busy + self.fixed_cost_s * self.runs) / self.workers

    def accelerator_s(self) -> float:
        peak = ACCELERATORS[self.accelerator] * 1e12
        return self.total_flops() / (peak * self.utilization) + self.fixed_cost_s * self.runs

    def record(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "trainings": self.trainings,
            "stacking": self.stacking,
            "kinds": [
                {
                    **asdict(k),
                    "training_flops": k.training_flops(),
                    "total_flops": k.total_flops(),
                }
                for k in self.kinds
            ],
            "total_flops": self.total_flops(),
            "calibration": None if self.calibration is None else asdict(self.calibration),
            "workers": self.workers,
            "fixed_cost_s": self.fixed_cost_s,
            "estimate_here_s": self.here_s(),
            "accelerator": {
                "name": self.accelerator,
                "peak_bf16_tflops": ACCELERATORS[self.accelerator],
                "utilization": self.utilization,
                "estimate_s": self.accelerator_s(),
            },
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """The plan as a person reads it."""
        cached = sum(k.runs for k in self.kinds if k.cached)
        out = [
            f"runs: {self.runs}; trainings after sharing: {self.trainings} "
            f"({self.runs - self.trainings} runs reuse a model another run trains)",
            f"feature cache: {cached} of {self.runs} runs train a head on cached features",
            f"stacking: {self.stacking}",
            "kinds of run:",
        ]
        for kind in self.kinds:
            how = "cached features" if kind.cached else f"not cached: {kind.reason}"
            out.append(
                f"  {kind.label}: {kind.runs} runs, {kind.trainings} trainings; trains "
                f"{kind.trained_module} ({kind.trainable_parameters:,} parameters) on "
                f"{kind.train_samples:,} samples x {kind.epochs} epochs; {how}"
            )
            per = kind.flops_per_sample
            out.append(
                f"    {_flops(per['train'])} per sample-step (forward {_flops(per['forward'])}"
                f"); {_flops(kind.training_flops())} per training; {_flops(kind.total_flops())} "
                "in all"
                + (
                    f" (with {kind.cache_builds} cache builds of {_flops(kind.cache_flops())})"
                    if kind.cache_builds
                    else ""
                )
            )
            achieved = kind.achieved_flops_per_s()
            if achieved is not None and kind.step_s and self.calibration is not None:
                share = achieved / self.calibration.matmul_flops_per_s
                out.append(
                    f"    measured here: {kind.step_s * 1e3:.3g} ms a training step of "
                    f"{min(kind.batch_size, kind.train_samples)} ({achieved / 1e9:.3g} GFLOP/s, "
                    f"{share:.1%} of the matrix-product rate)"
                )
        out.append(f"training FLOPs of the grid: {_flops(self.total_flops())}")
        here = self.here_s()
        if here is not None and self.calibration is not None:
            c = self.calibration
            out.append(
                f"estimated wall time here: {_duration(here)} ({self.workers} worker(s), "
                f"{c.threads} threads per run; each kind's batches, and the frozen body's "
                f"forwards, at the times measured here; plus {self.fixed_cost_s:g} s fixed cost "
                "per run)"
            )
        out.append(
            f"estimated wall time on one {self.accelerator}: {_duration(self.accelerator_s())} "
            f"(bf16 peak {ACCELERATORS[self.accelerator]:g} TFLOP/s x {self.utilization:.0%} "
            f"assumed utilisation, plus {self.fixed_cost_s:g} s fixed cost per run, one run at "
            "a time)"
        )
        out.extend(f"note: {note}" for note in self.notes)
        return out


def _flops(value: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# -- what each run costs ------------------------------------------------------------------


def _reason(cfg: ExperimentConfig, model: nn.Module) -> str | None:
    """Why the cache cannot apply to a run of ``cfg`` (None: it can), in the order
    ``run.inputs.why_not_cached`` checks; the last check, that the tail's output equals the
    whole model's on real images, is left to the run."""
    from triggerlab.models.transfer import BATCH_NORMS
    from triggerlab.run.inputs import batch_dependent

    if not cfg.model.feature_cache:
        return "model.feature_cache is off"
    if cfg.poison_schedule == "per_batch":
        return "poison.schedule is per_batch: the training images change in every batch"
    if cfg.train.augment:
        return "train.augment changes the images every epoch, so their features change too"
    if cfg.model.crops is not None:
        return "model.crops gives training a new random crop of each image"
    plan = getattr(model, "plan", None)
    if plan is not None and plan.cut is not None:
        varying = batch_dependent(model, plan.cut) if cfg.model.frozen_mode == "train" else []
        if varying:
            return (
                f"model.frozen_mode: train runs the frozen body's {varying[0]} in training "
                "mode, so its features depend on the batch"
            )
        return None
    if cfg.model.freeze == "none":
        return "the whole network trains (model.freeze: none)"
    trained_norms = [
        m
        for m in model.modules()
        if isinstance(m, BATCH_NORMS) and m.weight is not None and m.weight.requires_grad
    ]
    if trained_norms:
        return (
            f"batch norm trains (model.freeze: {cfg.model.freeze}), so the frozen body's "
            "output changes as it trains"
        )
    return "the freeze policy trains more than a tail (use classifier or head)"


def _kind_key(cfg: ExperimentConfig) -> str:
    """What a run's cost depends on: runs with the same key cost the same."""
    train, poison, defense = cfg.train, cfg.poison, cfg.defense
    appended = [poison.rate, poison.count] if poison.mode == "append" else None
    held = [defense.clean_fraction, defense.clean_samples] if defense.holds_back_data else None  # type: ignore[union-attr]
    return json.dumps(
        [
            cfg.model.model_dump(mode="json"),
            cfg.data.model_dump(mode="json", exclude={"seed", "root", "download"}),
            [train.epochs, train.finetune_epochs, train.batch_size, train.augment],
            appended,
            held,
        ],
        sort_keys=True,
        default=str,
    )


def _train_samples(cfg: ExperimentConfig, data: DataSplit) -> int:
    samples = len(data.train)
    if cfg.poison.mode == "append":  # triggered copies join the training set
        samples += _poisoned(cfg, samples)
    return samples


def _poisoned(cfg: ExperimentConfig, train_samples: int) -> int:
    poison = cfg.poison
    return poison.count if poison.count is not None else round((poison.rate or 0) * train_samples)


def _kind_of(cfg: ExperimentConfig, data: DataSplit) -> RunKind:
    from triggerlab.run.feature_cache import pool_of

    shape, outputs = data.shape, data.num_outputs
    try:
        model = meta_model(cfg, shape, outputs)
        whole = count_flops(model, shape)
    except Exception:  # a network the meta device cannot build or run: built for real
        try:
            model = meta_model(cfg, shape, outputs, "cpu")
            whole = count_flops(model, shape)
        except Exception as exc:
            raise ConfigError(
                f"model.name: cannot count the FLOPs of {cfg.model.name!r} on "
                f"{'x'.join(map(str, shape))} inputs ({str(exc).splitlines()[0]})"
            ) from None
    plan = getattr(model, "plan", None)
    reason = _reason(cfg, model)
    parts = [data.train, data.test, *(x for x in (data.finetune,) if x is not None)]
    if reason is None and pool_of(parts) is None:
        reason = "the dataset's parts do not cover the loaded images once each"
    epochs = cfg.train.epochs + (cfg.train.finetune_epochs if data.finetune is not None else 0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    label = (
        f"{cfg.model.name} on {'x'.join(map(str, shape))}"
        + (f", freeze {cfg.model.freeze}" if cfg.model.freeze != "none" else "")
        + f", batch {cfg.train.batch_size}"
    )
    if reason is None:
        assert plan is not None and plan.cut is not None
        features = cut_input_shape(model, plan.cut, shape)
        head = count_flops(plan.cut, features)
        return RunKind(
            label,
            True,
            None,
            f"the head ({plan.cut_name})",
            trainable,
            list(features),
            _train_samples(cfg, data),
            len(data.test),
            epochs,
            cfg.train.batch_size,
            {"forward": head.forward, "train": head.train, "body_forward": whole.forward},
        )
    return RunKind(
        label,
        False,
        reason,
        "the whole model",
        trainable,
        list(shape),
        _train_samples(cfg, data),
        len(data.test),
        epochs,
        cfg.train.batch_size,
        {"forward": whole.forward, "train": whole.train, "body_forward": 0.0},
    )


def kinds_of(plan: list[PlannedRun], threads: int | None = None) -> list[RunKind]:
    """The plan's runs grouped by what they cost; each dataset is loaded once. With
    ``threads``, each kind's training step and evaluation batch are timed here with that
    many threads (``time_steps``)."""
    return list(kinds_by_key(plan, threads).values())


def kinds_for(runs: list[PlannedRun]) -> list[RunKind]:
    """Each run's kind, in order (``grid.stacking``'s ``kinds``)."""
    by_key = kinds_by_key(runs)
    return [by_key[_kind_key(run.config)] for run in runs]


def kinds_by_key(plan: list[PlannedRun], threads: int | None = None) -> dict[str, RunKind]:
    """``kinds_of``, each kind under its runs' ``kind_key``."""
    from triggerlab.data.prepare import load_source, split_source
    from triggerlab.run.prepare import check_run
    from triggerlab.seeds import derive_seeds

    kinds: dict[str, RunKind] = {}
    trainings: dict[str, set[str]] = {}
    caches: dict[str, set[Any]] = {}
    sources: dict[str, Any] = {}
    for run in plan:
        cfg = run.config
        key = _kind_key(cfg)
        if key not in kinds:
            try:
                source_key = cfg.data.model_dump_json(exclude={"seed"})
                if source_key not in sources:
                    sources[source_key] = load_source(cfg.data)
                data = split_source(sources[source_key], cfg.data, cfg.split_seed)
                checked = check_run(cfg, data, derive_seeds(cfg.train.seed)["defense"])
                kinds[key] = _kind_of(cfg, checked.data)
                if threads is not None:
                    time_steps(kinds[key], cfg, checked.data, threads)
            except TriggerlabError as exc:
                kind = DataFormatError if isinstance(exc, DataFormatError) else ConfigError
                raise kind(f"in {cell_label(run.cell)}: {exc}") from None
        kind = kinds[key]
        kind.runs += 1
        trained = trainings.setdefault(key, set())
        if kind.cached and (run.training_key or run.run_id) not in trained:
            kind.changed_images += _poisoned(cfg, kind.train_samples) + kind.test_samples
        trained.add(run.training_key or run.run_id)
        if kind.cached:  # fresh weights differ by seed; a file's or ImageNet's are shared
            pretrained = cfg.model.pretrained
            caches.setdefault(key, set()).add(cfg.train.seed if pretrained is None else "")
    for key, kind in kinds.items():
        kind.trainings = len(trainings[key])
        kind.cache_builds = len(caches.get(key, ()))
    return kinds


STEP_BUDGET_S = 0.5  # seconds of timed steps per kind (at least 3 steps, after a warm-up)


def time_steps(kind: RunKind, cfg: ExperimentConfig, data: DataSplit, threads: int) -> None:
    """Time one training step and one evaluation batch of ``kind`` here, with ``threads``
    threads: the module it trains (the whole model, or the head on features) built for real
    with fresh weights, its optimiser, a batch of its size, float32 on the CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = meta_model(cfg, data.shape, data.num_outputs, "cpu")
            plan = getattr(model, "plan", None)
            module = plan.cut if kind.cached and plan is not None else model
            assert module is not None
            kind.step_s, kind.evaluation_batch_s = _timed(module, kind, cfg)
            if kind.cached:  # the frozen body's forward, an evaluation batch of images
                images = torch.rand(min(EVAL_BATCH_SIZE, kind.test_samples), *data.shape)
                model.eval()

                def forward() -> None:
                    with torch.no_grad():
                        model(images)

                kind.body_image_s = _seconds_per_call(forward, STEP_BUDGET_S) / images.shape[0]
    finally:
        torch.set_num_threads(previous)


def _timed(module: nn.Module, kind: RunKind, cfg: ExperimentConfig) -> tuple[float, float]:
    from triggerlab.train.loop import make_optimizer

    layout = torch.contiguous_format
    if cfg.train.channels_last and len(kind.input_shape) == 3 and not kind.cached:
        layout = torch.channels_last
        module = module.to(memory_format=layout)
    optimizer = make_optimizer(cfg.train, module)
    batch = torch.rand(min(kind.batch_size, kind.train_samples), *kind.input_shape)
    batch = batch.contiguous(memory_format=layout) if batch.dim() == 4 else batch

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        module(batch).float().pow(2).mean().backward()  # any loss costs the same here
        optimizer.step()

    evaluation = torch.rand(min(EVAL_BATCH_SIZE, kind.test_samples), *kind.input_shape)
    evaluation = (
        evaluation.contiguous(memory_format=layout) if evaluation.dim() == 4 else evaluation
    )

    def evaluate() -> None:
        with torch.no_grad():
            module(evaluation)

    module.train()
    step_s = _seconds_per_call(step, STEP_BUDGET_S)
    module.eval()
    return step_s, _seconds_per_call(evaluate, STEP_BUDGET_S / 2)


# -- calibration ----------------------------------------------------------------------------


def _machine() -> str:
    return (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cores torch {torch.__version__}"
    )


def _matmul_rate(seconds: float, size: int = 1024) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / _seconds_per_call(lambda: a @ b, seconds)


def _training_step(model: nn.Module, shape: tuple[int, ...], outputs: int) -> Any:
    """One Adam step on a fixed batch of 32 (what the digits default trains)."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(32, *shape, generator=generator)
    y = torch.randint(0, outputs, (32,), generator=generator)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def _seconds_per_call(call: Any, seconds: float) -> float:
    """The median time of ``call`` over about ``seconds``: on a shared machine the mean
    follows whoever else is busy, the median what this work takes."""
    began = time.perf_counter()
    call()  # warm-up
    warm_up = time.perf_counter() - began
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < (5 if warm_up < seconds else 1):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return sorted(times)[len(times) // 2]


def _small_models(seconds: float) -> tuple[float, float]:
    """Seconds per training step of a tiny linear model (the fixed cost of a batch) and
    training FLOP/s of a small CNN (the digits default: 1x16x16, batch 32, Adam)."""
    from triggerlab.models import factory_of

    torch.manual_seed(0)
    tiny = nn.Linear(16, 10)
    batch_s = _seconds_per_call(_training_step(tiny, (16,), 10), seconds / 2)
    cnn = factory_of("small_cnn")(1, (16, 16), 10)
    step_s = _seconds_per_call(_training_step(cnn, (1, 16, 16), 10), seconds)
    return batch_s, 32 * count_flops(cnn, (1, 16, 16)).train / step_s


def calibrate(seconds: float = 1.0, threads: int | None = None) -> Calibration:
    """Measure this machine now, with ``threads`` torch threads (None: as set): about
    ``seconds`` on each measurement."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        peak = _matmul_rate(seconds)
        batch_s, reached = _small_models(seconds)
        return Calibration(
            peak,
            min(1.0, reached / peak),
            batch_s,
            torch.get_num_threads(),
            _machine(),
            time.time(),
            time.perf_counter() - start,
        )
    finally:
        torch.set_num_threads(previous)


def machine_calibration(threads: int, recalibrate: bool = False) -> Calibration:
    """This machine's calibration at ``threads`` torch threads (a run's share of the cores):
    measured once and kept in the cache folder for a week (``recalibrate`` measures again)."""
    from triggerlab.files import write_json_atomic
    from triggerlab.run.feature_cache import cache_root

    path = cache_root() / f"calibration-{threads}-threads.json"
    found = None if recalibrate else _saved_calibration(path)
    if found is not None and found.threads == threads:
        return found
    measured = calibrate(threads=threads)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"format": CALIBRATION_FORMAT, **asdict(measured)})
    except OSError:
        pass  # a cache folder that cannot be written only means measuring again next time
    return measured


def _saved_calibration(path: Path) -> Calibration | None:
    """The calibration saved at ``path`` when it is this machine's, recent and readable."""
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict) or saved.pop("format", None) != CALIBRATION_FORMAT:
            return None
        found = Calibration(**saved)
    except (OSError, TypeError, ValueError):
        return None  # missing or unreadable: measured again, and replaced
    fresh = 0 <= time.time() - found.measured_at < CALIBRATION_MAX_AGE_S
    return found if fresh and found.machine == _machine() else None


def check_accelerator(name: str, utilization: float) -> str:
    """The accelerator's table name (case ignored); ArgumentError for an unknown one."""
    found = {n.lower(): n for n in ACCELERATORS}.get(name.lower())
    if found is None:
        raise ArgumentError(
            "accelerator", f"unknown {name!r}; expected one of {', '.join(ACCELERATORS)}"
        )
    if not 0 < utilization <= 1:
        raise ArgumentError("utilization", f"expected a share in (0, 1], got {utilization}")
    return found


def grid_cost(
    plan: list[PlannedRun],
    *,
    calibration: Calibration | None = None,
    workers: int = 1,
    accelerator: str = "H100",
    utilization: float = ACCELERATOR_UTILIZATION,
    stack: Stack = "auto",
) -> GridCost:
    """The cost of running ``plan``, every run, as nothing were finished yet; ``stack``: the
    most runs a stack trains together, or ``auto`` (said, not yet counted in the estimates)."""
    accelerator = check_accelerator(accelerator, utilization)
    if workers < 1:
        raise ArgumentError("workers", f"expected at least 1, got {workers}")
    by_key = kinds_by_key(plan, None if calibration is None else calibration.threads)
    kinds = list(by_key.values())
    trainings = len({run.training_key or run.run_id for run in plan})
    notes = []
    devices = Counter(run.config.train.device for run in plan)
    if any(d != "cpu" for d in devices) and torch.cuda.is_available():
        notes.append("runs may train on the GPU here; the estimate here is the CPU's")
    if any(run.config.defense.kind != "none" for run in plan):
        notes.append("defences are not counted")
    surrogates = surrogate_line(plan)
    if surrogates:
        notes.append(surrogates)
    cost = GridCost(
        len(plan),
        trainings,
        kinds,
        calibration,
        workers,
        accelerator=accelerator,
        utilization=utilization,
        notes=notes,
    )
    if stack != 1:
        cost.stacking = stacking_line(
            plan, stack, lambda runs: [by_key[_kind_key(r.config)] for r in runs], workers
        )
    return cost


def surrogate_line(plan: list[PlannedRun]) -> str | None:
    """What the runs that compute their low-frequency pattern add, uncounted; None if none."""
    from triggerlab.run.lf_checks import needs_pattern
    from triggerlab.run.lf_pattern import config_digest, surrogate_config

    computing = [run.config for run in plan if needs_pattern(run.config)]
    if not computing:
        return None
    keys: dict[str, str] = {}  # a surrogate depends on neither trigger, poisoning nor defence
    for cfg in computing:
        setup = cfg.model_dump_json(exclude={"trigger", "poison", "defense", "output"})
        if setup not in keys:
            keys[setup] = config_digest(surrogate_config(cfg))
    return (
        f"{len(computing)} low-frequency runs compute their pattern from a clean surrogate: "
        f"{len(set(keys.values()))} more trainings (none where the cache holds them) and "
        "the perturbation searches are not counted"
    )


def stacking_line(
    plan: list[PlannedRun], most: Stack, kinds: Kinds | None = None, workers: int = 1
) -> str:
    """How ``stack_groups`` stacks the plan's runs for ``workers``, and by which rules, for
    the plan's stacking line (``kinds``: as ``stack_rules`` takes it; default
    ``kinds_for``)."""
    from triggerlab.grid.stacking import stack_groups, stack_key, stack_rules, unstackable

    rules = stack_rules(plan, most, kinds or kinds_for)
    sizes = Counter(len(group) for group in stack_groups(plan, most, rules, workers=workers))
    stacked = sum(size * count for size, count in sizes.items() if size > 1)
    shown = ", ".join(f"{count} x {size}" for size, count in sorted(sizes.items(), reverse=True))
    head = f"up to {most} runs a stack" if most != "auto" else "auto, where it pays"
    why = Counter(
        rules[key].why if key in rules else f"alone: {unstackable(run) or 'stacking is off'}"
        for run, key in ((run, stack_key(run)) for run in plan)
    )
    said = ""
    if most == "auto":
        said = "; " + "; ".join(f"{reason}: {count} runs" for reason, count in why.items())
    return (
        f"{head}: {stacked} of {len(plan)} runs in stacks ({shown}){said}; "
        "the estimates count every run alone"
    )
