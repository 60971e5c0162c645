"""The leakage guard: what a defence is handed is built here, and checked.

A defence never sees the test set, clean or triggered, nor which training samples
were poisoned (BackdoorBench chose ANP's pruning threshold on the test ASR, and its
fine-pruning stops on test accuracy: numbers no defender could have). Structurally:

* ``DefenseInputs`` has no field for them; only a kind marked ``oracle`` (whose
  name must then start with ``oracle_``)
  is handed ``OracleInputs``, which has (``catalogue/defenses.py``);
* the training set is handed as a defender has it: images and labels, without
  ``pool_index`` (in append mode a poisoned copy repeats its source's index, which
  would tell it apart);
* before a defence runs, no tensor it is handed may share memory with the test
  images, their targets, the triggered test images or the poisoned indices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from triggerlab.defenses.base import DefenseInputs, OracleInputs

if TYPE_CHECKING:
    from triggerlab.attack.tasks import Task
    from triggerlab.catalogue.defenses import DefenseSpec
    from triggerlab.config import TrainConfig
    from triggerlab.data.dataset import ImageDataset


class DefenseLeak(RuntimeError):
    """A defence was about to be handed what only the evaluation may see: a bug."""


def defender_view(training: ImageDataset) -> ImageDataset:
    """The training set as the defender has it: no record of where each image came from."""
    return dataclasses.replace(training, pool_index=None)


def handed_tensors(inputs: DefenseInputs) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor a defence is handed directly or inside a dataset, with its field name."""
    for field in dataclasses.fields(inputs):
        value = getattr(inputs, field.name)
        if isinstance(value, torch.Tensor):
            yield field.name, value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for inner in dataclasses.fields(value):
                part = getattr(value, inner.name)
                if isinstance(part, torch.Tensor):
                    yield f"{field.name}.{inner.name}", part


def _span(tensor: torch.Tensor) -> tuple[int, int]:
    """The bytes ``[start, end)`` a tensor's elements occupy."""
    last = sum(
        (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )
    start = tensor.data_ptr()
    return start, start + (last + 1) * tensor.element_size()


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the two tensors' elements overlap in memory: two disjoint slices of one loaded
    array (a loader's train and test parts) do not."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    (a_start, a_end), (b_start, b_end) = _span(a), _span(b)
    return a_start < b_end and b_start < a_end


def check_no_leak(inputs: DefenseInputs, forbidden: dict[str, torch.Tensor]) -> None:
    """DefenseLeak unless ``inputs`` is a plain ``DefenseInputs`` whose tensors share no memory
    with any of ``forbidden`` (named: the test images, the poisoned indices, ...)."""
    if type(inputs) is not DefenseInputs:
        raise DefenseLeak(f"a defence is handed {type(inputs).__name__}, not DefenseInputs")
    if inputs.training.pool_index is not None:
        raise DefenseLeak("a defence is handed the training set's pool_index")
    for field, tensor in handed_tensors(inputs):
        for name, secret in forbidden.items():
            if _shares_memory(tensor, secret):
                raise DefenseLeak(f"a defence's {field} is the {name}")


def defense_inputs(
    spec: DefenseSpec,
    *,
    model: nn.Module,
    task: Task,
    device: torch.device,
    train: TrainConfig,
    training: ImageDataset,
    clean: ImageDataset | None,
    seed: int,
    fresh_model: Callable[[], nn.Module] | None,
    test: ImageDataset,
    triggered_test: torch.Tensor,
    poisoned: torch.Tensor,
) -> DefenseInputs:
    """What ``spec`` is handed: ``DefenseInputs``, checked; ``OracleInputs`` for an oracle.

    ``poisoned`` marks the poisoned samples of ``training`` (``[N]`` bool)."""
    common = {
        "model": model,
        "task": task,
        "device": device,
        "train": train,
        "training": defender_view(training),
        "clean": clean,
        "generator": torch.Generator().manual_seed(seed),
        "seed": seed,
        "fresh_model": fresh_model,
    }
    if spec.oracle:
        return OracleInputs(**common, test=test, triggered_test=triggered_test, poisoned=poisoned)
    inputs = DefenseInputs(**common)
    check_no_leak(
        inputs,
        {
            "test images": test.images,
            "test targets": test.targets,
            "triggered test images": triggered_test,
            "poisoned-sample marks": poisoned,
        },
    )
    return inputs
