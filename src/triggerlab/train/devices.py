"""Where and how tensors are computed: the device, the memory layout, numeric precision and
compilation. The training loop asks here; nothing else knows about CUDA."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from triggerlab.errors import ConfigError

# Datasets up to this size are copied to the GPU once; larger ones stream per batch.
DEVICE_RESIDENT_BYTES = 4 * 1024**3
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def resident(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Where batches are sliced from: the device itself when it fits, else (pinned) host memory."""
    if device.type == "cpu":
        return tensor
    if tensor.numel() * tensor.element_size() <= DEVICE_RESIDENT_BYTES:
        return tensor.to(device)
    return tensor.pin_memory()


def to_input(
    batch: torch.Tensor,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """uint8 images to float in [0, 1] on ``device``: the only conversion in the hot path.

    Float inputs (cached features) are only made float32.
    """
    x = batch.to(device, non_blocking=True)
    if x.dtype != torch.uint8:
        return x.float() if x.ndim != 4 else x.to(dtype=torch.float32, memory_format=memory_format)
    return x.to(dtype=torch.float32, memory_format=memory_format).div_(255.0)


def model_memory_format(model: nn.Module) -> torch.memory_format:
    """The layout the model's convolution weights use, so inputs can match it."""
    for param in model.parameters():
        if param.ndim == 4:
            if param.is_contiguous(memory_format=torch.contiguous_format):
                return torch.contiguous_format
            return torch.channels_last
    return torch.contiguous_format


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Precision:
    """fp32, or mixed precision by autocast (bf16 on CPU and GPU, fp16 on GPU with a scaler)."""

    name: str
    device: torch.device

    def __post_init__(self) -> None:
        if self.name == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                "train.precision: fp16 needs a CUDA device (its gradient scaler is for GPUs); "
                "on CPU use bf16 or fp32"
            )

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.name == "fp32":
            yield
            return
        with torch.autocast(self.device.type, dtype=AUTOCAST[self.name]):
            yield

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling to keep small gradients from underflowing."""
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


class Compiled(nn.Module):
    """``torch.compile(model)``'s forward, falling back to the eager model for good (with one
    warning) when compilation fails.

    Compilation happens on the first call (and again when shapes change), not when
    ``torch.compile`` returns, so failures are caught there. The weights stay in ``model``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.compiled: Callable[..., torch.Tensor] | None = torch.compile(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as exc:  # an unsupported model, backend or compiler: run eagerly
                self.compiled = None
                warnings.warn(
                    f"train.compile: {type(self.model).__name__} cannot be compiled "
                    f"({type(exc).__name__}: {_first_line(exc)}); training it uncompiled",
                    stacklevel=2,
                )
        return self.model(x)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else "no message"


def compiled(model: nn.Module, enabled: bool) -> nn.Module | None:
    """The compiled forward of ``model`` when asked (see ``Compiled``); None when not."""
    return Compiled(model) if enabled else None
