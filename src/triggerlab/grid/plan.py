"""From a grid spec to the list of runs: cells x repeats (+ baselines), ids, and a preflight.

Each run's id is a hash of its resolved config (``output`` and ``data.root``
excluded), so the same experiment always gets the same id and a rerun skips
what is finished.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel

from triggerlab.catalogue.triggers import AdaptiveBlendSpec, LinesSpec, LowFrequencySpec
from triggerlab.config import ExperimentConfig, set_dotted, validate_config
from triggerlab.errors import ArgumentError, ConfigError, DataFormatError, TriggerlabError
from triggerlab.grid.spec import GridSpec

if TYPE_CHECKING:
    from triggerlab.attack.stamping import Stamping
    from triggerlab.data.dataset import DataSplit, SourceData
    from triggerlab.triggers import Trigger

ID_LENGTH = 12
# Runs a grid may plan unless told otherwise: far beyond any study so far (reference 001's
# matrix plans 3,600), and planning holds every run's config in memory (about 7 kB each).
MAX_RUNS = 100_000


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    cell: dict[str, Any]
    repeat: int
    seed: int
    role: Literal["grid", "baseline"]
    baseline_id: str | None
    config: ExperimentConfig = field(repr=False)
    training_key: str | None = None  # shared with other runs: train once, defend many

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "cell": self.cell,
            "repeat": self.repeat,
            "seed": self.seed,
            "role": self.role,
            "baseline_id": self.baseline_id,
        }


# Settings that do not change what a run computes, or only where it is written.
NOT_IDENTITY = {("output",), ("data", "root"), ("data", "download"), ("train", "threads")}
# Defaults that changed after ids were first given (the schema took the embedded default's
# values): ids still compare against the old ones, so an experiment keeps its id and a grid
# folder its finished runs.
ID_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("data", "resize"): None,
    ("train", "lr"): 1e-3,
    ("train", "lr_schedule"): "constant",
    ("train", "epochs"): 10,
    ("train", "batch_size"): 64,
    # Poisoning was static, and WaNet's noise mode off, before per-batch poisoning: a run that
    # asks for that (any kind but warp and quantize, by default) keeps its id; WaNet and
    # BppAttack runs, now per-batch by default, get new ones (``identity_of``).
    ("poison", "schedule"): "static",
    # Poisoning was all_to_one unless told before the label mode defaulted to the paper's: a
    # run of any kind but signal and reflection keeps its id (``identity_of``), and so does
    # one that names all_to_one; SIG and Refool runs, now clean-label, get new ones.
    ("poison", "label_mode"): "all_to_one",
    ("trigger", "noise_mode"): False,
    ("trigger", "triggers", "noise_mode"): False,
}
# The same for a field of a spec class wherever the spec sits (a trigger may be a part of a
# composition, at any depth).
CLASS_ID_DEFAULTS: dict[tuple[type[BaseModel], str], Any] = {
    (LinesSpec, "count"): 10,  # was 10 before it had to fit the 16 px digits of the default run
    # the random pattern was the default before the paper's (a clean model's perturbation):
    # a config that asks for random_smooth keeps its id, the default's computes something new
    (LowFrequencySpec, "pattern"): "random_smooth",
    # Adaptive-Blend trained at its test opacity before it trained at its authors' 0.15
    (AdaptiveBlendSpec, "train_opacity"): None,
}


@functools.cache
def _defaults(cls: type[BaseModel]) -> dict[str, Any]:
    """A model class's field defaults, built once: pydantic inspects every default factory's
    signature on each ``get_default`` call, which made planning a 4,500-run grid take 6 s."""
    return {n: f.get_default(call_default_factory=True) for n, f in cls.model_fields.items()}


@functools.cache
def _default_identity(cls: type[BaseModel], name: str, path: tuple[str, ...]) -> Any:
    """``non_default`` of the default of a nested section (None when it is not a model), with
    the defaults ids compare against (``ID_DEFAULTS``)."""
    default = _defaults(cls)[name]
    if not isinstance(default, BaseModel):
        return None
    pinned = {where[-1]: value for where, value in ID_DEFAULTS.items() if where[:-1] == path}
    return non_default(default.model_copy(update=pinned), path)


def non_default(model: BaseModel, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of ``model`` that differ from their defaults (a ``kind`` tag always stays),
    as JSON values: new settings with defaults leave existing ids unchanged."""
    dumped = model.model_dump(mode="json")
    result: dict[str, Any] = {}
    defaults = _defaults(type(model))
    for name in type(model).model_fields:
        where = (*path, name)
        if where in NOT_IDENTITY:
            continue
        value = getattr(model, name)
        if name == "kind":
            result[name] = dumped[name]
        elif isinstance(value, BaseModel):
            inner = non_default(value, where)
            default = _default_identity(type(model), name, where)
            if default is None or inner != default:
                result[name] = inner
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            result[name] = [non_default(v, where) for v in value]
        elif value != ID_DEFAULTS.get(
            where, CLASS_ID_DEFAULTS.get((type(model), name), defaults[name])
        ):
            result[name] = dumped[name]
    return result


def identity_of(cfg: ExperimentConfig) -> dict[str, Any]:
    """``non_default`` of the config with ``poison.schedule: paper`` and ``poison.label_mode:
    paper`` resolved by the trigger kind, so a run's id says which schedule and label mode it
    ran (per_batch for WaNet and BppAttack, clean_label for SIG and Refool)."""
    resolved = {}
    if cfg.poison.schedule == "paper":
        resolved["schedule"] = cfg.poison_schedule
    if cfg.poison.label_mode == "paper":
        resolved["label_mode"] = cfg.poison_label_mode
    if resolved:
        cfg = cfg.model_copy(update={"poison": cfg.poison.model_copy(update=resolved)})
    return non_default(cfg)


def run_id(cfg: ExperimentConfig) -> str:
    """Short hash of the settings that make the experiment: the same experiment, the same id.

    Paths and the thread count are left out, and so is every setting at its
    default, so adding a setting to triggerlab keeps the ids of existing runs.
    """
    canonical = json.dumps(identity_of(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]


def trains_clean(cfg: ExperimentConfig) -> bool:
    """Whether the run's model trains on clean data only, whatever its trigger: nothing is
    poisoned, in one training stage (a two-stage protocol records trigger metrics between the
    stages)."""
    return cfg.poisons_nothing and cfg.data.split != "pretune_finetune"


def training_key(cfg: ExperimentConfig) -> str:
    """Hash of what the trained model depends on: everything but the defence, plus the share
    of the training split the defence holds back (the model trains without it).

    A run that poisons nothing (a clean baseline) trains the same model whatever its trigger
    and poisoning settings, which touch only the images it poisons and its test: they are
    left out but for where the trigger is stamped (``trigger.stage`` decides how the images
    are loaded), so the clean baselines of a grid's trigger cells train once per repeat
    (``tests/run/test_clean_training.py`` trains every trigger kind's clean run to the same
    weights). Each still evaluates its own trigger (``run/training.py``)."""
    key = identity_of(cfg)
    key.pop("defense", None)
    if trains_clean(cfg):
        key.pop("trigger", None)
        key.pop("poison", None)
        key["clean"] = {"stage": cfg.trigger.stage}
    defense = cfg.defense
    if defense.holds_back_data:
        key["held_back"] = [defense.clean_fraction, defense.clean_samples]  # type: ignore[union-attr]
    else:
        key["held_back"] = 0.0
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]


def share_training(plan: list[PlannedRun]) -> list[PlannedRun]:
    """Give the runs whose models would be trained identically a common training key."""
    keys = [training_key(run.config) for run in plan]
    shared = {key for key, count in Counter(keys).items() if count > 1}  # linear in the runs
    return [
        replace(run, training_key=key) if key in shared else run
        for run, key in zip(plan, keys, strict=True)
    ]


def trainers_first(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs in an order that lets parallel workers train different models at once: the
    first run of each training key, then the runs that will load a model already trained."""
    seen: set[str] = set()
    first, later = [], []
    for run in runs:
        key = run.training_key
        (later if key is not None and key in seen else first).append(run)
        if key is not None:
            seen.add(key)
    return first + later


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    return [
        int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(repeats)
    ]


def cell_label(cell: dict[str, Any]) -> str:
    return "cell " + (", ".join(f"{k}={v!r}" for k, v in cell.items()) or "(the base experiment)")


def cell_config(base: dict[str, Any], cell: dict[str, Any], seed: int) -> ExperimentConfig:
    """The validated experiment of one cell and repeat seed."""
    raw = copy.deepcopy(base)
    # Kind keys first: changing a section's kind starts it afresh, then its parameters fill it.
    for key in sorted(cell, key=lambda k: not k.endswith(".kind")):
        try:
            set_dotted(raw, key.split("."), cell[key])
        except ConfigError as exc:
            raise ConfigError(f"grid key {key}: {exc}") from None
    set_dotted(raw, ["train", "seed"], seed)
    return validate_config(raw, f"in {cell_label(cell)}")


def check_run_count(spec: GridSpec, max_runs: int | None) -> None:
    """Refuse a spec of more than ``max_runs`` runs (None: any number), counted before
    anything is expanded: a typo can declare 10^12 runs in one line."""
    count = spec.run_count()
    if max_runs is None or count <= max_runs:
        return
    factors = [*map(str, spec.axis_lengths()), f"{spec.repeats} repeats"]
    if spec.clean_baseline:
        factors.append("2 for clean baselines")
    raise ArgumentError(
        "max_runs",
        f"grid {spec.name or ''} plans up to {count:,} runs ({' x '.join(factors)}), more "
        f"than the limit of {max_runs:,}; vary fewer values, or raise the limit",
    )


def plan_grid(spec: GridSpec, max_runs: int | None = MAX_RUNS) -> list[PlannedRun]:
    """Expand the spec into runs; every cell is validated before anything runs. A spec of
    more than ``max_runs`` runs (None: no limit) is refused before it is expanded."""
    check_run_count(spec, max_runs)
    plan: dict[str, PlannedRun] = {}
    for repeat, seed in enumerate(repeat_seeds(spec.seed, spec.repeats)):
        for cell in spec.cells():
            cfg = cell_config(spec.base, cell, seed)
            identity = run_id(cfg)
            baseline_id = None
            if spec.clean_baseline:
                clean_cell = {**cell, "poison.rate": 0.0, "poison.count": None}
                clean = cell_config(spec.base, clean_cell, seed)
                baseline_id = run_id(clean)
                if baseline_id not in plan and baseline_id != identity:
                    shown = {k: v for k, v in clean_cell.items() if k in cell}
                    plan[baseline_id] = PlannedRun(
                        baseline_id, shown, repeat, seed, "baseline", baseline_id, clean
                    )
            existing = plan.get(identity)
            if existing is None or existing.role == "baseline":
                plan[identity] = PlannedRun(identity, cell, repeat, seed, "grid", baseline_id, cfg)
    return share_training(list(plan.values()))


def one_config_per_dataset(
    spec: GridSpec, max_runs: int | None = MAX_RUNS
) -> list[ExperimentConfig]:
    """A config of each distinct ``data`` section among the spec's cells (what fetching the
    data needs): cells are validated one at a time, once each, not once per repeat."""
    check_run_count(spec, max_runs)
    found: dict[str, ExperimentConfig] = {}
    for cell in spec.cells():
        cfg = cell_config(spec.base, cell, spec.seed)
        found.setdefault(cfg.data.model_dump_json(), cfg)
    return list(found.values())


def preflight(plan: list[PlannedRun]) -> None:
    """Check what depends on the data before any run: each dataset is loaded once.

    The checks a single run makes (``checks.check_run``: trigger, target,
    defence, poison counts; ``checks.check_model``: the input size) are made
    for every run; the first problem is reported with its cell.
    """
    from triggerlab.attack.stamping import stamping_for
    from triggerlab.data.prepare import load_source, split_source
    from triggerlab.run.footprint import check_before_loading, check_network
    from triggerlab.run.lf_checks import needs_pattern
    from triggerlab.run.prepare import check_model, check_run
    from triggerlab.seeds import derive_seeds
    from triggerlab.train.devices import resolve_device

    sources: dict[str, SourceData] = {}
    stampings: dict[str, Stamping] = {}
    split: tuple[tuple[str, int], DataSplit] | None = None  # the last one: runs share it
    models: set[str] = set()
    sizes: set[str] = set()  # what the memory estimate depends on, checked once each
    twins = TriggerTwins()
    for run in plan:
        cfg = run.config
        try:
            train = cfg.train
            size_key = json.dumps(
                [
                    cfg.model.model_dump(mode="json"),
                    cfg.data.resize,
                    cfg.data.channels,
                    train.device,
                    train.batch_size,
                    train.optimizer,
                    train.momentum,
                ],
                default=str,
            )
            if size_key not in sizes:
                check_before_loading(cfg, resolve_device(cfg.train.device))
                sizes.add(size_key)
            native = cfg.trigger.stage == "native"  # the stored images, not resized at load
            source_key = json.dumps([cfg.data.model_dump_json(exclude={"seed"}), native])
            if source_key not in sources:
                sources[source_key] = load_source(cfg.data, native=native)
            if split is None or split[0] != (source_key, cfg.split_seed):
                split = None  # resizing a whole dataset per run made preflight the slow part
                split = (
                    (source_key, cfg.split_seed),
                    split_source(sources[source_key], cfg.data, cfg.split_seed),
                )
            data = split[1]
            if source_key not in stampings:  # the native pool is one copy per dataset
                stampings[source_key] = stamping_for(cfg, sources[source_key], data.shape)
            stamping = stampings[source_key]
            checked = check_run(cfg, data, derive_seeds(cfg.train.seed)["defense"], stamping)
            model_key = json.dumps(
                [cfg.model.model_dump(mode="json"), checked.data.shape, checked.data.num_outputs],
                default=str,
            )
            if model_key not in models:
                shape, outputs = checked.data.shape, checked.data.num_outputs
                check_network(cfg, shape, outputs, resolve_device(cfg.train.device))
                check_model(cfg, checked.data)
                models.add(model_key)
            if not needs_pattern(cfg):  # a pattern the run computes is not drawn here
                twins.add(run, checked.trigger, checked.stamping.shape)
        except TriggerlabError as exc:
            kind = DataFormatError if isinstance(exc, DataFormatError) else ConfigError
            raise kind(f"in {cell_label(run.cell)}: {exc}") from None
    twins.warn()


class TriggerTwins:
    """Cells whose different trigger settings draw the same pixels at the run's resolution
    (frames of 5 and 10 of 448 pixels are both 1 pixel at 64): their rows are one experiment."""

    PROBES = 4

    def __init__(self) -> None:
        self.seen: dict[tuple[Any, ...], tuple[str, str]] = {}
        self.drawn: set[tuple[str, tuple[int, int, int]]] = set()
        self.pairs: dict[tuple[str, str], None] = {}  # ordered, and found in constant time

    def add(self, run: PlannedRun, trigger: Trigger, shape: tuple[int, int, int]) -> None:
        if run.role != "grid":
            return
        spec = run.config.trigger.model_dump_json()
        if (spec, shape) in self.drawn:  # the repeats and other cells of a trigger drawn already
            return
        self.drawn.add((spec, shape))
        import torch

        from triggerlab.triggers import training_forms

        probe = torch.rand((self.PROBES, *shape), generator=torch.Generator().manual_seed(0))
        probe[0] = 0.5
        training = training_forms(trigger)  # training forms count too (Adaptive-Blend)
        digest = hashlib.sha256(str(training.cover_ratio).encode())
        for form in (trigger.apply, training.payload, training.cover):
            if form is not None:
                digest.update(form(probe, torch.Generator().manual_seed(0)).numpy().tobytes())
        key = (shape, digest.hexdigest())
        first = self.seen.setdefault(key, (spec, cell_label(run.cell)))
        pair = (first[1], cell_label(run.cell))
        if first[0] != spec:
            self.pairs.setdefault(pair)

    def warn(self) -> None:
        if not self.pairs:
            return
        shown = "; ".join(f"{a} and {b}" for a, b in list(self.pairs)[:3])
        more = f" (and {len(self.pairs) - 3} more pairs)" if len(self.pairs) > 3 else ""
        warnings.warn(
            f"different trigger settings draw identical triggers at this resolution: {shown}"
            f"{more}; their results will be the same experiment",
            UserWarning,
            stacklevel=3,
        )
