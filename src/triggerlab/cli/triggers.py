"""``triggerlab triggers``: the trigger catalogue and previews."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from triggerlab.cli.common import ConsoleProgress, console, fail, listing
from triggerlab.errors import ConfigError, TriggerlabError
from triggerlab.progress import reporting

app = typer.Typer(
    help="The trigger catalogue: list the kinds and preview any trigger on real images.",
    no_args_is_help=True,
)


@app.command("list")
def triggers_list() -> None:
    """Every trigger kind with its parameters, defaults and units, its paper, the label mode
    the paper poisoned with (the kind's default label mode), and its presets
    (``trigger.preset``)."""
    from triggerlab.cli.listings import build_listings

    listings = build_listings()
    for trigger in listings["triggers"]:
        kind, summary = trigger["kind"], trigger["summary"]
        paper = f"paper: {trigger['paper']}; label mode there: {trigger['label_mode']}"
        default = trigger["default_label_mode"]
        paper += (
            ", triggerlab's default for this kind"
            if default == trigger["label_mode"]
            else f"; triggerlab's default for this kind: {default}"
        )
        regression = "; all_to_one on regression" if default != "all_to_one" else ""
        paper += f" (poison.label_mode: paper{regression})"
        presets = [f"preset {name}: {about}" for name, about in trigger["presets"].items()]
        caption = escape("\n".join([paper, *presets]))
        table = Table(
            title=f"[bold]{kind}[/]: {escape(summary)}",
            title_justify="left",
            caption=caption,
            caption_justify="left",
        )
        table.add_column("parameter")
        table.add_column("default")
        table.add_column("meaning and units")
        details = [paper, *presets]
        for name, default, about in trigger["parameters"]:
            table.add_row(name, escape(default), escape(about))
            details.append(f"{name} (default {default}): {about}")
        listing([(f"{kind}: {summary}", details)], table)
    console.print("colour names: " + ", ".join(listings["colors"]), highlight=False)
    console.print(
        "positions: " + ", ".join(listings["positions"]) + ", or [x, y]",
        highlight=False,
        markup=False,
    )


@app.command(
    "preview",
    epilog=(
        "Examples:\n\n"
        "  triggerlab triggers preview --trigger kind=frame --trigger thickness=2 "
        "--out frame.png\n\n"
        "  triggerlab triggers preview --trigger 'kind=signal shape=sine delta=0.05' "
        "--data digits --resize 32 --out sig.png\n\n"
        "  triggerlab triggers preview configs/default.yaml --out gallery.png"
    ),
)
def triggers_preview(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write")],
    config: Annotated[
        Path | None, typer.Argument(help="experiment YAML whose trigger and data to use")
    ] = None,
    trigger: Annotated[
        list[str] | None,
        typer.Option(
            "--trigger",
            "-t",
            help="trigger parameters as key=value (repeat, or quote several); kind=... first",
        ),
    ] = None,
    data: Annotated[str | None, typer.Option(help="dataset name (default: the config's)")] = None,
    root: Annotated[Path | None, typer.Option(help="dataset folder (data.root)")] = None,
    resize: Annotated[int | None, typer.Option(help="resize images to N x N (data.resize)")] = None,
    samples: Annotated[int, typer.Option(help="images shown")] = 6,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override any config key")
    ] = None,
) -> None:
    """Draw clean, triggered and amplified-residual images with the stealthiness metrics."""
    from triggerlab.config import load_config, split_assignments
    from triggerlab.run.lf_checks import needs_pattern
    from triggerlab.tools.preview import STAND_IN_NOTE, format_stealth, preview_trigger

    settings = [f"trigger.{item}" for value in trigger or [] for item in split_assignments(value)]
    if data is not None:
        settings.append(f"data.name={data}")
    if root is not None:
        settings.append(f"data.root={root}")
    if resize is not None:  # else, as in a run, the dataset's run size (the digits' 16 px)
        settings.append(f"data.resize={resize}")
    settings += list(overrides or [])
    try:
        cfg = load_config(config, settings)
        with ConsoleProgress(quiet=False) as progress, reporting(progress):
            metrics = preview_trigger(cfg, out, samples)
    except TriggerlabError as exc:
        raise fail(exc) from None
    console.print(format_stealth(metrics), highlight=False)
    if needs_pattern(cfg):
        console.print(f"note: {STAND_IN_NOTE}", highlight=False)
    console.print(f"wrote {out}", highlight=False)


@app.command(
    "lf-pattern",
    epilog=(
        "Example:\n\n"
        "  triggerlab triggers lf-pattern configs/default.yaml --out lf.npy --cache cache/\n\n"
        "  then: --set trigger.kind=low_frequency --set trigger.path=lf.npy (a run without "
        "a path computes the same pattern itself, cached)"
    ),
)
def triggers_lf_pattern(
    out: Annotated[Path, typer.Option("--out", "-o", help=".npy pattern file to write")],
    cache: Annotated[
        Path,
        typer.Option(help="folder keeping the clean models, trained once per data and model"),
    ],
    config: Annotated[
        Path | None, typer.Argument(help="experiment YAML: data, model, training, target")
    ] = None,
    images: Annotated[
        int, typer.Option(help="training images the perturbation is fitted on")
    ] = 100,
    passes: Annotated[int, typer.Option(help="most passes over those images")] = 50,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override any config key")
    ] = None,
) -> None:
    """Zeng et al.'s low-frequency trigger: the low-passed universal adversarial perturbation
    of the config's network trained clean (trained once, kept in --cache)."""
    from triggerlab.config import load_config
    from triggerlab.tools.low_frequency import generate_lf_pattern

    try:
        if images < 1 or passes < 1:
            raise ConfigError("--images and --passes: expected at least 1")
        cfg = load_config(config, list(overrides or []))
        with ConsoleProgress(quiet=False) as progress, reporting(progress):
            made = generate_lf_pattern(cfg, out, cache, images=images, max_passes=passes)
    except TriggerlabError as exc:
        raise fail(exc) from None
    model = "trained now" if made.trained else "loaded from the cache"
    rates = ", ".join(f"{r:.3f}" for r in made.fooling_rates)
    console.print(
        f"wrote {made.path} (clean model {made.key}, {model}; fooling rate after each of "
        f"{made.passes} passes: {rates})",
        highlight=False,
    )
