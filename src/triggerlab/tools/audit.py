"""Audit a model someone else trained: Neural Cleanse on clean images of a dataset.

The model comes from ``package.module:factory`` and a weights file
(``user_models``: weights read safely, before the module is imported), or from
a triggerlab run that saved its model. The scan is Neural Cleanse as its
authors run it (``defenses/trigger_reversal``); models that end in a softmax or
log-softmax are detected and handled, and the report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from triggerlab.config import ExperimentConfig, apply_overrides, load_config, validate_config
from triggerlab.data.prepare import prepare_data
from triggerlab.defenses.neural_cleanse import CleanseScan, scan_and_flag
from triggerlab.defenses.trigger_reversal import ReversalSettings, ReversedTrigger
from triggerlab.errors import ArgumentError
from triggerlab.files import write_bytes_atomic, write_json_atomic
from triggerlab.progress import Reporter
from triggerlab.tools.user_models import (
    Normalize,
    build_user_model,
    load_weights,
    model_kwargs,
    parse_normalization,
    read_state_dict,
    user_code,
)
from triggerlab.train.devices import resolve_device


@dataclass(frozen=True)
class AuditOptions:
    """How hard the audit looks: clean images, search steps, a time budget."""

    samples: int = 500  # clean test images the triggers are reversed on
    steps: int = 200  # most optimisation steps per class
    batches_per_step: int = 10
    time_budget: float | None = None  # seconds for the whole scan, shared out among classes
    anomaly_threshold: float = 2.0
    max_norm_ratio: float = 0.5  # see defenses/neural_cleanse.py; 1 is the paper's rule

    def check(self) -> None:
        for name in ("samples", "steps", "batches_per_step"):
            if getattr(self, name) < 1:
                raise ArgumentError(name, f"expected at least 1, got {getattr(self, name)}")
        if self.time_budget is not None and not 0 < self.time_budget < math.inf:
            raise ArgumentError("time_budget", f"expected seconds > 0, got {self.time_budget}")


@dataclass
class AuditResult:
    scan: CleanseScan
    class_names: tuple[str, ...]

    @property
    def triggers(self) -> list[ReversedTrigger]:
        return self.scan.triggers

    @property
    def anomaly_index(self) -> list[float]:
        return self.scan.anomaly_index

    @property
    def flagged(self) -> list[int]:
        return self.scan.flagged

    def to_json(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "flagged_names": [self.class_names[c] for c in self.flagged],
            "conclusive": self.scan.conclusive,
            "output_kind": self.scan.output_kind,
            "notes": self.scan.notes,
            "seconds": self.scan.seconds,
            "classes": [
                {
                    "class": c,
                    "name": self.class_names[c],
                    "l1": t.l1,
                    "reached": t.reached,
                    "anomaly_index": None if math.isnan(index) else index,
                    "reversed_trigger_success": t.success,
                    "steps": t.steps,
                    "stopped": t.stopped,
                }
                for c, (t, index) in enumerate(zip(self.triggers, self.anomaly_index, strict=True))
            ],
        }


def audit_model(
    model: nn.Module,
    cfg: ExperimentConfig,
    options: AuditOptions | None = None,
    out: Path | str | None = None,
    progress: Reporter | None = None,
) -> AuditResult:
    """Neural Cleanse on ``options.samples`` clean test images of ``cfg.data``; a report
    (``audit.json``, ``reversed_triggers.png``) in ``out``."""
    options = options or AuditOptions()
    options.check()
    data = prepare_data(cfg.data, cfg.split_seed)
    if data.is_regression:
        raise ArgumentError("data", "the audit scans classes; this dataset has continuous labels")
    device = resolve_device(cfg.train.device)
    model = model.to(device).eval()
    clean = data.test.subset(torch.arange(min(options.samples, len(data.test))))
    with torch.no_grad(), user_code("model", "its forward pass"):
        try:
            probe = model(torch.zeros(1, *data.shape, device=device))
        except RuntimeError as exc:
            raise ArgumentError(
                "model",
                f"it cannot take {'x'.join(map(str, data.shape))} images "
                f"({str(exc).splitlines()[0]}); check the data section's resize and channels",
            ) from None
    if probe.shape[-1] != len(data.class_names):
        raise ArgumentError(
            "model",
            f"it outputs {probe.shape[-1]} values per image but {cfg.data.name} has "
            f"{len(data.class_names)} classes",
        )
    _check_finite(model, clean.images, device, cfg.data.name)
    with user_code("model", "its forward pass"):
        found = scan_and_flag(
            model,
            clean.images,
            clean.targets,
            len(data.class_names),
            settings=ReversalSettings(
                steps=options.steps, batches_per_step=options.batches_per_step
            ),
            device=device,
            generator=torch.Generator().manual_seed(cfg.train.seed),
            anomaly_threshold=options.anomaly_threshold,
            max_norm_ratio=options.max_norm_ratio,
            time_budget=options.time_budget,
            progress=progress,
        )
    result = AuditResult(found, data.class_names)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report = {"data": cfg.data.model_dump(mode="json"), **result.to_json()}
        write_json_atomic(out / "audit.json", report)
        write_bytes_atomic(out / "reversed_triggers.png", found.figure(data.class_names))
    return result


@torch.no_grad()
def _check_finite(model: nn.Module, images: torch.Tensor, device: torch.device, name: str) -> None:
    """A model whose outputs on clean images hold NaN or infinity cannot be audited: every
    reversed trigger would be measured against garbage (it ended "inconclusive")."""
    from triggerlab.train.devices import to_input
    from triggerlab.train.loop import EVAL_BATCH_SIZE

    bad = 0
    with user_code("model", "its forward pass"):
        for start in range(0, images.shape[0], EVAL_BATCH_SIZE):
            outputs = model(to_input(images[start : start + EVAL_BATCH_SIZE], device)).float()
            bad += int((~torch.isfinite(outputs)).flatten(1).any(dim=1).sum())
    if bad:
        raise ArgumentError(
            "model",
            f"it outputs NaN or infinite values for {bad} of {images.shape[0]} clean {name} "
            "images; an audit needs finite outputs (check the weights and the input "
            "normalisation)",
        )


def audit_config(data: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The config whose data section supplies clean images: a YAML file, or a dataset name."""
    path = Path(data)
    if path.suffix in (".yaml", ".yml"):
        return load_config(path, overrides)
    return validate_config(
        apply_overrides({"data": {"name": str(data)}}, overrides or []), "(data)"
    )


def audit_files(
    factory: str,
    weights: Path | str,
    data: str | Path,
    *,
    kwargs: str | None = None,
    input_normalization: str | None = None,
    overrides: list[str] | None = None,
    module_path: Path | str | None = None,
    options: AuditOptions | None = None,
    out: Path | str | None = None,
    progress: Reporter | None = None,
) -> AuditResult:
    """Audit a model given as ``package.module:factory`` and a weights file.

    The weights are read (safetensors, or a state dict with ``weights_only``)
    before the factory's module is imported (from ``module_path``, else the
    current folder or the installed packages): importing it runs its code.
    """
    (options or AuditOptions()).check()
    cfg = audit_config(data, overrides)
    state = read_state_dict(Path(weights))
    network = build_user_model(factory, model_kwargs(kwargs), module_path)
    load_weights(network, state)
    if input_normalization is not None:
        channels = prepare_data(cfg.data, cfg.split_seed).shape[0]
        mean, std = parse_normalization(input_normalization, channels)
        network = nn.Sequential(Normalize(mean, std), network)
    return audit_model(network, cfg, options, out, progress)


def audit_run(
    run_dir: Path | str,
    options: AuditOptions | None = None,
    out: Path | str | None = None,
    progress: Reporter | None = None,
) -> AuditResult:
    """Audit the model a triggerlab run saved (``output.save_model``), on its own data."""
    from triggerlab.run.prepare import rebuild

    prepared = rebuild(Path(run_dir))
    return audit_model(prepared.model, prepared.cfg, options, out, progress)
