"""The run directory: the one module that knows its files, writes them and reads them back.

| file | content |
| --- | --- |
| ``config.yaml`` | the resolved config; rerunning it reproduces the run |
| ``metrics.csv`` | one row per epoch, rewritten after every epoch |
| ``poisoned_indices.csv`` (``_finetune``) | which training samples were poisoned |
| ``cover_indices.csv`` (``_finetune``) | cover samples: triggered, labels kept (some triggers) |
| ``samples.png``, ``confusion.png``, ... | figures |
| ``model.safetensors`` | the trained weights (``output.save_model``) |
| ``summary.json`` | final metrics and provenance, written last: its presence marks a finished run |
| ``failed.json`` | the error of a run that failed inside a grid |

Every file is written to a temporary name and renamed; a temporary file that a kill left
behind is removed when the run resumes and when it finishes, so a finished run holds only
its own files. One process at a time works in a run folder (``RunDir.lock``).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import os
import platform
import subprocess
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from triggerlab.errors import ConfigError, DataFormatError
from triggerlab.files import (
    first_problem,
    read_json,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from triggerlab.attack.poison import PoisonResult
    from triggerlab.config import ExperimentConfig
    from triggerlab.train.checkpoint import Checkpoint

CONFIG = "config.yaml"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
FAILED = "failed.json"
MODEL = "model.safetensors"
SAMPLES = "samples.png"
TRIGGER_PREVIEW = "trigger.png"  # the first attacked test image under the trigger, enlarged
TIMING_COLUMNS = ("epoch_time_s", "train_time_s", "train_images_per_s")
TEMPORARY_GLOB = ".*.tmp"  # files.write_bytes_atomic's names: .<file>.<random>.tmp


def metrics_columns(metric_names: Sequence[str]) -> tuple[str, ...]:
    """Columns of metrics.csv for a task's metrics."""
    return ("epoch", "train_loss", *metric_names, *TIMING_COLUMNS)


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class PoisonRecord(_Record):
    rate: float | None = None
    count: int
    fraction: float


class TimingRecord(_Record):
    total_s: float
    train_s: float
    train_images_per_s: float


class RunSummary(_Record):
    """What ``summary.json`` must hold for the results table to read it; more keys may follow."""

    status: Literal["complete"]
    task: Literal["classification", "regression"] | None = None
    final: dict[str, float]
    poison: PoisonRecord
    data: dict[str, Any] = {}
    stealth: dict[str, float | None] = {}
    defense: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    timings: TimingRecord


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("triggerlab", "torch", "torchvision", "numpy", "scikit-learn", "pydantic"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def git_commit(start: Path | None = None) -> dict[str, Any] | None:
    """The project's commit and whether the tree had local changes; None outside a checkout."""
    folder = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def label_text(values: torch.Tensor) -> list[Any]:
    """Class indices as they are; regression label vectors as ``a;b;c``."""
    if values.ndim == 1:
        return values.tolist()
    return [";".join(f"{v:.6g}" for v in row) for row in values.tolist()]


@dataclass(frozen=True)
class RunDir:
    """One run's folder and its files."""

    path: Path

    @classmethod
    def allocate(cls, directory: Path, name: str | None, stem: str, exact: bool = False) -> RunDir:
        """Create the folder: ``directory/name``, or ``directory/<stem>-<UTC time>``.

        A taken name gets the first free numeric suffix (``name-2``), with a warning, so
        rerunning a config that names its run works; ``exact`` refuses a taken name instead.
        """
        try:
            if name is not None and exact:
                path = directory / name
                if path.exists() and (not path.is_dir() or any(path.iterdir())):
                    raise ConfigError(
                        f"output: run directory {path} already exists and is not empty"
                    )
                path.mkdir(parents=True, exist_ok=True)
                return cls(path)
            directory.mkdir(parents=True, exist_ok=True)
            base = name or f"{stem}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
            for suffix in range(1, 1000):
                path = directory / (base if suffix == 1 else f"{base}-{suffix}")
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                if name is not None and suffix > 1:
                    warnings.warn(
                        f"output.name: {directory / name} is taken; this run goes to {path} "
                        "(to continue a killed run in its folder, resume it instead)",
                        stacklevel=3,
                    )
                return cls(path)
        except OSError as exc:  # a file in the way, no permission, a full or read-only disk
            raise ConfigError(
                f"output.directory: cannot create a run folder in {directory} "
                f"({exc.strerror or exc})"
            ) from None
        raise ConfigError(f"output.directory: cannot find a free run name under {directory}")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder for this process (ConfigError when another holds it): two
        processes must never train into one run. The lock is on the folder itself, so it adds
        no file, and it dies with its process, even on SIGKILL."""
        try:
            handle = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot open the run folder ({exc})") from None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"{self.path}: another triggerlab process is running this run now; wait "
                    "for it to end (or stop it) before resuming it"
                ) from None
            yield
        finally:
            os.close(handle)  # releases the lock

    def remove_temporaries(self) -> None:
        """Temporary files of atomic writes that a kill interrupted (never this process's own:
        it holds the run's lock and finishes each write before the next)."""
        for path in self.path.glob(TEMPORARY_GLOB):
            if path.is_file():
                path.unlink(missing_ok=True)

    def prepare_resume(self) -> Checkpoint | None:
        """The checkpoint to continue from (None: start again in place); ConfigError when the
        folder is not an unfinished run, DataFormatError when its checkpoint cannot be trusted.
        Call it holding the run's lock."""
        from triggerlab.train.checkpoint import read_checkpoint

        if not (self.path / CONFIG).is_file():
            raise ConfigError(f"{self.path}: not a run directory (no {CONFIG}) to resume")
        if self.is_complete():
            raise ConfigError(f"{self.path}: the run is complete; there is nothing to resume")
        checkpoint = read_checkpoint(self.path)
        self.remove_temporaries()
        (self.path / FAILED).unlink(missing_ok=True)
        return checkpoint

    def continues(self, cfg: ExperimentConfig) -> bool:
        """Whether this folder holds a killed run of exactly ``cfg`` with a checkpoint to
        continue from (an unreadable config counts as another run's)."""
        from triggerlab.train.checkpoint import META

        if not (self.path / META).is_file() or self.is_complete():
            return False
        try:
            return self.read_config().model_dump() == cfg.model_dump()
        except Exception:  # a damaged or foreign config.yaml: not this run's
            return False

    # ---- writing -----------------------------------------------------------------------------

    def write_config(self, cfg: ExperimentConfig) -> None:
        write_text_atomic(self.path / CONFIG, cfg.to_yaml())

    def write_metrics(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        write_csv_atomic(self.path / METRICS, columns, rows)

    def write_poisoned(self, poisoned: PoisonResult, stage: str = "") -> None:
        """``poisoned_indices.csv`` (``poisoned_indices_<stage>.csv`` for a later stage), and
        ``cover_indices.csv`` (``_<stage>``) when the trigger adds cover samples."""
        suffix = (f"_{stage}" if stage else "") + ".csv"
        rows = zip(
            poisoned.indices.tolist(),
            poisoned.source_indices.tolist(),
            label_text(poisoned.original_labels),
            label_text(poisoned.new_labels),
            strict=True,
        )
        header = ("index", "source_index", "original_label", "new_label")
        write_csv_atomic(self.path / f"poisoned_indices{suffix}", header, list(rows))
        if poisoned.cover_indices.numel():
            labels = poisoned.train.targets[poisoned.cover_indices]
            cover = zip(
                poisoned.cover_indices.tolist(),
                poisoned.cover_sources.tolist(),
                label_text(labels),
                strict=True,
            )
            header = ("index", "source_index", "label")
            write_csv_atomic(self.path / f"cover_indices{suffix}", header, list(cover))

    def write_confusions(
        self, output: str, edges: Sequence[float], matrices: dict[str, torch.Tensor]
    ) -> None:
        """``confusion_<which>.csv`` per matrix of bin counts (rows true, columns predicted)."""
        count = len(edges) - 1
        names = [f"[{edges[i]:.3g}, {edges[i + 1]:.3g})" for i in range(count)]
        for which, matrix in matrices.items():
            rows = [[names[i], *matrix[i].tolist()] for i in range(count)]
            write_csv_atomic(
                self.path / f"confusion_{which}.csv", (f"true \\ predicted {output}", *names), rows
            )

    def write_png(self, name: str, png: bytes) -> None:
        write_bytes_atomic(self.path / name, png)

    def write_model(self, model: nn.Module) -> None:
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        write_bytes_atomic(self.path / MODEL, save(state))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Written last: a folder with a complete summary is a finished run."""
        write_json_atomic(self.path / SUMMARY, summary)

    def write_failed(self, exc: BaseException) -> dict[str, str]:
        error = {
            "error": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        }
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / FAILED, error)
        return error

    # ---- reading -----------------------------------------------------------------------------

    def is_complete(self) -> bool:
        """A run is done when its summary.json parses and says so (it is written last)."""
        try:
            return json.loads((self.path / SUMMARY).read_text()).get("status") == "complete"
        except (OSError, ValueError, AttributeError):
            return False

    def status(self) -> Literal["complete", "failed", "missing"]:
        if self.is_complete():
            return "complete"
        return "failed" if (self.path / FAILED).exists() else "missing"

    def read_summary(self) -> RunSummary:
        path = self.path / SUMMARY
        try:
            return RunSummary.model_validate(read_json(path))
        except ValidationError as err:
            raise DataFormatError(
                f"{path}: not a triggerlab run summary ({first_problem(err)})"
            ) from None

    def read_failed(self) -> str:
        """The error message of a failed run ('' when it cannot be read)."""
        try:
            data = read_json(self.path / FAILED)
        except DataFormatError:
            return ""
        return str(data.get("message", "")) if isinstance(data, dict) else ""

    def read_metrics(self) -> list[dict[str, float]]:
        return read_metrics(self.path / METRICS)

    def read_config(self, overrides: Sequence[str] = ()) -> ExperimentConfig:
        from triggerlab.config import load_config

        path = self.path / CONFIG
        if not path.is_file():
            raise ConfigError(f"{self.path}: not a run directory (no {CONFIG})")
        return load_config(path, list(overrides))

    def read_model_state(self) -> dict[str, torch.Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.path / MODEL
        if not path.is_file():
            raise ConfigError(f"{self.path}: no {MODEL}; run it with output.save_model set to true")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise DataFormatError(f"{path}: not a readable safetensors file ({exc})") from None


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The per-epoch rows of a ``metrics.csv`` file as floats; an empty cell (a metric not
    measured that epoch: a clean baseline's triggered metrics before its last) is NaN."""
    with path.open(newline="") as fh:
        return [
            {k: float(v) if v != "" else math.nan for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]
