"""The stacked forward of plain layer sequences, with the members in the channel axis.

``torch.func.vmap`` batches any model, but on CPU it leaves the stacked activations in the
NCHW layout, where oneDNN's grouped convolutions and pooling are several times slower than
in channels_last (measured: a 16-member first convolution of the small CNN 30 ms against
3.5 ms, its pooling 9 ms against 0.5 ms). For a model that is a plain sequence of common
layers (the small CNNs) the stack is written out instead: images of all members as one
``[B, K*C, H, W]`` channels_last tensor, each convolution one grouped convolution
(``groups = K``), pooling and activations as they are (they act per channel), batch norm
over ``K*C`` channels whose running statistics are views of the members' stacked
buffers, and after flattening, ``[K, B, F]`` features through batched products.

Which layers a model applies in which order is declared (``SEQUENCES``: the small CNNs'
``forward`` is ``classifier(features(x))``), and checked once per stack: the grouped
forward must give each member's own model's outputs, or the stack uses ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from triggerlab.models.small import BadNetCNN, LeNet5

# Models whose forward applies these children, in this order, and nothing else.
SEQUENCES: dict[type[nn.Module], tuple[str, ...]] = {
    BadNetCNN: ("features", "classifier"),
    LeNet5: ("features", "classifier"),
}
PER_CHANNEL = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU)
POOLS = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)

Layer = tuple[str, nn.Module]  # the layer's name prefix in the model, and the layer


def layers_of(model: nn.Module) -> list[Layer] | None:
    """The model's leaf layers in the order its forward applies them; None when unknown or
    when a layer has no grouped form here."""
    if isinstance(model, nn.Sequential):
        top = [(name, child) for name, child in model.named_children()]
    elif type(model) in SEQUENCES:
        top = [(name, getattr(model, name)) for name in SEQUENCES[type(model)]]
    else:
        return None
    leaves: list[Layer] = []
    for name, child in top:
        if isinstance(child, nn.Sequential):
            inner = layers_of(child)
            if inner is None:
                return None
            leaves += [(f"{name}.{n}", m) for n, m in inner]
        elif _supported(child):
            leaves.append((name, child))
        else:
            return None
    return leaves


def _supported(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Conv2d):
        return layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    if isinstance(layer, nn.BatchNorm2d):
        return layer.track_running_stats and layer.momentum is not None
    if isinstance(layer, nn.Flatten):
        return layer.start_dim == 1 and layer.end_dim == -1
    if isinstance(layer, nn.Dropout):
        return layer.p == 0
    return isinstance(layer, (nn.Linear, nn.Identity, *PER_CHANNEL, *POOLS))


class GroupedForward:
    """``forward(x, training)``: every member's outputs ``[K, B, O]`` for its inputs
    ``x`` (``[K, B, ...]``), through the stacked tensors ``params`` and ``buffers``."""

    def __init__(
        self,
        layers: list[Layer],
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        layout: torch.memory_format,
    ) -> None:
        self.layers = layers
        self.params = params
        self.buffers = buffers
        self.layout = layout

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Members' inputs ``[K, B, ...]`` as the forward takes them: images as one grouped
        ``[B, K*C, H, W]`` tensor in the model's layout; features as they are."""
        if x.ndim != 5:
            return x
        count, batch = x.shape[:2]
        grouped = x.transpose(0, 1).reshape(batch, count * x.shape[2], *x.shape[3:])
        return grouped.contiguous(memory_format=self.layout)

    def __call__(self, h: torch.Tensor, count: int, training: bool = True) -> torch.Tensor:
        """Outputs ``[K, B, O]`` of the ``count`` members for inputs made by ``inputs``."""
        for name, layer in self.layers:
            h = self._apply(name, layer, h, count, training)
        if h.ndim != 3:  # the model ended without flattening: not a classifier we know
            raise ValueError("the grouped forward ended on images")
        return h

    def _apply(
        self, name: str, layer: nn.Module, h: torch.Tensor, count: int, training: bool
    ) -> torch.Tensor:
        p = self.params
        if isinstance(layer, nn.Conv2d):
            weight = p[f"{name}.weight"]
            weight = weight.reshape(-1, *weight.shape[2:]).contiguous(memory_format=self.layout)
            bias = p.get(f"{name}.bias")
            return F.conv2d(
                h,
                weight,
                None if bias is None else bias.reshape(-1),
                layer.stride,
                layer.padding,
                layer.dilation,
                layer.groups * count,
            )
        if isinstance(layer, nn.BatchNorm2d):
            return self._batch_norm(name, layer, h, training)
        if isinstance(layer, nn.Flatten):
            batch = h.shape[0]
            return h.reshape(batch, count, -1).transpose(0, 1)  # NCHW order, as Flatten's
        if isinstance(layer, nn.Linear):
            weight = p[f"{name}.weight"].transpose(1, 2)
            bias = p.get(f"{name}.bias")
            if bias is None:
                return torch.bmm(h, weight)
            return torch.baddbmm(bias[:, None, :], h, weight)
        if isinstance(layer, (nn.Identity, nn.Dropout)):
            return h
        return layer(h)  # activations and pooling act on each channel alone

    def _batch_norm(
        self, name: str, layer: nn.BatchNorm2d, h: torch.Tensor, training: bool
    ) -> torch.Tensor:
        """As ``BatchNorm2d.forward`` with momentum, each member's statistics its own."""
        weight = self.params.get(f"{name}.weight")
        bias = self.params.get(f"{name}.bias")
        if training:
            self.buffers[f"{name}.num_batches_tracked"].add_(1)
        return F.batch_norm(
            h,
            self.buffers[f"{name}.running_mean"].view(-1),
            self.buffers[f"{name}.running_var"].view(-1),
            None if weight is None else weight.reshape(-1),
            None if bias is None else bias.reshape(-1),
            training,
            layer.momentum,  # type: ignore[arg-type]
            layer.eps,
        )


def grouped_forward(
    models: list[nn.Module],
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    layout: torch.memory_format,
    sample: torch.Tensor,
    to_input: Callable[[torch.Tensor], torch.Tensor],
) -> GroupedForward | None:
    """The grouped forward of the stacked ``models`` when their layers allow it and it gives,
    on ``sample`` (``[K, b, ...]`` raw inputs; ``to_input`` makes them float), each member's
    own model's outputs (in evaluation mode, which leaves batch norm's statistics alone);
    else None."""
    layers = layers_of(models[0])
    if layers is None or sample.ndim not in (3, 5):
        return None
    forward = GroupedForward(layers, params, buffers, layout)
    with torch.no_grad():
        x = to_input(sample)
        try:
            grouped = forward(forward.inputs(x), len(models), training=False)
        except (RuntimeError, ValueError, IndexError, KeyError):
            return None
        for member, model in enumerate(models):
            was_training = model.training
            model.eval()
            alone = model(x[member])
            model.train(was_training)
            if alone.shape != grouped[member].shape or not torch.allclose(
                alone, grouped[member], rtol=1e-4, atol=1e-5
            ):
                return None
    return forward


def member_losses(task: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Each member's mean loss ``[K]`` from outputs ``[K, B, O]`` and targets ``[K, B, ...]``."""
    return torch.func.vmap(lambda out, y: task.loss(out.float(), y))
