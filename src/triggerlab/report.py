"""One self-contained HTML file per grid: spec, tables, figures, trigger gallery, checklist.

Everything is inline (CSS, PNGs as data URIs), so the file opens offline and
can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from PIL import Image

from triggerlab import __version__
from triggerlab.config import ExperimentConfig
from triggerlab.data import DataSplit, prepare_data
from triggerlab.experiment import derive_seeds
from triggerlab.figures import axis_label, metric_label, plot_grid
from triggerlab.grid import SPEC_COPY, GridSpec, PlannedRun, plan_grid, read_manifest
from triggerlab.preview import describe_spec
from triggerlab.results import collect, summarize
from triggerlab.runio import write_text_atomic
from triggerlab.triggers import apply_to_uint8

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.key, th.key { text-align: left; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #eee; }
.gallery figure img { width: 112px; image-rendering: pixelated; }
figcaption { font-size: 0.75em; max-width: 520px; }
.note { color: #555; font-size: 0.9em; }
"""
TABLE_METRICS = (
    "clean_acc",
    "asr",
    "robust_acc",
    "clean_acc_drop",
    "clean_error",
    "attack_error",
    "attack_success_5",
    "attack_success_10",
    "clean_error_increase",
    "psnr_db",
    "ssim",
)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _format(stats: dict[str, float], digits: int = 3) -> str:
    mean, std, low, high = (stats.get(k, math.nan) for k in ("mean", "std", "ci_low", "ci_high"))
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{digits}f}"
    if not math.isnan(std):
        text += (
            f" &plusmn; {std:.{digits}f}<br><small>[{low:.{digits}f}, {high:.{digits}f}]</small>"
        )
    return text


def summary_table(summary: pd.DataFrame, varied: list[str]) -> str:
    metrics = [m for m in TABLE_METRICS if f"{m}_mean" in summary]
    head = "".join(f'<th class="key">{html.escape(k)}</th>' for k in varied)
    head += "<th>n</th>" + "".join(f"<th>{html.escape(metric_label(m))}</th>" for m in metrics)
    rows = []
    for row in summary.to_dict("records"):  # iterrows would upcast integer keys to float
        cells = "".join(f'<td class="key">{html.escape(str(row[k]))}</td>' for k in varied)
        cells += f"<td>{int(row['n'])}</td>"
        for metric in metrics:
            stats = {
                name: row.get(f"{metric}_{name}", math.nan)
                for name in ("mean", "std", "ci_low", "ci_high")
            }
            cells += f"<td>{_format(stats, 2 if metric == 'psnr_db' else 3)}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _triggered_png(cfg: ExperimentConfig, data: DataSplit) -> bytes:
    """The first non-target test image under the run's trigger, enlarged for display."""
    labels = data.test.targets
    index = int(torch.nonzero(labels != cfg.poison.target).flatten()[0]) if labels.ndim == 1 else 0
    trigger = cfg.trigger.build(data.shape)
    generator = torch.Generator().manual_seed(derive_seeds(cfg.train.seed)["test_trigger"])
    image = apply_to_uint8(trigger, data.test.images[index : index + 1], generator)[0]
    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    scale = max(1, 112 // max(pil.size))
    buffer = io.BytesIO()
    pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def trigger_gallery(plan: list[PlannedRun]) -> str:
    datasets: dict[str, DataSplit] = {}
    figures = []
    seen: set[str] = set()
    for run in plan:
        key = (
            json.dumps(run.config.trigger.model_dump(mode="json"), sort_keys=True)
            + run.config.data.model_dump_json()
        )
        if key in seen:
            continue
        seen.add(key)
        data_key = run.config.data.model_dump_json()
        if data_key not in datasets:
            datasets[data_key] = prepare_data(run.config.data, run.config.split_seed)
        png = _triggered_png(run.config, datasets[data_key])
        caption = html.escape(describe_spec(run.config.trigger))
        image = f'<img src="{_data_uri(png)}" alt="{caption}">'
        figures.append(f"<figure>{image}<figcaption>{caption}</figcaption></figure>")
    return '<div class="gallery">' + "".join(figures) + "</div>"


def _values(plan: list[PlannedRun], getter: Any) -> str:
    values = list(dict.fromkeys(json.dumps(getter(r.config), default=str) for r in plan))
    return ", ".join(html.escape(v.strip('"')) for v in values)


def defense_text(runs: list[PlannedRun]) -> str:
    kinds = sorted({r.config.defense.kind for r in runs} - {"none"})
    if not kinds:
        return "none in this grid: no defence saw the data, the weights or the predictions"
    fractions = _values(runs, lambda c: c.defense.clean_fraction)
    return (
        f"{', '.join(kinds)}: the defender holds back a clean share {fractions} of the training "
        "set and sees the model's weights; it never sees test data. Metrics after the repair "
        "are the <code>*_after</code> columns"
    )


def checklist(plan: list[PlannedRun], table: pd.DataFrame) -> str:
    """Reference 004's BadNets reporting checklist, filled from the configs and results."""
    grid_runs = [r for r in plan if r.role == "grid"]
    modes = {r.config.poison.label_mode for r in grid_runs}
    access = "training data and labels (label-flipping data poisoning)"
    if modes == {"clean_label"}:
        access = "training data only: clean-label poisoning, labels untouched"
    counts = (
        table.loc[table["role"] == "grid", "poison_count"].dropna()
        if "poison_count" in table
        else []
    )
    count_text = (
        f"{int(min(counts))} to {int(max(counts))} samples per run"
        if len(counts)
        else "not run yet"
    )
    baseline = table[(table["role"] == "baseline") | (table.get("poison_count", 0) == 0)]
    false_positive = "no clean baseline in this grid"
    success = (
        "asr"
        if "asr" in table
        else next((c for c in table if c.startswith("attack_success_")), None)
    )
    if success is not None and success in baseline and baseline[success].notna().any():
        false_positive = (
            f"{success} of the trigger on clean (rate 0) models: "
            f"mean {baseline[success].mean():.3f} "
            f"over {baseline[success].notna().sum()} runs"
        )

    def values(path: str) -> str:
        """Distinct values of a dotted config key over the grid's runs."""

        def get(cfg: ExperimentConfig) -> Any:
            node: Any = cfg
            for part in path.split("."):
                node = getattr(node, part)
            return node

        return _values(grid_runs, get)

    triggers = _values(grid_runs, lambda c: describe_spec(c.trigger))
    poisoning = (
        f"rate {values('poison.rate')} (count {values('poison.count')}), {count_text}; "
        f"mode {values('poison.mode')}; label mode {', '.join(sorted(modes))}; "
        f"source classes {values('poison.source_classes')} (null: all eligible); "
        f"target {values('poison.target')}; sampling: uniform without replacement from eligible "
        "samples (non-target for all-to-one, target class for clean-label), seeded per run; "
        "poisoned indices saved in every run's poisoned_indices.csv"
    )
    stages = "in one run"
    if any(run.config.data.split == "pretune_finetune" for run in grid_runs):
        stages = (
            "in two stages (reference 000's protocol: pre-tuned on every subject but the "
            f"held-out one {values('data.test_subjects')} (null: the last), then fine-tuned on "
            f"{values('data.finetune_count')} of its images for "
            f"{values('train.finetune_epochs')} epochs at lr {values('train.finetune_lr')} "
            "(null: lr), both stages poisoned; tested on its other images)"
        )
    training = (
        f"clean and poisoned examples trained together from scratch {stages}; "
        f"model {values('model.name')}, optimizer {values('train.optimizer')}, "
        f"lr {values('train.lr')}, epochs {values('train.epochs')}, "
        f"batch size {values('train.batch_size')}; data {values('data.name')}"
    )
    if "clean_error" in table:
        measured = (
            "clean error, attack error to the target, attack success within the tolerances, mean "
            "shift towards the target, clean error increase against paired clean baselines"
        )
    else:
        measured = (
            "clean accuracy, attack success rate (target class excluded), ASR with the target "
            "class, robust accuracy, clean accuracy drop against paired clean baselines"
        )
    metrics = f"{measured}; false positives: {false_positive}"
    rows = [
        ("Attacker access", access + "; the training procedure and model are not touched"),
        ("Poisoning", poisoning),
        (
            "Trigger",
            f"{triggers}; digital (added to the stored 8-bit images), not physical; "
            "the same specification triggers the test set",
        ),
        ("Training", training),
        ("Metrics", metrics),
        (
            "Defense test",
            defense_text(grid_runs),
        ),
    ]
    body = "".join(
        f'<tr><td class="key"><b>{k}</b></td><td class="key">{v}</td></tr>' for k, v in rows
    )
    return (
        f"<table><tr><th class='key'>Field</th><th class='key'>This study</th></tr>{body}</table>"
    )


def build_report(grid_dir: Path, out: Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``) for a grid directory and return its path."""
    manifest = read_manifest(grid_dir)
    spec_text = (grid_dir / SPEC_COPY).read_text(encoding="utf-8")
    spec = GridSpec.model_validate(yaml.safe_load(spec_text))
    plan = plan_grid(spec)
    table, varied = collect(grid_dir)
    summary = summarize(table, varied)
    figure_paths = [p for p in plot_grid(grid_dir) if p.suffix == ".png"]
    figures = "".join(
        f'<figure><img src="{_data_uri(p.read_bytes())}" alt="{html.escape(p.stem)}">'
        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
        for p in figure_paths
    )
    status = table["status"].value_counts().to_dict()
    name = html.escape(manifest.get("name") or grid_dir.name)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    varied_text = (
        ", ".join(f"{html.escape(k)} ({html.escape(axis_label(k))})" for k in varied) or "none"
    )
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>triggerlab report: {name}</title>
<link rel="icon" href="data:,"><style>{STYLE}</style></head><body>
<h1>triggerlab study: {name}</h1>
<p class="note">Generated {generated} by triggerlab {__version__}.
{len(table)} runs ({html.escape(json.dumps(status))}); varied: {varied_text};
{manifest.get("repeats", 1)} repeat(s) per cell.</p>
<h2>Results per cell</h2>
<p class="note">Mean &plusmn; standard deviation over repeats, with the 95 % t confidence
interval below. ASR counts triggered test images whose true class is not the target. Clean
accuracy drop = clean accuracy of the paired clean baseline (same config and seed, rate 0)
minus the run's.</p>
{summary_table(summary, varied)}
<h2>Figures</h2>
{figures}
<h2>Triggers used</h2>
<p class="note">The first non-target test image under each trigger of the study.</p>
{trigger_gallery(plan)}
<h2>Reporting checklist</h2>
<p class="note">The BadNets reporting checklist of reference 004, filled from the configs of
this grid.</p>
{checklist(plan, table)}
<h2>Grid specification</h2>
<pre>{html.escape(spec_text)}</pre>
<p class="note">Rerun with <code>triggerlab grid {html.escape(str(grid_dir / SPEC_COPY))} --out
{html.escape(str(grid_dir))}</code>; finished runs are skipped.</p>
</body></html>
"""
    path = out or grid_dir / "report.html"
    write_text_atomic(path, document)
    return path
