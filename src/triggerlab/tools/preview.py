"""Trigger previews: what a trigger does to test images, with its stealthiness."""

from __future__ import annotations

from pathlib import Path

import torch

from triggerlab.attack.stamping import stamp_all, stamping_for
from triggerlab.attack.stealth import STEALTH_SAMPLE, stealth_of_uint8
from triggerlab.catalogue.triggers import describe_spec
from triggerlab.config import ExperimentConfig
from triggerlab.data.prepare import load_source, split_source
from triggerlab.errors import ArgumentError
from triggerlab.figures import save_trigger_preview
from triggerlab.run.lf_checks import needs_pattern, without_pattern
from triggerlab.seeds import derive_seeds
from triggerlab.triggers.base import with_training_images

STAND_IN_NOTE = (
    "low_frequency pattern uap is computed by a run from a clean model: shown as random_smooth "
    "(set trigger.path to preview a pattern file)"
)


def format_stealth(metrics: dict[str, float | None]) -> str:
    psnr = "inf" if metrics["psnr_db"] is None else f"{metrics['psnr_db']:.1f} dB"
    return (
        f"L0 {metrics['l0_fraction']:.4f}   L2 {metrics['l2_mean']:.3f}   "
        f"Linf {metrics['linf_mean']:.3f}   PSNR {psnr}   SSIM {metrics['ssim']:.3f}"
    )


def preview_trigger(
    cfg: ExperimentConfig, out: Path | str, samples: int = 6
) -> dict[str, float | None]:
    """Write ``out`` (PNG): clean, triggered and amplified residual for the first test images.

    The stealthiness metrics are computed on the first 256 test images, triggered
    exactly as in a run with the same config and seed, and returned.
    """
    out = Path(out)
    if samples < 1:
        raise ArgumentError("samples", f"expected at least 1 image, got {samples}")
    # a preview trains nothing: the pattern a run computes from a clean model is shown as the
    # random smooth one, and the caption says so (trigger.path previews a pattern file)
    stand_in = needs_pattern(cfg)
    cfg = without_pattern(cfg)
    source = load_source(cfg.data, native=cfg.trigger.stage == "native")
    data = split_source(source, cfg.data, cfg.split_seed)
    stamping = stamping_for(cfg, source, data.shape)
    trigger = stamping.build(cfg)
    # a trigger drawing from the attacker's training images (Refool's dataset pool)
    trigger = with_training_images(
        trigger, data.train.images, data.train.targets, cfg.poison.target
    )
    shown_test = data.test.subset(torch.arange(min(STEALTH_SAMPLE, len(data.test))))
    clean = shown_test.images
    generator = torch.Generator().manual_seed(derive_seeds(cfg.train.seed)["test_trigger"])
    triggered = stamp_all(stamping, trigger, shown_test, generator)
    metrics = stealth_of_uint8(clean, triggered)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArgumentError("out", f"cannot create {out.parent} ({exc})") from None
    shown = min(samples, clean.shape[0])
    caption = f"{format_stealth(metrics)}   (over {clean.shape[0]} {cfg.data.name} test images)"
    if stand_in:
        caption += f"   {STAND_IN_NOTE}"
    save_trigger_preview(out, clean[:shown], triggered[:shown], describe_spec(cfg.trigger), caption)
    return metrics
