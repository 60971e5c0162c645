"""The parts of the report: the style, the per-cell table and the trigger gallery."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd
from PIL import Image

from triggerlab.analysis.binomial import LABEL, repeats_note
from triggerlab.analysis.cell_labels import short_labels
from triggerlab.analysis.defense_tables import defense_table
from triggerlab.analysis.plots.axes import axis_label
from triggerlab.catalogue.metrics import decimals, is_fraction, metric_label
from triggerlab.catalogue.triggers import describe_spec
from triggerlab.grid.plan import PlannedRun
from triggerlab.grid.store import run_dir
from triggerlab.run.rundir import TRIGGER_PREVIEW

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.key, th.key { text-align: left; }
td.num { white-space: nowrap; }
.wide { overflow-x: auto; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
.gallery figure img { width: 112px; image-rendering: pixelated; }
figcaption { font-size: 0.75em; max-width: 700px; }
.note { color: #555; font-size: 0.9em; }
small.binomial { color: #555; }
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
    # a defence's: the repaired model, or the detector
    "clean_acc_after",
    "asr_after",
    "clean_error_after",
    "attack_error_after",
    "detection_auroc",
    "detection_tpr_at_5pct_fpr",
    "detection_fpr",
    "psnr_db",
    "ssim",
)
CLASSIFICATION_NOTE = """Mean &plusmn; standard deviation over repeats, with the 95 % confidence
interval over repeats below (t; on the logit scale for a share). The attack success rate (ASR)
counts triggered test images whose true class is not the target."""
ASR_ALL_NOTE = """ This grid leads with ASR incl. target class (asr_all): the share of
<i>every</i> triggered test image classified as the target, the target class's own images
included, as references 001's and 002's code count it; a model that ignores the trigger
already scores about the target class's share of the test set."""
REGRESSION_NOTE = """Mean &plusmn; standard deviation over repeats, with the 95 % confidence
interval over repeats below (t; on the logit scale for a share). Errors are in {unit}: the clean
error is the mean error on clean test images, the attack error the mean distance of triggered
predictions to the attacker's target, and attack success within t the share of triggered
predictions within t {unit} of the target."""
BASELINE_NOTES = {
    "clean_acc_drop": """ Clean accuracy drop = clean accuracy of the paired clean baseline (same
config and seed, rate 0) minus the run's.""",
    "clean_error_increase": """ Clean error increase = the run's clean error minus that of its
paired clean baseline (same config and seed, rate 0).""",
}


def data_uri(png: bytes) -> str:
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
    return text + _binomial_line(stats, digits)


def _binomial_line(stats: dict[str, float], digits: int) -> str:
    """The Wilson interval of the pooled test predictions, named, with its count as tooltip."""
    low, high, n = (stats.get(f"binomial_{k}", math.nan) for k in ("low", "high", "n"))
    if low is None or math.isnan(low):
        return ""
    tip = f"{LABEL}: {int(n):,} predictions"
    return (
        f'<br><small class="binomial" title="{html.escape(tip)}">binomial '
        f"[{low:.{digits}f}, {high:.{digits}f}]</small>"
    )


def results_note(table: pd.DataFrame, lead: str = "asr") -> str:
    """The table's explanation in the task's own terms."""
    paired = "".join(note for name, note in BASELINE_NOTES.items() if name in table)
    if "attack_error" not in table:
        led = ASR_ALL_NOTE if lead == "asr_all" else ""
        return f'<p class="note">{CLASSIFICATION_NOTE}{led}{paired}</p>'
    units = table["label_unit"].dropna().unique() if "label_unit" in table else []
    unit = str(units[0]) if len(units) == 1 else "label units"
    return f'<p class="note">{REGRESSION_NOTE.format(unit=html.escape(unit))}{paired}</p>'


BINOMIAL_NOTE = """Under a share of the test images, <i>binomial</i> [low, high] is the {label}
(k of n, n = test images &times; repeats): how precisely the test set measures these trained
models, not how much another training would differ, which only the interval over repeats
shows."""


def intervals_note(summary: pd.DataFrame) -> str:
    """What the binomial line is, when the table shows one, and why the interval over repeats
    is wide (with how many repeats would narrow it), when the cells have repeats."""
    parts = []
    if any(str(c).endswith("_binomial_low") and summary[c].notna().any() for c in summary):
        parts.append(BINOMIAL_NOTE.format(label=html.escape(LABEL)))
    shares = [m for m in TABLE_METRICS if is_fraction(m) and f"{m}_std" in summary]
    headline = "clean_acc" if "clean_acc" in shares else next(iter(shares), None)
    if headline is not None and (line := repeats_note(summary, headline)):
        parts.append(html.escape(line))
    return f'<p class="note">{" ".join(parts)}</p>' if parts else ""


def figure_html(path: Path) -> str:
    """One figure, inline, captioned with the title its PNG carries (else its file name)."""
    with Image.open(path) as image:
        caption = image.text.get("Title") or path.stem  # type: ignore[attr-defined]
    return (
        f'<figure><img src="{data_uri(path.read_bytes())}" alt="{html.escape(path.stem)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _header(name: str, label: str, css: str = "") -> str:
    """A column header that shows the label and keeps the raw name as its tooltip."""
    klass = f' class="{css}"' if css else ""
    return f'<th{klass} title="{html.escape(name)}">{html.escape(label)}</th>'


def table_metrics(lead: str = "asr") -> tuple[str, ...]:
    """The report's columns: ``asr_all`` in the place of honour when the grid leads with it,
    ``asr`` beside it."""
    if lead != "asr_all":
        return TABLE_METRICS
    first = TABLE_METRICS.index("asr")
    return (*TABLE_METRICS[:first], "asr_all", *TABLE_METRICS[first:])


def summary_table(summary: pd.DataFrame, varied: list[str], lead: str = "asr") -> str:
    metrics = [m for m in table_metrics(lead) if f"{m}_mean" in summary]
    head = "".join(_header(k, axis_label(k), "key") for k in varied)
    head += "<th>n</th>" + "".join(_header(m, metric_label(m)) for m in metrics)
    names = {k: short_labels(list(summary[k].unique())) for k in varied}
    rows = []
    for row in summary.to_dict("records"):  # iterrows would upcast integer keys to float
        cells = "".join(
            f'<td class="key">{html.escape(names[k].get(row[k], str(row[k])))}</td>' for k in varied
        )
        cells += f"<td>{int(row['n'])}</td>"
        for metric in metrics:
            stats = {
                name: row.get(f"{metric}_{name}", math.nan)
                for name in (
                    "mean",
                    "std",
                    "ci_low",
                    "ci_high",
                    "binomial_low",
                    "binomial_high",
                    "binomial_n",
                )
            }
            cells += f'<td class="num">{_format(stats, decimals(metric))}</td>'
        rows.append(f"<tr>{cells}</tr>")
    # a value never breaks mid-number; a table wider than the page scrolls on its own
    return f'<div class="wide"><table><tr>{head}</tr>{"".join(rows)}</table></div>'


def defense_section(table: pd.DataFrame, varied: list[str]) -> str:
    """The defence-by-attack table, when the grid varies the defence; else nothing."""
    frame = defense_table(table, varied)
    if frame is None:
        return ""
    head = f'<th class="key">defence (rows) / {html.escape(str(frame.columns.name))}</th>'
    head += "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        f'<tr><td class="key">{html.escape(str(name))}</td>'
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in values)
        + "</tr>"
        for name, values in zip(frame.index, frame.values, strict=True)
    )
    return f"""<h2>Defences against each attack</h2>
<p class="note">Means over repeats (n runs). A repair shows the attack success rate (ASR) and
clean accuracy (CA) of the repaired model, or the regression errors; a detector its detection
AUROC and the share of poisoned or triggered items it finds while flagging at most 5 % of clean
ones (TPR@5%FPR) and the share of clean ones its own threshold flags (FPR); a model inspection
(Neural Cleanse) in how many runs it flagged a class and the target; no defence, the model as
trained. Detectors set their thresholds on the
defender's own clean data, never on the test set.</p>
<table><tr>{head}</tr>{rows}</table>"""


def trigger_gallery(plan: list[PlannedRun], grid_dir: Path) -> str:
    """Each distinct trigger of the study as its runs drew it (``trigger.png``: the first
    attacked test image under the trigger), from the first run of it that wrote one."""
    previews: dict[str, Path | None] = {}
    captions: dict[str, str] = {}
    for run in plan:
        key = json.dumps(run.config.trigger.model_dump(mode="json"), sort_keys=True)
        key += run.config.data.model_dump_json()
        captions.setdefault(key, describe_spec(run.config.trigger))
        path = run_dir(grid_dir, run.run_id) / TRIGGER_PREVIEW
        if previews.get(key) is None:
            previews[key] = path if path.is_file() else None
    figures = []
    for key, path in previews.items():
        caption = html.escape(captions[key])
        if path is None:
            image = '<p class="note">no finished run of this trigger drew it yet</p>'
        else:
            image = f'<img src="{data_uri(path.read_bytes())}" alt="{caption}">'
        figures.append(f"<figure>{image}<figcaption>{caption}</figcaption></figure>")
    return '<div class="gallery">' + "".join(figures) + "</div>"
