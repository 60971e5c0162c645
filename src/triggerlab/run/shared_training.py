"""Train once, defend many: a trained model shared by runs that differ only in their defence.

A grid whose cells differ only in ``defense`` would train the same backdoored
model once per defence. Instead, runs with the same training key (everything
in the config but the defence, plus the share of training data the defence
holds back, which changes what the model trains on) share one folder under
``<grid>/trained/``: the first run to take its lock trains and saves the model
(safetensors) and its training record (JSON, written last: it marks the pair
complete); the others wait for the lock, then load them and go straight to
their defence. The defence gets its own seeded random stream, so a run that
loads the model ends exactly as one that trained it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from triggerlab.errors import DataFormatError
from triggerlab.files import read_json, waiting_lock, write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:
    from triggerlab.config import ExperimentConfig

TRAINED = "trained"


@dataclass(frozen=True)
class TrainingRecord:
    """What training produced besides the weights: the epochs' records and the protocol."""

    history: list[dict[str, Any]]
    log_records: list[dict[str, Any]]
    protocol: dict[str, Any] | None
    train_s: float
    # what the epochs' metrics were measured with (``evaluation_key`` of the run that trained):
    # a run that loads the model with another trigger measures its own (clean baselines)
    evaluated: str | None = None


@dataclass(frozen=True)
class SharedTraining:
    """The shared model of one training key: ``<key>.safetensors`` and ``<key>.json``."""

    folder: Path
    key: str

    @property
    def weights(self) -> Path:
        return self.folder / f"{self.key}.safetensors"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.key}.json"

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while one run trains the model, so the others wait for it instead of training."""
        return waiting_lock(self.folder / f"{self.key}.lock")

    def load_into(self, model: nn.Module) -> TrainingRecord | None:
        """The saved training, its weights loaded into ``model``; None when none is saved."""
        if not self.record.is_file():
            return None
        from safetensors.torch import load

        saved = read_json(self.record)
        data = self.weights.read_bytes() if self.weights.is_file() else b""
        if hashlib.sha256(data).hexdigest() != saved.get("sha256"):
            raise DataFormatError(
                f"{self.weights}: does not match {self.record.name} (damaged); delete both to "
                "train the model again"
            )
        model.load_state_dict(load(data))
        return TrainingRecord(
            saved["history"],
            saved["log_records"],
            saved["protocol"],
            saved["train_s"],
            saved.get("evaluated"),
        )

    def save(self, model: nn.Module, record: TrainingRecord) -> None:
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        data = save(state)
        write_bytes_atomic(self.weights, data)
        write_json_atomic(
            self.record,
            {
                "sha256": hashlib.sha256(data).hexdigest(),
                "history": record.history,
                "log_records": record.log_records,
                "protocol": record.protocol,
                "train_s": record.train_s,
                "evaluated": record.evaluated,
            },
        )


def evaluation_key(cfg: ExperimentConfig) -> str:
    """Hash of what a run's metrics are measured with besides its model and clean test set:
    its trigger, its poisoning (the target above all) and its evaluation settings."""
    measured = {s: getattr(cfg, s).model_dump(mode="json") for s in ("trigger", "poison")}
    measured["evaluation"] = cfg.evaluation.model_dump(mode="json")
    canonical = json.dumps(measured, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def measured_anew(record: TrainingRecord, final: dict[str, float]) -> TrainingRecord:
    """``record`` of a model trained by a run with another trigger, as this run measures it:
    the last epoch's metrics are this run's ``final`` ones; in the epochs before, the metrics
    measured on triggered images are None (the trainer's trigger is not this run's; those
    weights are gone), those of the clean test set and the timings stay."""
    from triggerlab.catalogue.metrics import of_clean_data

    def own(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [
            {k: v if k not in final or of_clean_data(k) else None for k, v in r.items()}
            for r in epochs
        ]
        if kept:
            kept[-1].update(final)
        return kept

    return replace(record, history=own(record.history), log_records=own(record.log_records))


def trained_files(grid_dir: Path) -> list[Path]:
    """The shared models a grid folder holds."""
    folder = grid_dir / TRAINED
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
