"""Audit a model someone else trained: load its definition and weights, scan it for backdoors.

The weights are read from safetensors, or from a PyTorch state dict with
``torch.load(..., weights_only=True)``: no pickled code is ever executed, and
the weights file is checked before anything is imported. The model's own
definition is imported and called, though: ``package.module:factory`` runs
that module's code, so audit only code you trust. The scan is Neural Cleanse
on clean images of the chosen dataset.
"""

from __future__ import annotations

import importlib
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from triggerlab.config import ExperimentConfig, apply_overrides, load_config, validate_config
from triggerlab.data import prepare_data
from triggerlab.defenses.neural_cleanse import CleanseScan, ReversedTrigger, scan_and_flag
from triggerlab.devices import resolve_device
from triggerlab.errors import ArgumentError
from triggerlab.files import write_bytes_atomic, write_json_atomic


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for models trained on normalised inputs."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def load_factory(path: str) -> Callable[..., Any]:
    """``package.module:factory`` -> the callable; ConfigError when it does not import."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ArgumentError("model", f"expected package.module:factory, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing the user's module is their input's fault
        raise ArgumentError(
            "model", f"cannot import {module_name!r} ({type(exc).__name__}: {exc})"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ArgumentError("model", f"{module_name!r} has no callable {attribute!r}")
    return factory


def build_user_model(path: str, kwargs: dict[str, Any]) -> nn.Module:
    factory = load_factory(path)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ArgumentError("model_kwargs", f"{path} does not accept {kwargs} ({exc})") from None
    if not isinstance(model, nn.Module):
        raise ArgumentError(
            "model", f"{path} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain mapping of names to tensors, from safetensors or a weights-only torch file."""
    if not path.is_file():
        raise ArgumentError("weights", f"{path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ArgumentError(
                "weights", f"{path} is not a readable safetensors file ({exc})"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArgumentError(
            "weights",
            f"{path} is not a plain state dict that loads with weights_only=True "
            f"(save model.state_dict(), not the model): {first}",
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArgumentError(
            "weights", f"{path} holds a {type(state).__name__}, not a state dict of tensors"
        )
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ArgumentError(
            "weights",
            "the weights do not match the model; "
            f"missing keys: {', '.join(missing) or 'none'}; "
            f"unexpected keys: {', '.join(unexpected) or 'none'}",
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArgumentError(
            "weights", f"shapes do not match the model ({str(exc).splitlines()[-1].strip()})"
        ) from None


def parse_normalization(text: str, channels: int) -> tuple[list[float], list[float]]:
    """``MEAN,STD``: one value each, or per channel joined by ``/``: ``0.5/0.4/0.3,0.2/0.2/0.2``."""
    parts = text.split(",")
    try:
        mean, std = (
            ([float(v) for v in part.split("/")] for part in parts) if len(parts) == 2 else ([], [])
        )
    except ValueError:
        mean, std = [], []
    if not mean or not std:
        raise ArgumentError(
            "input_normalization", f"expected MEAN,STD (e.g. 0.5,0.5), got {text!r}"
        )
    for name, values in (("MEAN", mean), ("STD", std)):
        if len(values) not in (1, channels):
            raise ArgumentError(
                "input_normalization",
                f"{name} has {len(values)} values; the data has {channels} "
                "channel(s): expected 1 or one per channel",
            )
    if any(s <= 0 for s in std):
        raise ArgumentError("input_normalization", f"STD must be positive, got {std}")
    return mean * (channels // len(mean)), std * (channels // len(std))


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
            "classes": [
                {
                    "class": c,
                    "name": self.class_names[c],
                    "l1": t.l1,
                    "anomaly_index": self.anomaly_index[c],
                    "reversed_trigger_success": t.success,
                }
                for c, t in enumerate(self.triggers)
            ],
        }


def audit_model(
    model: nn.Module,
    cfg: ExperimentConfig,
    samples: int = 500,
    steps: int = 300,
    cost: float = 3.0,
    out: Path | str | None = None,
) -> AuditResult:
    """Neural Cleanse on ``samples`` clean test images of ``cfg.data``; a report in ``out``."""
    if samples < 1:
        raise ArgumentError("samples", f"expected at least 1, got {samples}")
    data = prepare_data(cfg.data, cfg.split_seed)
    if data.is_regression:
        raise ArgumentError("data", "the audit scans classes; this dataset has continuous labels")
    device = resolve_device(cfg.train.device)
    model = model.to(device).eval()
    clean = data.test.subset(torch.arange(min(samples, len(data.test))))
    with torch.no_grad():
        probe = model(torch.zeros(1, *data.shape, device=device))
    if probe.shape[-1] != len(data.class_names):
        raise ArgumentError(
            "model",
            f"it outputs {probe.shape[-1]} values per image but {cfg.data.name} has "
            f"{len(data.class_names)} classes",
        )
    found = scan_and_flag(
        model,
        clean.images,
        clean.targets,
        len(data.class_names),
        steps=steps,
        cost=cost,
        device=device,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    result = AuditResult(found, data.class_names)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report = {"data": cfg.data.model_dump(mode="json"), **result.to_json()}
        write_json_atomic(out / "audit.json", report)
        write_bytes_atomic(out / "reversed_triggers.png", found.figure(data.class_names))
    return result


def model_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArgumentError("model_kwargs", f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ArgumentError("model_kwargs", f"expected a JSON object, got {type(value).__name__}")
    return value


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
    samples: int = 500,
    steps: int = 300,
    out: Path | str | None = None,
) -> AuditResult:
    """Audit a model given as ``package.module:factory`` and a weights file.

    The weights are read (safetensors, or a state dict with ``weights_only``)
    before the factory's module is imported: importing it runs its code.
    """
    cfg = audit_config(data, overrides)
    state = read_state_dict(Path(weights))
    network = build_user_model(factory, model_kwargs(kwargs))
    load_weights(network, state)
    if input_normalization is not None:
        channels = prepare_data(cfg.data, cfg.split_seed).shape[0]
        mean, std = parse_normalization(input_normalization, channels)
        network = nn.Sequential(Normalize(mean, std), network)
    return audit_model(network, cfg, samples=samples, steps=steps, out=out)


def audit_run(
    run_dir: Path | str,
    samples: int = 500,
    steps: int = 300,
    cost: float = 3.0,
    out: Path | str | None = None,
) -> AuditResult:
    """Audit the model a triggerlab run saved (``output.save_model``), on its own data."""
    from triggerlab.experiment import rebuild

    prepared = rebuild(Path(run_dir))
    return audit_model(prepared.model, prepared.cfg, samples, steps, cost, out)
