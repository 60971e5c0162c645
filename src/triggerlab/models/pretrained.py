"""Starting weights: ImageNet weights (torchvision's cache, timm's hub, an offline package) or a
local checkpoint, read without running pickled code, with their provenance recorded.

Every problem (weights not cached and not downloadable, a checkpoint that does not fit)
is a ConfigError raised before any run starts, naming the file and the folder to put it in.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from triggerlab.errors import ConfigError
from triggerlab.files import file_digest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Weights:
    """Where a model's starting weights came from, and the input normalisation they expect."""

    source: str  # e.g. "torchvision AlexNet_Weights.IMAGENET1K_V1", "checkpoint"
    path: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def record(self) -> dict[str, Any]:
        """The ``model.weights`` entry of summary.json."""
        return {
            "source": self.source,
            "file": None if self.path is None else str(self.path),
            "sha256": None if self.path is None else file_digest(self.path),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A mapping of names to tensors from safetensors or a ``weights_only`` torch file.

    ConfigError (without a key prefix: callers add theirs) when the file is missing,
    unreadable, or holds anything but tensors.
    """
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{path} is not a plain state dict that loads with weights_only=True "
            f"(save model.state_dict(), not the model): {first}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # the common checkpoint wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` strictly; ConfigError listing missing, unexpected and misshapen keys.

    A CIFAR ResNet saved before it had named stages loads too (its keys are renamed)."""
    from triggerlab.models.resnet_cifar import StagedResNet, renamed_flat_blocks

    if isinstance(model, StagedResNet):
        state = renamed_flat_blocks(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshapen:
        shown = {"missing keys": missing, "unexpected keys": unexpected, "shapes": misshapen}
        parts = [
            f"{what}: {', '.join(items[:8])}"
            + (f" (and {len(items) - 8} more)" if len(items) > 8 else "")
            for what, items in shown.items()
            if items
        ]
        raise ConfigError("the weights do not fit the model; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def cached_download(url: str, what: str) -> Path:
    """The file of ``url`` in torch's hub cache (``TORCH_HOME``), downloaded once when missing."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / os.path.basename(url)
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as exc:  # no network, a proxy, a full disk: all mean "put it there yourself"
        Path(f"{path}.partial").unlink(missing_ok=True)
        raise ConfigError(
            f"model.pretrained: the {what} are not in {path} and cannot be downloaded "
            f"({type(exc).__name__}: {exc}); download {url} and put it in {folder} "
            "(set TORCH_HOME to use another cache folder)"
        ) from None
    return path
