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
from safetensors.torch import load_file
from torch import nn

from triggerlab.config import load_config
from triggerlab.defenses.repair import last_conv
from triggerlab.errors import ConfigError
from triggerlab.experiment import Prepared, derive_seeds, prepare
from triggerlab.runio import write_bytes_atomic
from triggerlab.triggers import apply_to_uint8


@dataclass
class LoadedRun:
    prepared: Prepared
    name: str


def load_run(run_dir: Path) -> LoadedRun:
    """A run's config, data, trigger and trained model (``output.save_model: true`` needed)."""
    config = run_dir / "config.yaml"
    weights = run_dir / "model.safetensors"
    if not config.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    if not weights.is_file():
        raise ConfigError(
            f"{run_dir}: no model.safetensors; run it with --set output.save_model=true"
        )
    cfg = load_config(config, ["train.device=cpu"])
    prepared = prepare(cfg)
    prepared.model.load_state_dict(load_file(str(weights)))
    prepared.model.eval()
    return LoadedRun(prepared, run_dir.name)


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


def explain_run(
    run_dir: Path,
    out: Path,
    samples: int = 4,
    clean_run: Path | None = None,
    output: str | None = None,
) -> list[Path]:
    """Write ``gradcam.png`` and ``feature_maps.png`` for a run into ``out``."""
    if samples < 1:
        raise ConfigError(f"--samples: expected at least 1, got {samples}")
    backdoored = load_run(run_dir)
    p = backdoored.prepared
    models = [("backdoored", p.model)]
    if clean_run is not None:
        clean = load_run(clean_run).prepared
        if clean.data.shape != p.data.shape or clean.data.num_outputs != p.data.num_outputs:
            raise ConfigError(
                f"--clean-run: {clean_run} was trained on other inputs or outputs than {run_dir}"
            )
        models.insert(0, ("clean", clean.model))
    test = p.data.test
    chosen = torch.nonzero(p.task.attack_mask(test.targets)).flatten()[:samples]
    generator = torch.Generator().manual_seed(derive_seeds(p.cfg.train.seed)["test_trigger"])
    inputs = {
        "clean": test.images[chosen].float() / 255,
        "triggered": apply_to_uint8(p.trigger, test.images[chosen], generator).float() / 255,
    }
    if p.data.is_regression:
        names = p.data.target_names
        name = output or names[0]
        if name not in names:
            raise ConfigError(
                f"--output: {name!r} is not an output; expected one of {', '.join(names)}"
            )
        labels = {name: names.index(name)}
    else:
        if output is not None:
            raise ConfigError("--output: only regression runs have named outputs")
        target = int(p.poison.target)  # type: ignore[arg-type]
        labels = {
            "true label": test.targets[chosen],
            f"target {p.data.class_names[target]}": target,
        }
    columns = [(m, i, lab) for m in models for i in inputs for lab in labels]
    fig = Figure(figsize=(1.6 * (len(columns) + 2), 1.7 * len(chosen) + 0.8), layout="constrained")
    axes = fig.subplots(len(chosen), len(columns) + 2, squeeze=False)
    for row in range(len(chosen)):
        for column, which in enumerate(inputs):
            _image(axes[row, column], inputs[which][row])
            axes[0, column].set_title(f"{which} input", fontsize=7)
    for column, ((model_name, model), which, label) in enumerate(columns, start=2):
        heat = grad_cam(model, inputs[which], labels[label])
        for row in range(len(chosen)):
            _image(axes[row, column], inputs[which][row])
            axes[row, column].imshow(heat[row].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[0, column].set_title(f"{model_name} model\n{which}, {label}", fontsize=7)
    fig.suptitle(f"Grad-CAM on the last convolution: {backdoored.name}", fontsize=9)
    paths = [out / "gradcam.png", out / "feature_maps.png"]
    out.mkdir(parents=True, exist_ok=True)
    _save(fig, paths[0])

    maps = {which: feature_maps(p.model, x[:1]) for which, x in inputs.items()}
    channels = min(16, maps["clean"].shape[1])
    fig = Figure(figsize=(1.2 * channels, 3.2), layout="constrained")
    axes = fig.subplots(2, channels, squeeze=False)
    scale = max(float(m[0, :channels].abs().max()) for m in maps.values()) or 1.0
    for row, (which, fmap) in enumerate(maps.items()):
        for c in range(channels):
            axes[row, c].imshow(fmap[0, c].numpy(), cmap="viridis", vmin=-scale, vmax=scale)
            axes[row, c].set_xticks([])
            axes[row, c].set_yticks([])
        axes[row, 0].set_ylabel(which, fontsize=8)
    fig.suptitle(
        f"last-convolution feature maps (first {channels} channels), clean vs triggered", fontsize=9
    )
    _save(fig, paths[1])
    return paths
