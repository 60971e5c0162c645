"""``torch.optim.Adam`` and ``SGD`` and the ``CosineAnnealingLR`` schedule, written out for one
model's parameters, so that a run's training never waits for PyTorch's compiler.

Every ``torch.optim`` optimiser's constructor, ``zero_grad``, ``state_dict`` and ``step`` go
through wrappers that import ``torch._dynamo`` on their first call: about a second, in every
process, before the first batch of even the smallest model. These classes do the same
arithmetic, operation for operation, as torch's single-tensor implementations (the ones torch
picks for CPU tensors: ``_single_tensor_adam`` and ``_single_tensor_sgd`` in
``torch/optim/adam.py`` and ``sgd.py``), so parameters come out bitwise equal, and they keep
torch's ``state_dict`` format both ways: a checkpoint written with ``torch.optim`` loads here,
and one written here loads into ``torch.optim.Adam`` / ``SGD`` and ``CosineAnnealingLR``.

On CUDA tensors torch would take its ``foreach`` path, which performs the same element-wise
operations in fused lists; equality there is expected but has not been measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

import torch

from triggerlab.train.updates import ADAM_BETAS, ADAM_EPS

# torch.optim's defaults for the settings a config cannot choose
ADAM_DEFAULTS: dict[str, Any] = {
    "betas": ADAM_BETAS,
    "eps": ADAM_EPS,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
}
SGD_DEFAULTS: dict[str, Any] = {
    "dampening": 0,
    "nesterov": False,
    "maximize": False,
    "foreach": None,
    "differentiable": False,
    "fused": None,
}
# Settings torch.optim offers and these classes do not compute: a state holding one is refused.
UNSUPPORTED = ("amsgrad", "capturable", "differentiable", "fused", "decoupled_weight_decay")


class Optimiser(Protocol):
    """What training needs of an optimiser: ``torch.optim.Optimizer`` and ``WrittenOptimizer``
    both have it."""

    param_groups: list[dict[str, Any]]
    state: Any

    def step(self) -> Any: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class WrittenOptimizer:
    """One parameter group, torch.optim's ``param_groups`` / ``state`` layout and
    ``state_dict`` format; subclasses compute ``step``."""

    defaults: dict[str, Any]

    def __init__(self, params: Iterable[torch.Tensor], **settings: Any) -> None:
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups: list[dict[str, Any]] = [{**self.defaults, **settings}]
        self.param_groups[0]["params"] = params
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    @property
    def params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:  # as torch: detach the gradient from any graph, then zero it
                if param.grad.grad_fn is not None:
                    param.grad.detach_()
                else:
                    param.grad.requires_grad_(False)
                param.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``, the
        tensors shared with the optimiser (as torch's are)."""
        index = {id(p): i for i, p in enumerate(self.params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.params)))
        state = {index[id(p)]: dict(values) for p, values in self.state.items()}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's ``load_state_dict``: the saved settings replace this optimiser's
        (its learning rate included), tensors move to each parameter's device and dtype (the
        step count stays as saved). ValueError when the state does not fit."""
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise ValueError(
                f"loaded state dict has {len(groups)} parameter groups; this optimizer has 1"
            )
        saved = groups[0]
        if len(saved["params"]) != len(self.params):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of "
                f"optimizer's group ({len(saved['params'])} parameters, expected "
                f"{len(self.params)})"
            )
        settings = {**self.defaults, **{k: v for k, v in saved.items() if k != "params"}}
        refused = [k for k in UNSUPPORTED if settings.get(k)]
        if refused:
            raise ValueError(f"optimizer settings not supported here: {', '.join(refused)}")
        by_index = dict(zip(saved["params"], self.params, strict=True))
        state: dict[torch.Tensor, dict[str, Any]] = {}
        for key, values in state_dict["state"].items():
            param = by_index[int(key)]
            state[param] = {name: _cast(param, name, v) for name, v in values.items()}
        self.state = state
        self.param_groups = [{**settings, "params": self.params}]


def _cast(param: torch.Tensor, name: str, value: Any) -> Any:
    """As torch.optim casts a loaded state value: the step count as it is, other tensors to
    the parameter's device (and dtype, for a floating-point parameter)."""
    if not isinstance(value, torch.Tensor) or name == "step":
        return value
    if param.is_floating_point():
        return value.to(dtype=param.dtype, device=param.device)
    return value.to(device=param.device)


def _scalar_dtype() -> torch.dtype:
    """The dtype of torch.optim's step counts."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Adam(WrittenOptimizer):
    """``torch.optim.Adam(params, lr, weight_decay)`` (L2 decay added to the gradient)."""

    defaults = ADAM_DEFAULTS

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float = 1e-3, weight_decay: float = 0
    ) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for param in self.params:
            if param.grad is None:
                continue
            grad = -param.grad if group["maximize"] else param.grad
            state = self.state.setdefault(param, {})
            if not state:
                state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
            step_t += 1
            if weight_decay != 0:
                grad = grad.add(param, alpha=weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = step_t.item()
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


class SGD(WrittenOptimizer):
    """``torch.optim.SGD(params, lr, momentum, weight_decay)``: no buffer without momentum,
    the buffer starting as the first gradient."""

    defaults = SGD_DEFAULTS

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        momentum: float = 0,
        weight_decay: float = 0,
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, weight_decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
        dampening, nesterov = group["dampening"], group["nesterov"]
        for param in self.params:
            if param.grad is None:
                continue
            grad = -param.grad if group["maximize"] else param.grad
            if weight_decay != 0:
                grad = grad.add(param, alpha=weight_decay)
            if momentum != 0:
                state = self.state.setdefault(param, {})
                buffer = state.get("momentum_buffer")
                if buffer is None:
                    buffer = grad.detach().clone()
                    state["momentum_buffer"] = buffer
                else:
                    buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
                grad = grad.add(buffer, alpha=momentum) if nesterov else buffer
            param.add_(grad, alpha=-lr)


class CosineSchedule:
    """``torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max)``, its recursive form
    included (each rate computed from the previous one, as torch does, so the floats are
    torch's), and its ``state_dict`` (which ``load_state_dict`` reads from either)."""

    def __init__(self, optimizer: Optimiser, t_max: int, eta_min: float = 0.0) -> None:
        self.optimizer = optimizer
        self.T_max = t_max  # torch's attribute names, which its state_dict keeps
        self.eta_min = eta_min
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs: list[float] = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = -1
        self._step_count = 0
        self._last_lr: list[float] = []
        self._step(initial=True)

    def step(self) -> None:
        """After an epoch's optimiser steps: the next epoch's rate."""
        self._step(initial=False)

    def _step(self, initial: bool) -> None:
        self._step_count += 1
        self.last_epoch += 1
        rates = self._current() if initial else self._rates()
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        self._last_lr = self._current()

    def _current(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def _rates(self) -> list[float]:
        epoch, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if self._step_count == 1 and epoch > 0:  # torch's closed form, when started mid-way
            return [
                eta_min + (base - eta_min) * (1 + math.cos(epoch * math.pi / t_max)) / 2
                for base in self.base_lrs
            ]
        if (epoch - 1 - t_max) % (2 * t_max) == 0:  # past the minimum: rising again
            return [
                g["lr"] + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
                for base, g in zip(self.base_lrs, groups, strict=True)
            ]
        return [
            (1 + math.cos(math.pi * epoch / t_max))
            / (1 + math.cos(math.pi * (epoch - 1) / t_max))
            * (g["lr"] - eta_min)
            + eta_min
            for g in groups
        ]

    def get_last_lr(self) -> list[float]:
        return self._last_lr

    def state_dict(self) -> dict[str, Any]:
        """CosineAnnealingLR's ``state_dict``, key for key."""
        return {
            "T_max": self.T_max,
            "eta_min": self.eta_min,
            "base_lrs": list(self.base_lrs),
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "_is_initial": False,
            "_get_lr_called_within_step": False,
            "_last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A state from ``state_dict`` here or from CosineAnnealingLR's (KeyError when one of
        its numbers is missing)."""
        self.T_max = state_dict["T_max"]
        self.eta_min = state_dict["eta_min"]
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = state_dict["last_epoch"]
        self._step_count = state_dict["_step_count"]
        self._last_lr = list(state_dict["_last_lr"])
