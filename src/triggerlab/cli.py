"""The ``triggerlab`` command: thin wrappers around library calls."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from triggerlab.errors import TriggerlabError

app = typer.Typer(
    name="triggerlab",
    help="Systematic backdoor (data-poisoning) experiments on image models.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    err_console.print(
        f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True
    )
    return typer.Exit(code=2)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  triggerlab run                      # BadNets on the bundled digits\n\n"
        "  triggerlab run configs/badnets_mnist.yaml --set data.root=/data/mnist\n\n"
        "  triggerlab run --set poison.rate=0.05 --set trigger.position=center "
        "--set trigger.color=red"
    )
)
def run(
    config: Annotated[
        Path | None, typer.Argument(help="experiment YAML; omitted: the embedded default")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a config key, e.g. --set poison.rate=0.05"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="parent folder of the run (output.directory)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Run one backdoor experiment and write its run directory."""
    from triggerlab.config import load_config
    from triggerlab.experiment import run_experiment

    settings = list(overrides or [])
    if out is not None:
        settings.append(f"output.directory={out}")
    try:
        cfg = load_config(config, settings)
        interactive = err_console.is_terminal and not quiet
        echo = (
            None
            if quiet or interactive
            else (lambda line: console.print(line, highlight=False, soft_wrap=True))
        )
        result = run_experiment(cfg, progress=interactive, echo=echo)
    except TriggerlabError as exc:
        raise fail(str(exc)) from None
    print_summary(result.summary)


def print_summary(summary: dict) -> None:
    from triggerlab.tasks import metric_label

    final, poison, timings = summary["final"], summary["poison"], summary["timings"]
    table = Table(title="BadNets run", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in final.items():
        if name != "train_loss":
            table.add_row(metric_label(name), f"{value:.4f}")
    rate = "set by count" if poison["rate"] is None else f"rate {poison['rate']:g}"
    table.add_row("poisoned samples", f"{poison['count']} of {poison['train_size']} ({rate})")
    table.add_row("poisoned fraction", f"{poison['fraction']:.4f}")
    protocol = summary.get("protocol")
    if protocol:
        table.add_row(
            f"fine-tuning (subject {protocol['held_out_subject']})",
            f"{protocol['finetune_poisoned']} of {protocol['finetune_size']} poisoned, "
            f"{protocol['finetune_epochs']} epochs",
        )
    table.add_row("training throughput", f"{timings['train_images_per_s']:.0f} images/s")
    table.add_row("total time", f"{timings['total_s']:.1f} s on {summary['device']}")
    console.print(table)
    console.print(f"run directory: {summary['run_dir']}", highlight=False)


@app.command()
def datasets() -> None:
    """List the dataset loaders and the file layout each expects under data.root."""
    from triggerlab.data import DATASETS

    for info in DATASETS.values():
        options = ", ".join(f"{k}={v}" for k, v in info.options().items()) or "none"
        console.print(f"[bold]{info.name}[/]  {info.summary}", highlight=False)
        console.print(f"  files:   {info.layout}", highlight=False, markup=False, soft_wrap=True)
        console.print(f"  options: {options}\n", highlight=False, markup=False)


@app.command()
def models() -> None:
    """List the model architectures and their options (model.options)."""
    from triggerlab.models import MODELS, model_options

    table = Table(show_header=True, header_style="bold")
    table.add_column("model.name")
    table.add_column("model.options")
    for name in MODELS:
        options = ", ".join(f"{k}={v}" for k, v in model_options(name).items()) or "-"
        table.add_row(name, options)
    console.print(table)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  triggerlab grid configs/ref002_poisoning_rate.yaml --workers 2\n\n"
        "  triggerlab grid configs/ref002_poisoning_rate.yaml --set base.data.name=mnist "
        "--set base.data.root=/data/mnist\n\n"
        "  triggerlab grid study.yaml --executor ray --address auto"
    )
)
def grid(
    spec: Annotated[
        Path, typer.Argument(help="grid spec YAML (base, grid, zip, repeats, seed, clean_baseline)")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="grid directory (default: grids/<name>)")
    ] = None,
    workers: Annotated[int, typer.Option(help="local worker processes")] = 1,
    threads_per_worker: Annotated[
        int | None,
        typer.Option(
            "--threads-per-worker", help="torch threads per run (default: cores / workers)"
        ),
    ] = None,
    executor: Annotated[str, typer.Option(help="local or ray")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local one)")
    ] = None,
    force: Annotated[bool, typer.Option(help="rerun finished runs too")] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a spec key, e.g. base.train.epochs=5"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Run every experiment of a grid; finished runs are skipped, so a killed grid resumes."""
    from triggerlab.grid import load_grid_spec, run_grid

    if executor not in ("local", "ray"):
        raise fail(f"--executor: expected 'local' or 'ray', got {executor!r}")
    try:
        loaded = load_grid_spec(spec, list(overrides or []))
        grid_dir = out or Path("grids") / (loaded.name or spec.stem)
        interactive = err_console.is_terminal and not quiet
        echo = (
            None
            if quiet or interactive
            else (lambda line: console.print(line, highlight=False, soft_wrap=True))
        )
        outcome = run_grid(
            loaded,
            grid_dir,
            workers,
            threads_per_worker,
            executor,
            address,
            force,  # type: ignore[arg-type]
            progress=interactive,
            echo=echo,
        )
    except TriggerlabError as exc:
        raise fail(str(exc)) from None
    console.print(
        f"grid {grid_dir}: {outcome.total} runs, {outcome.skipped} already finished, "
        f"{len(outcome.completed)} run now, {len(outcome.failed)} failed ({outcome.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    for identity, error in outcome.failed.items():
        err_console.print(f"failed {identity}: {error}", highlight=False, markup=False)
    if not outcome.ok:
        raise typer.Exit(code=1)


@app.command()
def results(
    grid_dir: Annotated[Path, typer.Argument(help="a directory written by `triggerlab grid`")],
    compare: Annotated[
        list[str] | None,
        typer.Option(help="Welch t-tests between cells, e.g. --compare trigger.size=3,5"),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(
            help="also print and write tables.md: cell means by one varied key, or two "
            "(rows,columns), e.g. --table poison.rate,trigger.delta"
        ),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="metrics of --table (default: all)")
    ] = None,
) -> None:
    """Write results.csv, results.parquet and summary.csv (mean, std, n, 95 % CI per cell)."""
    from triggerlab.results import write_results

    keys = [k.strip() for k in table.split(",")] if table else None
    try:
        paths = write_results(grid_dir, list(compare or []), keys, list(metric or []))
    except TriggerlabError as exc:
        raise fail(str(exc)) from None
    if "tables.md" in paths:
        console.print(paths["tables.md"].read_text(), highlight=False, markup=False, soft_wrap=True)
    for path in paths.values():
        console.print(f"wrote {path}", highlight=False)


@app.command()
def plot(
    grid_dir: Annotated[Path, typer.Argument(help="a directory written by `triggerlab grid`")],
    metric: Annotated[
        list[str] | None,
        typer.Option(help="metrics to plot (default: asr and clean_acc, or the regression errors)"),
    ] = None,
    x: Annotated[str | None, typer.Option(help="varied key on the x axis")] = None,
    hue: Annotated[str | None, typer.Option(help="varied key drawn as one line per value")] = None,
) -> None:
    """Draw the grid's figures (PNG and SVG) into GRID_DIR/figures."""
    from triggerlab.figures import plot_grid

    try:
        paths = plot_grid(grid_dir, tuple(metric) if metric else None, x, hue)
    except TriggerlabError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {len(paths)} files to {grid_dir / 'figures'}", highlight=False)


@app.command()
def report(
    grid_dir: Annotated[Path, typer.Argument(help="a directory written by `triggerlab grid`")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file (default: GRID_DIR/report.html)")
    ] = None,
) -> None:
    """Write one self-contained HTML report: tables, figures, trigger gallery and checklist."""
    from triggerlab.report import build_report

    try:
        path = build_report(grid_dir, out)
    except TriggerlabError as exc:
        raise fail(str(exc)) from None
    console.print(f"report: {path}", highlight=False)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  triggerlab audit --model mypkg.nets:make_cnn --weights model.safetensors "
        "--data digits --set data.resize=16\n\n"
        "  triggerlab audit --model mypkg.nets:make_cnn --model-kwargs '{\"classes\": 10}' "
        "--weights model.pt --input-normalization 0.5,0.5 --data configs/badnets_mnist.yaml"
    )
)
def audit(
    model: Annotated[str, typer.Option(help="package.module:factory that builds the model")],
    weights: Annotated[
        Path, typer.Option(help="safetensors, or a PyTorch state dict (weights only)")
    ],
    data: Annotated[str, typer.Option(help="experiment YAML (its data section) or a dataset name")],
    model_kwargs: Annotated[
        str | None, typer.Option(help="JSON keyword arguments for the factory")
    ] = None,
    input_normalization: Annotated[
        str | None,
        typer.Option(help="MEAN,STD the model expects, e.g. 0.5,0.5 or 0.5/0.5/0.5,0.2/0.2/0.2"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="report folder")] = Path("audit"),
    samples: Annotated[int, typer.Option(help="clean test images used")] = 500,
    steps: Annotated[int, typer.Option(help="Neural Cleanse steps per class")] = 300,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a config key, e.g. data.resize=16"),
    ] = None,
) -> None:
    """Scan a model someone else trained for backdoors (Neural Cleanse on clean data)."""
    from triggerlab.audit import (
        Normalize,
        audit_model,
        build_user_model,
        load_weights,
        parse_normalization,
        read_state_dict,
    )
    from triggerlab.audit import (
        model_kwargs as parse_kwargs,
    )
    from triggerlab.config import load_config, validate_config
    from triggerlab.data import prepare_data

    try:
        path = Path(data)
        if path.suffix in (".yaml", ".yml"):
            cfg = load_config(path, list(overrides or []))
        else:
            from triggerlab.config import apply_overrides

            cfg = validate_config(
                apply_overrides({"data": {"name": data}}, list(overrides or [])), "(--data)"
            )
        network = build_user_model(model, parse_kwargs(model_kwargs))
        load_weights(network, read_state_dict(weights))
        if input_normalization is not None:
            channels = prepare_data(cfg.data, cfg.split_seed).shape[0]
            network = torch_sequential(
                Normalize(*parse_normalization(input_normalization, channels)), network
            )
        result = audit_model(network, cfg, samples=samples, steps=steps, out=out)
    except TriggerlabError as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"audit of {model}", header_style="bold")
    for column in ("class", "mask L1", "anomaly index", "reversed trigger success", "flagged"):
        table.add_column(column, justify="right")
    for c, trigger in enumerate(result.triggers):
        flag = "yes" if c in result.flagged else ""
        table.add_row(
            result.class_names[c],
            f"{trigger.l1:.1f}",
            f"{result.anomaly_index[c]:.2f}",
            f"{trigger.success:.2f}",
            flag,
        )
    console.print(table)
    verdict = ", ".join(result.class_names[c] for c in result.flagged) or "none"
    console.print(f"flagged classes: {verdict}; report: {out / 'audit.json'}", highlight=False)


@app.command()
def explain(
    run_dir: Annotated[Path, typer.Argument(help="a run directory with model.safetensors")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="folder for gradcam.png and feature_maps.png")
    ],
    samples: Annotated[int, typer.Option(help="test images explained")] = 4,
    clean_run: Annotated[
        Path | None,
        typer.Option(help="a clean model's run directory, shown beside the backdoored one"),
    ] = None,
    output: Annotated[
        str | None, typer.Option(help="regression: the output explained (default: the first)")
    ] = None,
) -> None:
    """Grad-CAM panels and last-convolution feature maps of a run's model."""
    from triggerlab.explain import explain_run

    try:
        paths = explain_run(run_dir, out, samples, clean_run, output)
    except TriggerlabError as exc:
        raise fail(str(exc)) from None
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


def torch_sequential(*modules):
    from torch import nn

    return nn.Sequential(*modules)


triggers_app = typer.Typer(
    help="The trigger catalogue: list the kinds and preview any trigger on real images.",
    no_args_is_help=True,
)
app.add_typer(triggers_app, name="triggers")


@triggers_app.command("list")
def triggers_list() -> None:
    """Every trigger kind with its parameters, defaults and units."""
    from triggerlab.triggers import TRIGGER_KINDS
    from triggerlab.triggers.colors import NAMED_COLORS
    from triggerlab.triggers.geometry import NAMED_POSITIONS

    for kind, spec in TRIGGER_KINDS.items():
        doc = (spec.__doc__ or "").strip().splitlines()[0]
        table = Table(title=f"[bold]{kind}[/]: {escape(doc)}", title_justify="left")
        table.add_column("parameter")
        table.add_column("default")
        table.add_column("meaning and units")
        for name, info in spec.model_fields.items():
            if name == "kind":
                continue
            default = "(required)" if info.is_required() else repr(info.default)
            table.add_row(name, escape(default), escape(info.description or ""))
        console.print(table)
    console.print("colour names: " + ", ".join(NAMED_COLORS), highlight=False)
    console.print("positions: " + ", ".join(NAMED_POSITIONS) + ", or [x, y]", highlight=False)


@triggers_app.command(
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
    from triggerlab.preview import format_stealth, preview_trigger

    settings = [f"trigger.{item}" for value in trigger or [] for item in split_assignments(value)]
    if data is not None:
        settings.append(f"data.name={data}")
    if root is not None:
        settings.append(f"data.root={root}")
    if resize is not None:
        settings.append(f"data.resize={resize}")
    settings += list(overrides or [])
    try:
        cfg = load_config(config, settings)
        metrics = preview_trigger(cfg, out, samples)
    except TriggerlabError as exc:
        raise fail(str(exc)) from None
    console.print(format_stealth(metrics), highlight=False)
    console.print(f"wrote {out}", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
