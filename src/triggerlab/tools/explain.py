"""Where a model looks: Grad-CAM (reference 001's Figures 20-27) and feature maps (Figure 19).

Grad-CAM comes from captum's ``LayerGradCam`` on the model's last convolution,
upsampled to the input and scaled to [0, 1] per image. For classification the
panels cross the model (backdoored, and clean when a clean run is given), the
input (clean, triggered) and the explained label (true, target); for
regression, one chosen output replaces the label.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib.figure import Figure
from torch import nn

from triggerlab.defenses.fine_pruning import last_conv
from triggerlab.errors import ArgumentError
from triggerlab.files import write_bytes_atomic
from triggerlab.run.context import RunContext
from triggerlab.run.prepare import rebuild
from triggerlab.seeds import derive_seeds

FEATURE_CHANNELS = 16


@dataclass
class LoadedRun:
    prepared: RunContext
    name: str


def load_run(run_dir: Path) -> LoadedRun:
    """A run's config, data, trigger and trained model (``output.save_model: true`` needed)."""
    return LoadedRun(rebuild(run_dir), run_dir.name)


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int) -> torch.Tensor:
    """Grad-CAM ``[B, H, W]`` in [0, 1] of ``target`` (classes, or a regression output's index)."""
    model.eval()
    layer = last_conv(model)
    x = x.detach().clone().requires_grad_(True)  # a copy: the caller's images stay plain
    attribution = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    heat = LayerAttribution.interpolate(
        attribution, tuple(x.shape[-2:]), interpolate_mode="bilinear"
    )[:, 0]
    peak = heat.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (heat / peak).detach().clamp(0, 1)


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output ``[B, K, h, w]`` of the model's last convolution."""
    captured: list[torch.Tensor] = []
    handle = last_conv(model).register_forward_hook(
        lambda _m, _i, out: captured.append(out.detach())
    )
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0]


def _image(ax, x: torch.Tensor) -> None:
    array = x.permute(1, 2, 0).numpy()
    ax.imshow(array[:, :, 0] if array.shape[2] == 1 else array, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())


def _explained(
    p: RunContext, chosen: torch.Tensor, output: str | None
) -> dict[str, torch.Tensor | int]:
    """What Grad-CAM explains: the true label and the target class, or one regression output."""
    if p.data.is_regression:
        names = p.data.target_names
        name = output or names[0]
        if name not in names:
            raise ArgumentError(
                "output", f"{name!r} is not an output; expected one of {', '.join(names)}"
            )
        return {name: names.index(name)}
    if output is not None:
        raise ArgumentError("output", "only regression runs have named outputs")
    target = int(p.poison.target)  # type: ignore[arg-type]
    return {
        "true label": p.data.test.targets[chosen],
        f"target {p.data.class_names[target]}": target,
    }


def gradcam_figure(
    models: list[tuple[str, nn.Module]],
    inputs: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor | int],
    title: str,
) -> Figure:
    """Inputs in the first columns, then one Grad-CAM column per model x input x label."""
    columns = [(m, i, lab) for m in models for i in inputs for lab in labels]
    rows = next(iter(inputs.values())).shape[0]
    fig = Figure(figsize=(1.6 * (len(columns) + 2) + 0.8, 1.7 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, len(columns) + 2, squeeze=False)
    for row in range(rows):
        for column, which in enumerate(inputs):
            _image(axes[row, column], inputs[which][row])
            axes[0, column].set_title(f"{which} input", fontsize=7)
    heat_image = None
    for column, ((model_name, model), which, label) in enumerate(columns, start=2):
        heat = grad_cam(model, inputs[which], labels[label])
        for row in range(rows):
            _image(axes[row, column], inputs[which][row])
            heat_image = axes[row, column].imshow(
                heat[row].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1
            )
        axes[0, column].set_title(f"{model_name} model\n{which}, {label}", fontsize=7)
    if heat_image is not None:
        fig.colorbar(
            heat_image, ax=axes[:, 2:].flatten().tolist(), shrink=0.8, label="Grad-CAM (peak = 1)"
        )
    fig.suptitle(title, fontsize=9)
    return fig


def feature_map_figure(maps: dict[str, torch.Tensor], channels: int = FEATURE_CHANNELS) -> Figure:
    """The channels whose response the trigger changes most, clean above triggered.

    ``maps`` holds one image's last-convolution output ``[K, h, w]`` per input;
    channels are ranked by the mean absolute change between the two.
    """
    clean, triggered = maps["clean"], maps["triggered"]
    change = (triggered - clean).abs().flatten(1).mean(dim=1)
    shown = torch.argsort(change, descending=True)[: min(channels, clean.shape[0])]
    columns = min(8, shown.numel())
    blocks = -(-shown.numel() // columns)
    fig = Figure(figsize=(1.25 * columns + 0.9, 2.5 * blocks + 0.7), layout="constrained")
    axes = fig.subplots(2 * blocks, columns, squeeze=False)
    scale = max(float(m[shown].abs().max()) for m in maps.values()) or 1.0
    image = None
    for number, channel in enumerate(shown.tolist()):
        block, column = divmod(number, columns)
        for offset, which in enumerate(("clean", "triggered")):
            ax = axes[2 * block + offset, column]
            image = ax.imshow(maps[which][channel].numpy(), cmap="viridis", vmin=-scale, vmax=scale)
            ax.set_xticks([])
            ax.set_yticks([])
            if offset == 0:
                ax.set_title(f"ch {channel}, change {float(change[channel]):.2f}", fontsize=6)
            if column == 0:
                ax.set_ylabel(which, fontsize=7)
    for ax in axes.flatten()[2 * shown.numel() :]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes.flatten().tolist(), shrink=0.6, label="activation")
    fig.suptitle(
        f"last-convolution feature maps: the {shown.numel()} of {clean.shape[0]} channels the "
        "trigger changes most (clean above triggered)",
        fontsize=8,
    )
    return fig


def explain_run(
    run_dir: Path | str,
    out: Path | str,
    samples: int = 4,
    clean_run: Path | str | None = None,
    output: str | None = None,
) -> list[Path]:
    """Write ``gradcam.png`` and ``feature_maps.png`` for a run into ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    clean_run = None if clean_run is None else Path(clean_run)
    if samples < 1:
        raise ArgumentError("samples", f"expected at least 1, got {samples}")
    backdoored = load_run(run_dir)
    p = backdoored.prepared
    models = [("backdoored", p.model)]
    if clean_run is not None:
        clean = load_run(clean_run).prepared
        if clean.data.shape != p.data.shape or clean.data.num_outputs != p.data.num_outputs:
            raise ArgumentError(
                "clean_run", f"{clean_run} was trained on other inputs or outputs than {run_dir}"
            )
        models.insert(0, ("clean", clean.model))
    test = p.data.test
    chosen = torch.nonzero(p.task.attack_mask(test.targets)).flatten()[:samples]
    generator = torch.Generator().manual_seed(derive_seeds(p.cfg.train.seed)["test_trigger"])
    inputs = {
        "clean": test.images[chosen].float() / 255,
        "triggered": p.stamping.stamp(p.trigger.apply, test, chosen, generator).float() / 255,
    }
    labels = _explained(p, chosen, output)
    title = f"Grad-CAM on the last convolution: {backdoored.name}"
    paths = [out / "gradcam.png", out / "feature_maps.png"]
    out.mkdir(parents=True, exist_ok=True)
    _save(gradcam_figure(models, inputs, labels, title), paths[0])
    maps = {which: feature_maps(p.model, x[:1])[0] for which, x in inputs.items()}
    _save(feature_map_figure(maps), paths[1])
    return paths
