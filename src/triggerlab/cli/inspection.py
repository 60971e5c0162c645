"""Commands that look at models and catalogues: audit, explain, datasets, models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from triggerlab.cli.common import console, fail
from triggerlab.errors import TriggerlabError

app = typer.Typer()


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
    """Scan a model someone else trained for backdoors (Neural Cleanse on clean data).

    The weights file is read first (no pickled code runs); then the module named by
    --model is imported and its factory called: that runs its code, so audit only
    code you trust.
    """
    from triggerlab.audit import audit_files

    try:
        result = audit_files(
            model,
            weights,
            data,
            kwargs=model_kwargs,
            input_normalization=input_normalization,
            overrides=list(overrides or []),
            samples=samples,
            steps=steps,
            out=out,
        )
    except TriggerlabError as exc:
        raise fail(exc) from None
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
        raise fail(exc) from None
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


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
