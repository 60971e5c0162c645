"""Audit a model someone else trained: load its definition and weights, scan it for backdoors.

The weights are read from safetensors, or from a PyTorch state dict with
``torch.load(..., weights_only=True)``: no pickled code is ever executed. The
scan is Neural Cleanse on clean images of the chosen dataset.
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

from triggerlab.config import ExperimentConfig
from triggerlab.data import prepare_data
from triggerlab.defenses.neural_cleanse import (
    ReversedTrigger,
    anomaly_indices,
    flagged_classes,
    scan,
)
from triggerlab.errors import ConfigError
from triggerlab.plots import save_reversed_triggers
from triggerlab.runio import write_json_atomic
from triggerlab.train import resolve_device


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
        raise ConfigError(f"--model: expected package.module:factory, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing the user's module is their input's fault
        raise ConfigError(
            f"--model: cannot import {module_name!r} ({type(exc).__name__}: {exc})"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"--model: {module_name!r} has no callable {attribute!r}")
    return factory


def build_user_model(path: str, kwargs: dict[str, Any]) -> nn.Module:
    factory = load_factory(path)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"--model-kwargs: {path} does not accept {kwargs} ({exc})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"--model: {path} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain mapping of names to tensors, from safetensors or a weights-only torch file."""
    if not path.is_file():
        raise ConfigError(f"--weights: {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(
                f"--weights: {path} is not a readable safetensors file ({exc})"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"--weights: {path} is not a plain state dict that loads with weights_only=True "
            f"(save model.state_dict(), not the model): {first}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"--weights: {path} holds a {type(state).__name__}, not a state dict of tensors"
        )
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            "--weights: the weights do not match the model; "
            f"missing keys: {', '.join(missing) or 'none'}; "
            f"unexpected keys: {', '.join(unexpected) or 'none'}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"--weights: shapes do not match the model ({str(exc).splitlines()[-1].strip()})"
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
        raise ConfigError(f"--input-normalization: expected MEAN,STD (e.g. 0.5,0.5), got {text!r}")
    for name, values in (("MEAN", mean), ("STD", std)):
        if len(values) not in (1, channels):
            raise ConfigError(
                f"--input-normalization: {name} has {len(values)} values; the data has {channels} "
                "channel(s): expected 1 or one per channel"
            )
    if any(s <= 0 for s in std):
        raise ConfigError(f"--input-normalization: STD must be positive, got {std}")
    return mean * (channels // len(mean)), std * (channels // len(std))


@dataclass
class AuditResult:
    triggers: list[ReversedTrigger]
    anomaly_index: list[float]
    flagged: list[int]
    class_names: tuple[str, ...]

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
    out: Path | None = None,
) -> AuditResult:
    """Neural Cleanse on ``samples`` clean test images of ``cfg.data``; a report in ``out``."""
    data = prepare_data(cfg.data, cfg.split_seed)
    if data.is_regression:
        raise ConfigError("--data: the audit scans classes; this dataset has continuous labels")
    device = resolve_device(cfg.train.device)
    model = model.to(device).eval()
    clean = data.test.subset(torch.arange(min(samples, len(data.test))))
    generator = torch.Generator().manual_seed(cfg.train.seed)
    with torch.no_grad():
        probe = model(torch.zeros(1, *data.shape, device=device))
    if probe.shape[-1] != len(data.class_names):
        raise ConfigError(
            f"--model: it outputs {probe.shape[-1]} values per image but {cfg.data.name} has "
            f"{len(data.class_names)} classes"
        )
    triggers = scan(
        model, clean.images, clean.targets, len(data.class_names), steps, cost, device, generator
    )
    norms = torch.tensor([t.l1 for t in triggers])
    result = AuditResult(
        triggers, anomaly_indices(norms).tolist(), flagged_classes(norms), data.class_names
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            out / "audit.json", {"data": cfg.data.model_dump(mode="json"), **result.to_json()}
        )
        save_reversed_triggers(
            out / "reversed_triggers.png", triggers, result.anomaly_index, data.class_names
        )
    return result


def model_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs: expected a JSON object, got {type(value).__name__}")
    return value
