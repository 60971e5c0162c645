"""Checkpoints: everything a killed run needs to continue exactly where it stopped.

Every ``train.checkpoint_every`` epochs a run writes ``checkpoint-<stage>-<epoch>.safetensors``
(the model's weights, the optimiser's tensors, every random generator's state) and then
``checkpoint.json`` (which tensor file is current and its SHA-256, the stage and epoch, the
optimiser's settings, the scheduler and gradient scaler states, the epochs' metrics so
far, the SHA-256 of the run's ``config.yaml``), then deletes the previous tensor file. Each
file is written atomically and the JSON names its tensor file, so a kill at any instant
leaves a whole checkpoint: the new one, or the previous one with its own file.

Everything resume reads is checked before it is used: the JSON carries a digest of all its
other fields (so a changed history, scheduler state or learning rate is noticed), each field
is validated (types, a known stage), the tensor file must match its SHA-256, the run's
config.yaml must be the one the checkpoint was made with, and the stage, epoch and history
must fit that config (``Checkpoint.check_plan``). Anything else is refused with one message,
never loaded. The digest detects changes and damage; it is no signature (whoever can write
the run folder could recompute it, as they could edit ``summary.json``). A completed run
removes its checkpoint unless asked to keep it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from triggerlab.errors import DataFormatError
from triggerlab.files import first_problem, write_bytes_atomic, write_json_atomic
from triggerlab.train.optimizers import Optimiser

META = "checkpoint.json"
TENSORS_GLOB = "checkpoint-*.safetensors"
CONFIG = "config.yaml"  # the run's config, as rundir names it (rundir imports this module)

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Number = float | int | None  # an epoch's metrics: numbers (NaN included), or null


class CheckpointMeta(BaseModel):
    """What ``checkpoint.json`` must hold, field by field, before any of it is used."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tensors: Annotated[str, Field(pattern=r"^checkpoint-[a-z]+-[0-9]+\.safetensors$")]
    stage: Literal["train", "finetune"]
    epoch: int = Field(ge=1)
    history: list[dict[str, Number | str]]
    sha256: Sha256
    config_sha256: Sha256
    digest: Sha256
    param_groups: list[dict[str, Any]] = Field(min_length=1)
    optimizer_values: dict[str, dict[str, Any]]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any] | None


@dataclass
class Checkpoint:
    """A saved training state, read back and verified."""

    stage: str  # "train", or "finetune" for reference 000's second stage
    epoch: int  # epochs of that stage completed
    history: list[dict[str, Any]]  # every epoch's record so far, all stages
    tensors: dict[str, torch.Tensor] = field(repr=False)
    meta: dict[str, Any] = field(repr=False)
    path: Path = Path(META)  # the checkpoint.json it came from, for messages

    def check_plan(self, stages: Sequence[tuple[str, int]], columns: Sequence[str]) -> None:
        """The stage, epoch and history must be ones this run's config can have produced:
        ``stages`` are its (name, epochs), ``columns`` the metrics every epoch records."""
        names = [name for name, _ in stages]
        if self.stage not in names:
            self._refuse(f"stage {self.stage!r} is not a stage of this run ({', '.join(names)})")
        index = names.index(self.stage)
        epochs = stages[index][1]
        if not 1 <= self.epoch < epochs:  # none is written after a stage's last epoch
            self._refuse(
                f"epoch {self.epoch} of stage {self.stage!r} is outside 1-{epochs - 1} "
                f"(the stage has {epochs} epochs)"
            )
        expected = [name for name, count in stages[:index] for _ in range(count)]
        expected += [self.stage] * self.epoch
        if len(self.history) != len(expected):
            self._refuse(
                f"its history holds {len(self.history)} epochs; epoch {self.epoch} of stage "
                f"{self.stage!r} needs {len(expected)}"
            )
        for number, (record, stage) in enumerate(zip(self.history, expected, strict=True), 1):
            missing = [c for c in columns if not isinstance(record.get(c), int | float)]
            if record.get("epoch") != number or record.get("stage") != stage or missing:
                self._refuse(
                    f"history record {number} is not epoch {number} of stage {stage!r} with "
                    f"the numbers {', '.join(columns)}"
                    + (f" (missing or not numbers: {', '.join(missing)})" if missing else "")
                )

    def _refuse(self, why: str) -> None:
        raise DataFormatError(
            f"{self.path}: does not fit this run: {why}; delete {self.path.name} to start the "
            "run again"
        )


@dataclass
class TrainState:
    """What changes while training, to save and to restore."""

    model: nn.Module
    optimizer: Optimiser
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
        """Load the checkpoint into the model, optimiser, scheduler, scaler and generators;
        DataFormatError when it does not fit them."""
        try:
            self._restore(checkpoint)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataFormatError(
                f"{checkpoint.path}: does not fit this run's model or optimiser ({first}); "
                f"delete {checkpoint.path.name} to start the run again"
            ) from None

    def _restore(self, checkpoint: Checkpoint) -> None:
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
        "config_sha256": _config_sha256(folder),
        **state.settings(),
    }
    plain = json.loads(json.dumps(meta, default=_plain))
    write_json_atomic(folder / META, {**plain, "digest": meta_digest(plain)})
    for old in folder.glob(TENSORS_GLOB):  # earlier checkpoints, now superseded
        if old.name != tensors:
            old.unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot save {type(value).__name__} in a checkpoint")


def meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of every field of a checkpoint's JSON but the digest itself, canonically."""
    rest = {k: v for k, v in meta.items() if k != "digest"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _config_sha256(folder: Path) -> str:
    path = folder / CONFIG
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _read_meta(meta_path: Path) -> CheckpointMeta:
    """``checkpoint.json``, its digest verified and every field validated."""
    delete = f"delete {meta_path.name} to start the run again"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"{meta_path}: unreadable checkpoint ({exc}); {delete}") from None
    if not isinstance(meta, dict):
        raise DataFormatError(
            f"{meta_path}: expected a checkpoint (a JSON object), got {type(meta).__name__}; "
            f"{delete}"
        )
    if "digest" not in meta:
        raise DataFormatError(
            f"{meta_path}: has no digest (an older triggerlab wrote it, or it was changed), so "
            f"its content cannot be trusted; {delete}"
        )
    if meta["digest"] != meta_digest(meta):
        raise DataFormatError(
            f"{meta_path}: changed or damaged since it was written (its digest does not match "
            f"its content); {delete}"
        )
    try:
        return CheckpointMeta.model_validate(meta)
    except ValidationError as err:
        raise DataFormatError(
            f"{meta_path}: not a valid checkpoint ({first_problem(err)}); {delete}"
        ) from None


def read_checkpoint(folder: Path) -> Checkpoint | None:
    """The run's checkpoint, None when there is none; DataFormatError when it is damaged,
    changed, or made with another config.yaml."""
    meta_path = folder / META
    if not meta_path.exists():
        return None
    meta = _read_meta(meta_path)
    if meta.config_sha256 != _config_sha256(folder):
        raise DataFormatError(
            f"{folder / CONFIG}: changed since the checkpoint was written (its SHA-256 does not "
            f"match {META}); a checkpoint continues only the config it was made with: put that "
            f"config back, or delete {META} to start the run again"
        )
    tensor_path = folder / meta.tensors
    try:
        data = tensor_path.read_bytes()
    except OSError as exc:
        raise DataFormatError(
            f"{meta_path}: unreadable checkpoint ({exc}); delete {META} to start the run again"
        ) from None
    if hashlib.sha256(data).hexdigest() != meta.sha256:
        raise DataFormatError(
            f"{tensor_path}: the checkpoint is damaged (its SHA-256 does not match "
            f"{meta_path.name}); delete {meta_path.name} to start the run again"
        )
    try:
        tensors = load_bytes(data)
    except Exception as exc:  # safetensors raises its own error types
        raise DataFormatError(f"{tensor_path}: unreadable checkpoint ({exc})") from None
    plain = meta.model_dump()
    return Checkpoint(meta.stage, meta.epoch, list(meta.history), tensors, plain, meta_path)


def remove_stale_tensors(folder: Path) -> None:
    """Tensor files the current checkpoint does not name (a kill between writing a new one and
    its checkpoint.json leaves one behind); all of them when there is no checkpoint."""
    try:
        current = json.loads((folder / META).read_text(encoding="utf-8")).get("tensors")
    except (OSError, ValueError, AttributeError):
        current = None
    for path in folder.glob(TENSORS_GLOB):
        if path.name != current:
            path.unlink(missing_ok=True)


def remove_checkpoint(folder: Path) -> None:
    (folder / META).unlink(missing_ok=True)  # first: the checkpoint is gone before its tensors
    for path in folder.glob(TENSORS_GLOB):
        path.unlink(missing_ok=True)
