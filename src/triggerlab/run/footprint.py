"""Whether a run's model fits in memory, known before anything is written.

``data/memory.py`` checks the images as they load. This module checks the rest: the network
at the run's input size, its gradients and optimiser state, and the activations of a training
batch and of an evaluation batch, against the memory of the device it trains on. A network
is first counted on PyTorch's meta device (shapes without storage), so one too large to
build (``small_cnn`` at ``data.resize: 2048`` holds 4.3 billion weights) is refused without
allocating it, before the images are even loaded when ``data.resize`` fixes the size; once
built, the estimate knows what the freeze policy leaves trainable. Refusing here beats
dying in the allocator with a half-written run folder.

The estimate is deliberately simple: float32 everywhere (mixed precision needs less), every
layer output of a training batch kept for the backward pass, and the largest input plus
output of one layer for an evaluation batch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from triggerlab.catalogue.models import MODELS
from triggerlab.data import memory
from triggerlab.errors import ConfigError
from triggerlab.train.loop import EVAL_BATCH_SIZE

if TYPE_CHECKING:
    from triggerlab.config import ExperimentConfig

USABLE = 0.9  # of the memory available: the estimate leaves out allocator slack and workspaces
# Images up to these values, for a catalogue network with default options, are measured on
# the CPU: one such image's activations take at most a few hundred MB.
SMALL_INPUT = 3 * 128 * 128


@dataclass(frozen=True)
class Footprint:
    """Bytes a model needs at one input size: its weights and their trainable share, and per
    image the layer outputs autograd keeps and the largest input plus output of one layer."""

    weights: int
    trainable: int
    kept: int
    peak: int

    def parts(self, cfg: ExperimentConfig, images: int) -> dict[str, int]:
        """What a run of ``cfg`` holds at once, by what holds it."""
        train = cfg.train
        states = 2 if train.optimizer == "adam" else int(train.momentum > 0)
        batch = train.batch_size
        training = batch * (self.kept + self.peak)
        evaluation = EVAL_BATCH_SIZE * self.peak
        return {
            "weights, gradients and optimiser state": self.weights + self.trainable * (1 + states),
            f"activations of a training batch of {batch}": training
            if training >= evaluation
            else 0,
            f"activations of an evaluation batch of {EVAL_BATCH_SIZE}": (
                evaluation if evaluation > training else 0
            ),
            "images on the device": images,
        }


def _bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_bytes(v) for v in value.values())
    return 0


def _shares_memory(output: Any, inputs: tuple[Any, ...]) -> bool:
    """An in-place layer (ReLU) or a view (flatten) allocates nothing new."""
    if not isinstance(output, torch.Tensor):
        return False
    for x in inputs:
        if isinstance(x, torch.Tensor) and (
            output is x or output._base is x or (x._base is not None and output._base is x._base)
        ):
            return True
    return False


@torch.no_grad()
def measure(model: nn.Module, shape: tuple[int, ...]) -> Footprint:
    """The footprint of ``model`` (real or on the meta device) for images of ``shape``, from
    one forward pass of one image with a hook on every leaf layer."""
    kept = peak = 0

    def hook(_module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal kept, peak
        fresh = 0 if _shares_memory(output, inputs) else _bytes(output)
        kept += fresh
        peak = max(peak, _bytes(inputs) + fresh)

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    device = tensors[0].device if tensors else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    weights = sum(_bytes(t) for t in tensors)
    trainable = sum(_bytes(p) for p in model.parameters() if p.requires_grad)
    return Footprint(weights, trainable, kept, peak)


def _size(count: float) -> str:
    return f"{count / 1024**3:.1f} GB" if count >= 1024**3 else f"{count / 1024**2:.0f} MB"


def device_available(device: torch.device) -> int:
    """Bytes free on ``device`` now: the GPU's free memory, or the memory this process may
    still take on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return memory.available_bytes()


def fits(needed: int, device: torch.device, available: int | None = None) -> bool:
    available = device_available(device) if available is None else available
    return needed <= USABLE * available


def check_fits(
    cfg: ExperimentConfig,
    footprint: Footprint,
    shape: tuple[int, ...],
    device: torch.device,
    images: int = 0,
    options_at_fault: bool = False,
) -> None:
    """ConfigError naming the key to change when a run of ``cfg`` cannot fit on ``device``;
    ``images`` are the bytes of images the run stages there; ``options_at_fault``: the
    model would fit with its default options."""
    parts = footprint.parts(cfg, images)
    needed, available = sum(parts.values()), device_available(device)
    if fits(needed, device, available):
        return
    largest = max(parts, key=lambda k: parts[k])
    if largest.startswith("activations of a training"):
        key, advice = "train.batch_size", "a smaller train.batch_size or data.resize"
    elif options_at_fault:
        key, advice = "model.options", "smaller model.options (the defaults fit)"
    elif cfg.data.resize is not None:
        key, advice = "data.resize", "a smaller data.resize or a smaller model"
    else:
        key, advice = "model.name", "a smaller model, or data.resize to shrink the images"
    shown = ", ".join(f"{name} {_size(size)}" for name, size in parts.items() if size)
    where = "GPU" if device.type == "cuda" else "CPU"
    raise ConfigError(
        f"{key}: {cfg.model.name} on {'x'.join(map(str, shape))} images needs about "
        f"{_size(needed)} of {where} memory ({shown}), more than the {_size(USABLE * available)} "
        f"it can use ({_size(available)} available); choose {advice}"
    )


def meta_network(cfg: ExperimentConfig, shape: tuple[int, ...], outputs: int) -> nn.Module | None:
    """The configured network with fresh weights on the meta device (no storage), or None for
    published ImageNet architectures (their size is fixed) and networks meta cannot build."""
    from triggerlab.models import factory_of

    if cfg.model.pretrained == "imagenet":
        return None
    try:
        with torch.device("meta"):
            return factory_of(cfg.model.name)(
                shape[0], tuple(shape[1:]), outputs, **cfg.model.options
            )
    except Exception:  # the real build names what is wrong with the model section
        return None


def check_network(
    cfg: ExperimentConfig, shape: tuple[int, ...], outputs: int, device: torch.device
) -> None:
    """Refuse, without building it, a network that cannot fit at this input size."""
    footprint = _meta_footprint(cfg, shape, outputs)
    if footprint is None or fits(sum(footprint.parts(cfg, 0).values()), device):
        return
    plain = cfg.model_copy(update={"model": cfg.model.model_copy(update={"options": {}})})
    default = _meta_footprint(plain, shape, outputs) if cfg.model.options else None
    at_fault = default is not None and fits(sum(default.parts(cfg, 0).values()), device)
    check_fits(cfg, footprint, shape, device, options_at_fault=at_fault)


def _small_default(cfg: ExperimentConfig, shape: tuple[int, ...]) -> bool:
    """A catalogue network with its default options on a small image: built for real on the
    CPU, as the run builds it anyway. The meta device's first operations import about 900 of
    PyTorch's Python modules (1-4 s), more than the rest of a small run's fixed cost; a linear
    layer's bias there imports torch's compiler too."""
    model = cfg.model
    return (
        math.prod(shape) <= SMALL_INPUT
        and not model.options
        and model.pretrained != "imagenet"
        and model.name in MODELS
    )


def _real_network(cfg: ExperimentConfig, shape: tuple[int, ...], outputs: int) -> nn.Module | None:
    """The configured network built for real on the CPU (None when it cannot be), leaving the
    random state as it was."""
    from triggerlab.models import factory_of

    try:
        with torch.random.fork_rng(devices=[]):
            return factory_of(cfg.model.name)(
                shape[0], tuple(shape[1:]), outputs, **cfg.model.options
            )
    except Exception:  # the real build names what is wrong with the model section
        return None


def _meta_footprint(
    cfg: ExperimentConfig, shape: tuple[int, ...], outputs: int
) -> Footprint | None:
    crops = cfg.model.crops
    if crops is not None:  # the network sees crops of the stored images, not the images
        shape = (shape[0], crops.size, crops.size)
    network = _real_network(cfg, shape, outputs) if _small_default(cfg, shape) else None
    network = network or meta_network(cfg, shape, outputs)
    if network is None:
        return None
    try:
        footprint = measure(network, shape)
    except Exception:  # a forward meta cannot run: the real dry run reports it
        return None
    # a frozen network counts its weights only: its policy decides later what trains
    return footprint if cfg.model.freeze == "none" else replace(footprint, trainable=0)


def check_before_loading(cfg: ExperimentConfig, device: torch.device) -> None:
    """With ``data.resize`` set, the network's size is known before any image is: refuse
    an impossible one before loading (one channel and one output: a lower bound)."""
    if cfg.data.resize is not None:
        check_network(cfg, (cfg.data.channels or 1, *cfg.data.resize), 1, device)


def check_training(
    cfg: ExperimentConfig,
    model: nn.Module,
    shape: tuple[int, ...],
    device: torch.device,
    images: int,
) -> None:
    """The built model (its freeze policy applied), trained on ``device``."""
    staged = images if device.type == "cuda" else 0  # on the CPU they are already held
    check_fits(cfg, measure(model, shape), shape, device, staged)
