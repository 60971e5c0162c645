"""A model someone else defined and trained: its definition imported, its weights read safely.

The weights are read from safetensors, or from a PyTorch state dict with
``torch.load(..., weights_only=True)``: no pickled code is ever executed, and
the weights file is checked before anything is imported. The model's own
definition is imported and called, though: ``package.module:factory`` runs
that module's code, so load only code you trust.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from triggerlab.errors import ArgumentError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for models trained on normalised inputs."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@contextlib.contextmanager
def importable_from(folder: Path | str | None) -> Iterator[None]:
    """Let ``import`` find modules in ``folder`` (default: the current folder, as
    ``python -m`` does) for the duration."""
    entry = str(Path(folder if folder is not None else ".").resolve())
    if folder is not None and not Path(entry).is_dir():
        raise ArgumentError("module_path", f"{folder} is not a folder")
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


@contextlib.contextmanager
def user_code(argument: str, doing: str) -> Iterator[None]:
    """Run someone else's code: its ``sys.exit`` becomes an ArgumentError naming
    ``argument``, never the end of the command with that exit status and no report."""
    try:
        yield
    except SystemExit as exc:
        raise ArgumentError(
            argument, f"{doing} called sys.exit({exc.code!r}); expected code that returns"
        ) from None


def load_factory(path: str, module_path: Path | str | None = None) -> Callable[..., Any]:
    """``package.module:factory`` -> the callable, the module imported from ``module_path``
    (default: the current folder) or the installed packages; ArgumentError when it does not."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ArgumentError("model", f"expected package.module:factory, got {path!r}")
    try:
        with importable_from(module_path):
            module = importlib.import_module(module_name)
    except ArgumentError:
        raise
    except SystemExit as exc:  # the module's own exit must not end the audit as a success
        raise ArgumentError(
            "model",
            f"importing {module_name!r} called sys.exit({exc.code!r}); expected a module "
            "that defines the model without exiting",
        ) from None
    except Exception as exc:  # any error while importing the user's module is their input's fault
        raise ArgumentError(
            "model", f"cannot import {module_name!r} ({type(exc).__name__}: {exc})"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ArgumentError("model", f"{module_name!r} has no callable {attribute!r}")
    return factory


def build_user_model(
    path: str, kwargs: dict[str, Any], module_path: Path | str | None = None
) -> nn.Module:
    factory = load_factory(path, module_path)
    try:
        with user_code("model", f"calling {path}"):
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
    for name, values in (("MEAN", mean), ("STD", std)):
        if not all(math.isfinite(v) for v in values):
            raise ArgumentError(
                "input_normalization", f"{name} must be finite numbers, got {text!r}"
            )
    if any(s <= 0 for s in std):
        raise ArgumentError("input_normalization", f"STD must be positive, got {std}")
    return mean * (channels // len(mean)), std * (channels // len(std))


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
