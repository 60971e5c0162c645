"""One self-contained HTML file per grid: spec, tables, figures, trigger gallery, checklist.

Everything is inline (CSS, PNGs as data URIs), so the file opens offline and
can be mailed or archived as it is.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from triggerlab import __version__
from triggerlab.analysis.lead import DEFAULT_LEAD
from triggerlab.analysis.plots.axes import split_varied
from triggerlab.analysis.plots.grid_figures import axis_label, plot_grid
from triggerlab.analysis.report.checklist import checklist
from triggerlab.analysis.report.sections import (
    STYLE,
    defense_section,
    figure_html,
    intervals_note,
    results_note,
    summary_table,
    trigger_gallery,
)
from triggerlab.analysis.results import collect, summarize
from triggerlab.files import write_text_atomic
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.store import SPEC_COPY, read_manifest, read_spec_copy

__all__ = ["build_report", "checklist"]


def build_report(grid_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write ``report.html`` (or ``out``) for a grid directory and return its path."""
    grid_dir = Path(grid_dir)
    out = None if out is None else Path(out)
    manifest = read_manifest(grid_dir)
    spec = read_spec_copy(grid_dir)
    lead = spec.lead_metric or DEFAULT_LEAD
    spec_text = (grid_dir / SPEC_COPY).read_text(encoding="utf-8")
    plan = plan_grid(spec, max_runs=None)  # it ran: however large, it was allowed
    table, varied = collect(grid_dir)
    summary = summarize(table, varied)
    figure_paths = [p for p in plot_grid(grid_dir) if p.suffix == ".png"]
    figures = "".join(figure_html(p) for p in figure_paths)
    status = ", ".join(f"{n} {state}" for state, n in table["status"].value_counts().items())
    name = html.escape(manifest.get("name") or grid_dir.name)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    grid_runs = table[table["role"] == "grid"]
    _, fixed = split_varied(grid_runs, varied)
    varied_text = (
        ", ".join(
            f"{html.escape(k)} ({html.escape(axis_label(k))}"
            + (f"; one value, {html.escape(str(fixed[k]))})" if k in fixed else ")")
            for k in varied
        )
        or "none"
    )
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>triggerlab report: {name}</title>
<link rel="icon" href="data:,"><style>{STYLE}</style></head><body>
<h1>triggerlab study: {name}</h1>
<p class="note">Generated {generated} by triggerlab {__version__}.
{len(table)} runs ({html.escape(status)}); varied: {varied_text};
{manifest.get("repeats", 1)} repeat(s) per cell.</p>
<h2>Results per cell</h2>
{results_note(table, lead)}
{intervals_note(summary)}
{summary_table(summary, varied, lead)}
{defense_section(table, varied)}
<h2>Figures</h2>
{figures}
<h2>Triggers used</h2>
<p class="note">The first non-target test image under each trigger of the study.</p>
{trigger_gallery(plan, grid_dir)}
<h2>Reporting checklist</h2>
<p class="note">The BadNets reporting checklist of reference 004, filled from the configs of
this grid.</p>
{checklist(plan, table, lead)}
<h2>Grid specification</h2>
<pre>{html.escape(spec_text)}</pre>
<p class="note">Rerun with <code>triggerlab grid {html.escape(str(grid_dir / SPEC_COPY))} --out
{html.escape(str(grid_dir))}</code>; finished runs are skipped.</p>
</body></html>
"""
    path = out or grid_dir / "report.html"
    write_text_atomic(path, document)
    return path
