"""Commands that look at models and catalogues: audit, explain, datasets, models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from triggerlab.cli.common import ConsoleProgress, console, fail, listing
from triggerlab.errors import TriggerlabError

if TYPE_CHECKING:
    from triggerlab.tools.audit import AuditResult

app = typer.Typer()


ModelOption = Annotated[
    str | None, typer.Option("--model", help="package.module:factory that builds the model")
]
WeightsOption = Annotated[
    Path | None,
    typer.Option("--weights", help="safetensors, or a PyTorch state dict (weights only)"),
]
DataOption = Annotated[
    str | None,
    typer.Option("--data", help="experiment YAML (its data section) or a dataset name"),
]
RunOption = Annotated[
    Path | None,
    typer.Option("--run", help="instead: a triggerlab run that saved its model, on its own data"),
]
KwargsOption = Annotated[
    str | None, typer.Option("--model-kwargs", help="JSON keyword arguments for the factory")
]
ModulePathOption = Annotated[
    Path | None,
    typer.Option(
        "--module-path", help="folder to import --model's module from (default: the current one)"
    ),
]
NormalizationOption = Annotated[
    str | None,
    typer.Option(
        "--input-normalization",
        help="MEAN,STD the model expects, e.g. 0.5,0.5 or 0.5/0.5/0.5,0.2/0.2/0.2",
    ),
]
BatchesOption = Annotated[
    int, typer.Option("--batches-per-step", help="mini-batches of 32 per Neural Cleanse step")
]
BudgetOption = Annotated[
    float | None,
    typer.Option("--time-budget", help="seconds for the whole scan (default: no limit)"),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a config key, e.g. data.resize=16"),
]


@app.command(
    epilog=(
        "Examples:\n\n"
        "  triggerlab audit --run runs/my-run --time-budget 300\n\n"
        "  triggerlab audit --model foreign_badnet:make_net --module-path examples "
        "--weights foreign.pt --data digits --set data.resize=16\n\n"
        "  triggerlab audit --model mypkg.nets:make_cnn --model-kwargs '{\"classes\": 10}' "
        "--weights model.pt --input-normalization 0.5,0.5 --data configs/badnets_mnist.yaml"
    )
)
def audit(
    model: ModelOption = None,
    weights: WeightsOption = None,
    data: DataOption = None,
    run: RunOption = None,
    model_kwargs: KwargsOption = None,
    module_path: ModulePathOption = None,
    input_normalization: NormalizationOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="report folder")] = Path("audit"),
    samples: Annotated[int, typer.Option(help="clean test images used")] = 500,
    steps: Annotated[int, typer.Option(help="most Neural Cleanse steps per class")] = 200,
    batches_per_step: BatchesOption = 10,
    time_budget: BudgetOption = None,
    overrides: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Scan a model someone else trained for backdoors (Neural Cleanse on clean data).

    The weights file is read first (no pickled code runs); then the module named by
    --model is imported and its factory called: that runs its code, so audit only
    code you trust.
    """
    from triggerlab.tools.audit import AuditOptions, audit_files, audit_run

    options = AuditOptions(samples, steps, batches_per_step, time_budget)
    try:
        with ConsoleProgress(quiet) as progress:
            if run is not None:
                if model or weights or data or overrides:
                    raise fail(
                        "--run: the run brings its model and data; give no --model, "
                        "--weights, --data or --set"
                    )
                result = audit_run(run, options, out, progress)
            else:
                files = {"--model": model, "--weights": weights, "--data": data}
                missing = [flag for flag, value in files.items() if value is None]
                if missing:
                    raise fail(f"{', '.join(missing)}: needed (or --run RUN_DIR)")
                result = audit_files(
                    model,  # type: ignore[arg-type]
                    weights,  # type: ignore[arg-type]
                    data,  # type: ignore[arg-type]
                    kwargs=model_kwargs,
                    input_normalization=input_normalization,
                    overrides=list(overrides or []),
                    module_path=module_path,
                    options=options,
                    out=out,
                    progress=progress,
                )
    except TriggerlabError as exc:
        raise fail(exc) from None
    print_audit(result, model or str(run), out)


def print_audit(result: AuditResult, name: str, out: Path) -> None:
    table = Table(title=f"audit of {name}", header_style="bold")
    for column in ("class", "mask L1 (px)", "anomaly index", "reversed trigger success", "flagged"):
        table.add_column(column, justify="right")
    for c, trigger in enumerate(result.triggers):
        index = result.anomaly_index[c]
        table.add_row(
            result.class_names[c],
            f"{trigger.l1:.1f}",
            "not reached" if not trigger.reached else f"{index:.2f}",
            f"{trigger.success:.2f}",
            "yes" if c in result.flagged else "",
        )
    console.print(table)
    for note in result.scan.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    verdict = ", ".join(result.class_names[c] for c in result.flagged) or "none"
    if not result.scan.conclusive:
        verdict = "none (inconclusive)"
    console.print(
        f"flagged classes: {verdict}; {result.scan.seconds:.0f} s; report: {out / 'audit.json'}",
        highlight=False,
    )


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
    from triggerlab.tools.explain import explain_run

    try:
        paths = explain_run(run_dir, out, samples, clean_run, output)
    except TriggerlabError as exc:
        raise fail(exc) from None
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


@app.command()
def datasets() -> None:
    """List the dataset loaders and the file layout each expects under data.root."""
    from triggerlab.cli.listings import build_listings
    from triggerlab.data.fetch import DATA_ENV, default_root

    listings = build_listings()
    console.print(
        f"Fetched datasets go to {default_root()} (set {DATA_ENV} to change it); "
        "`triggerlab data fetch NAME` or data.download: true fetches "
        + ", ".join(listings["fetchable"])
        + ".\n",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    table = Table(show_header=True, header_style="bold", show_lines=True)
    table.add_column("data.name")
    table.add_column("what it is, and the files it expects under data.root")
    table.add_column("data.options")
    rows = []
    for info in listings["datasets"]:
        options = info["options"] or "none"
        files = f"files: {info['layout']}"
        table.add_row(Text(info["name"]), Text(f"{info['summary']}\n{files}"), Text(options))
        rows.append((f"{info['name']}: {info['summary']}", [files, f"options: {options}"]))
    listing(rows, table)


@app.command()
def defenses() -> None:
    """List the defences (defense.kind), what each needs, and its parameters with defaults."""
    from triggerlab.cli.listings import build_listings

    table = Table(show_header=True, header_style="bold")
    table.add_column("defense.kind")
    table.add_column("needs")
    table.add_column("parameters (default)")
    rows = []
    for defense in build_listings()["defenses"]:
        kind, needs = defense["kind"], ", ".join(defense["needs"])
        parameters = [
            f"{name} ({default}): {about}" for name, default, about in defense["parameters"]
        ]
        table.add_row(Text(kind), Text(needs or "-"), Text("\n".join(parameters) or "-"))
        rows.append((f"{kind}: needs {needs or 'nothing more'}", parameters))
    listing(rows, table)


@app.command()
def models() -> None:
    """List the model architectures and their options (model.options)."""
    from triggerlab.cli.listings import build_listings

    table = Table(show_header=True, header_style="bold")
    table.add_column("model.name")
    table.add_column("model.options")
    rows = []
    for model in build_listings()["models"]:
        options = model["options"] or "-"
        table.add_row(model["name"], options)
        rows.append((model["name"], [f"options: {options}"]))
    listing(rows, table)
