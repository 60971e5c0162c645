"""The table a finished run prints: its metrics with units, the poisoning, the defence."""

from __future__ import annotations

from rich.table import Table

from triggerlab.cli.common import console


def add_defense_rows(table: Table, defense: dict | None) -> None:
    """What the defence did: the metrics after a repair, a detector's scores, the classes a
    model inspection flagged, and the clean data it used."""
    from triggerlab.catalogue.metrics import metric_label

    if not defense:
        return
    used = defense.get("clean_samples") or 0
    budget = f"{used} clean samples held back" if used else "no clean data"
    table.add_row("defence", f"{defense['kind']} ({budget})")
    for name, value in (defense.get("after") or {}).items():
        table.add_row(f"{metric_label(name)} after the defence", f"{value:.4f}")
    detection = defense.get("detection") or {}
    for name in ("auroc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "tpr", "fpr", "f1"):
        if name in detection:
            table.add_row(f"detection {metric_label(name)}", f"{detection[name]:.4f}")
    if "target_flagged" in defense:
        flagged = ", ".join(str(c) for c in defense.get("flagged", [])) or "none"
        table.add_row("flagged classes", f"{flagged} (target flagged: {defense['target_flagged']})")


def run_title(summary: dict) -> str:
    """``classification run: patch trigger on digits``, ``regression run (gaze): ...``."""
    data = summary.get("data") or {}
    kind = (summary.get("trigger") or {}).get("kind", "")
    task = summary.get("task") or "classification"
    labels = f" ({data['label_kind']})" if data.get("label_kind") else ""
    trigger = f": {kind} trigger" if kind else ""
    return f"{task} run{labels}{trigger} on {data.get('name', 'the data')}"


def print_summary(summary: dict) -> None:
    from triggerlab.catalogue.metrics import error_unit, metric_text

    final, poison, timings = summary["final"], summary["poison"], summary["timings"]
    unit = error_unit((summary.get("data") or {}).get("label_kind"))
    table = Table(title=run_title(summary), show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in final.items():
        if name != "train_loss":
            table.add_row(metric_text(name, unit), f"{value:.4f}")
    rate = "set by count" if poison["rate"] is None else f"rate {poison['rate']:g}"
    per_batch = poison.get("per_batch")
    each = " per epoch, anew in every batch" if per_batch else ""
    table.add_row("poisoned samples", f"{poison['count']} of {poison['train_size']}{each} ({rate})")
    table.add_row("poisoned fraction", f"{poison['fraction']:.4f}")
    if poison.get("label_mode"):  # as run: the trigger kind's paper's when left at paper
        table.add_row("label mode", poison["label_mode"])
    if poison.get("cover_count"):
        table.add_row("cover samples (triggered, labels kept)", str(poison["cover_count"]))
    if per_batch and per_batch.get("negative_per_epoch"):
        table.add_row("negative samples (labels kept)", str(per_batch["negative_per_epoch"]))
    if per_batch:
        table.add_row("images poisoned at least once", str(per_batch["ever_poisoned"]))
    protocol = summary.get("protocol")
    if protocol:
        table.add_row(
            f"fine-tuning (subject {protocol['held_out_subject']})",
            f"{protocol['finetune_poisoned']} of {protocol['finetune_size']} poisoned, "
            f"{protocol['finetune_epochs']} epochs",
        )
    add_defense_rows(table, summary.get("defense"))
    if "resumed_from_epoch" in summary:
        table.add_row("resumed", f"from the checkpoint after epoch {summary['resumed_from_epoch']}")
    table.add_row("training throughput", f"{timings['train_images_per_s']:.0f} images/s")
    table.add_row("total time", f"{timings['total_s']:.1f} s on {summary['device']}")
    console.print(table)
    console.print(f"run directory: {summary['run_dir']}", highlight=False)
