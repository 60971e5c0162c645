"""Checkpoints: everything a killed run needs to continue exactly where it stopped.

Every ``train.checkpoint_every`` epochs a run writes ``checkpoint-<stage>-<epoch>.safetensors``
(the model's weights, the optimiser's tensors, every random generator's state) and then
``checkpoint.json`` (which tensor file is current and its SHA-256, the stage and epoch, the
optimiser's settings, the scheduler and gradient scaler states, the epochs' metrics so
far), then deletes the previous tensor file. Each file is written atomically and the JSON
names its tensor file, so a kill at any instant leaves a whole checkpoint: the new one, or
the previous one with its own file. On resume the checksum is verified: a corrupt
checkpoint is refused, never loaded silently. A completed run removes its checkpoint
unless asked to keep it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from triggerlab.errors import DataFormatError
from triggerlab.files import write_bytes_atomic, write_json_atomic

META = "checkpoint.json"
TENSORS_GLOB = "checkpoint-*.safetensors"


@dataclass
class Checkpoint:
    """A saved training state, read back and verified."""

    stage: str  # "train", or "finetune" for reference 000's second stage
    epoch: int  # epochs of that stage completed
    history: list[dict[str, Any]]  # every epoch's record so far, all stages
    tensors: dict[str, torch.Tensor] = field(repr=False)
    meta: dict[str, Any] = field(repr=False)


@dataclass
class TrainState:
    """What changes while training, to save and to restore."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    scaler: torch.amp.GradScaler | None
    generators: dict[str, torch.Generator]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v.detach().cpu() for k, v in self.model.state_dict().items()}
        for index, values in self.optimizer.state_dict()["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    out[f"optimizer.{index}.{key}"] = value.detach().cpu()
        out.update({f"rng.{name}": g.get_state() for name, g in self.generators.items()})
        out["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for device, value in enumerate(torch.cuda.get_rng_state_all()):
                out[f"rng.cuda.{device}"] = value
        return {k: v.contiguous() for k, v in out.items()}

    def settings(self) -> dict[str, Any]:
        optimizer = self.optimizer.state_dict()
        plain = {
            str(i): {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
            for i, values in optimizer["state"].items()
        }
        return {
            "param_groups": optimizer["param_groups"],
            "optimizer_values": plain,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        tensors, meta = checkpoint.tensors, checkpoint.meta
        model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model)
        state: dict[int, dict[str, Any]] = {}
        for index, values in meta["optimizer_values"].items():
            state[int(index)] = dict(values)
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if self.scheduler is not None and meta["scheduler"] is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        if self.scaler is not None and meta["scaler"] is not None:
            self.scaler.load_state_dict(meta["scaler"])
        for name, generator in self.generators.items():
            generator.set_state(tensors[f"rng.{name}"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    folder: Path, stage: str, epoch: int, state: TrainState, history: list[dict[str, Any]]
) -> None:
    data = save_bytes(state.tensors())
    tensors = f"checkpoint-{stage}-{epoch}.safetensors"
    write_bytes_atomic(folder / tensors, data)
    meta = {
        "tensors": tensors,
        "stage": stage,
        "epoch": epoch,
        "history": history,
        "sha256": hashlib.sha256(data).hexdigest(),
        **state.settings(),
    }
    write_json_atomic(folder / META, json.loads(json.dumps(meta, default=_plain)))
    for old in folder.glob(TENSORS_GLOB):  # earlier checkpoints, now superseded
        if old.name != tensors:
            old.unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot save {type(value).__name__} in a checkpoint")


def read_checkpoint(folder: Path) -> Checkpoint | None:
    """The run's checkpoint, None when there is none; DataFormatError when it is damaged."""
    meta_path = folder / META
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        name = meta["tensors"]
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(f"expected a file name under 'tensors', got {name!r}")
        tensor_path = folder / name
        data = tensor_path.read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{meta_path}: unreadable checkpoint ({exc})") from None
    if not isinstance(meta, dict) or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise DataFormatError(
            f"{tensor_path}: the checkpoint is damaged (its SHA-256 does not match "
            f"{meta_path.name}); delete {meta_path.name} to start the run again"
        )
    try:
        tensors = load_bytes(data)
    except Exception as exc:  # safetensors raises its own error types
        raise DataFormatError(f"{tensor_path}: unreadable checkpoint ({exc})") from None
    return Checkpoint(meta["stage"], int(meta["epoch"]), list(meta["history"]), tensors, meta)


def remove_checkpoint(folder: Path) -> None:
    (folder / META).unlink(missing_ok=True)  # first: the checkpoint is gone before its tensors
    for path in folder.glob(TENSORS_GLOB):
        path.unlink(missing_ok=True)
