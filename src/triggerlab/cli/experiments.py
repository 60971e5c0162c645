"""Commands that run experiments and read their results: run, grid, results, plot, report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from triggerlab.cli.cluster import (
    Gpus,
    Memory,
    Parallel,
    Partition,
    Retries,
    SbatchOption,
    TimeLimit,
    Wait,
    print_outcome,
    slurm_options,
    with_ray_hint,
)
from triggerlab.cli.common import ConsoleProgress, console, err_console, fail, failed_run
from triggerlab.cli.run_table import print_summary
from triggerlab.errors import Interrupted, RunFailed, TriggerlabError
from triggerlab.files import argument, check_folder, config_key
from triggerlab.progress import reporting

if TYPE_CHECKING:
    from triggerlab.config import ExperimentConfig
    from triggerlab.grid.cost import GridCost
    from triggerlab.grid.spec import GridSpec
    from triggerlab.grid.stacking import Stack as StackSetting
    from triggerlab.run.experiment import RunResult

app = typer.Typer()

# Options of `grid`, named here to keep its signature readable.
Workers = Annotated[
    int | None, typer.Option(help="local worker processes (default: 1, or one per GPU slot)")
]
ThreadsPerWorker = Annotated[
    int | None,
    typer.Option("--threads-per-worker", help="torch threads per run (default: cores / workers)"),
]
MaxRuns = Annotated[
    int,
    typer.Option(
        "--max-runs", help="refuse a spec of more runs than this, before planning it", min=1
    ),
]
GpusPerRun = Annotated[
    float | None,
    typer.Option(
        "--gpus-per-run", help="share GPUs: the fraction of one GPU per run (0.25: four per GPU)"
    ),
]
Stack = Annotated[
    str,
    typer.Option(
        help="most runs trained together as one stacked model where their configs allow it "
        "(local executor): auto (the default) stacks where it pays here (heads on cached "
        "features; whole models on a GPU, or on a CPU when small), K up to K of any kind, "
        "1 every run alone"
    ),
]
SpecPath = Annotated[
    Path, typer.Argument(help="grid spec YAML (base, grid, zip, repeats, seed, clean_baseline)")
]
GridOut = Annotated[
    Path | None, typer.Option("--out", "-o", help="grid directory (default: grids/<name>)")
]
Address = Annotated[
    str | None, typer.Option(help="Ray cluster address (default: start a local one)")
]
Extend = Annotated[
    bool, typer.Option(help="the folder holds another spec's runs: keep them beside this spec's")
]
Replace = Annotated[
    bool, typer.Option(help="the folder holds another spec's runs: delete those this spec lacks")
]
SpecOverrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a spec key, e.g. base.train.epochs=5"),
]


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
        Path | None,
        typer.Argument(
            help="experiment YAML, or a grid spec (its base experiment; choose the cell with "
            "--set); omitted: the embedded default"
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a config key, e.g. --set poison.rate=0.05"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="parent folder of the run (output.directory)")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads (train.threads); set it to reproduce a grid run exactly"),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="continue a killed run in its folder, from its last checkpoint"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Run one backdoor experiment and write its run directory."""
    from triggerlab.config import load_config
    from triggerlab.grid.spec import base_experiment, is_grid_spec

    settings = list(overrides or [])
    if out is not None:
        settings.append(f"output.directory={out}")
    if threads is not None:
        settings.append(f"train.threads={threads}")
    if resume is not None and (config is not None or settings):
        raise fail("--resume: a run continues with its own config; give no config or --set")
    try:
        if resume is not None:
            print_summary(resumed(resume, quiet).summary)
            return
        if config is not None and is_grid_spec(config):  # one cell: the base, set by --set
            cfg = base_experiment(config, settings)
        else:
            cfg = load_config(config, settings)
        # imported once the config holds: a bad one is refused without loading the engine
        from triggerlab.run.experiment import run_experiment

        check_folder(cfg.output.directory, config_key("output.directory"))  # before fetching
        with ConsoleProgress(quiet) as progress:
            prefetch([cfg], progress)
            result = run_experiment(cfg, progress=progress)
    except TriggerlabError as exc:
        raise fail(exc) from None
    except RunFailed as exc:
        raise failed_run(exc) from None
    except Interrupted as exc:
        raise interrupted(exc) from None
    print_summary(result.summary)


def resumed(run_dir: Path, quiet: bool) -> RunResult:
    """A killed run continued in its folder from its last checkpoint."""
    from triggerlab.run.experiment import resume_run

    with ConsoleProgress(quiet) as progress:
        return resume_run(run_dir, progress)


def interrupted(exc: Interrupted) -> typer.Exit:
    """Ctrl-C: say what is left and how to continue; exit status 130, as the shell's."""
    if exc.epoch is None:
        note = "is unfinished and has no checkpoint (train.checkpoint_every makes them)"
    else:
        note = (
            f"keeps its checkpoint after epoch {exc.epoch}; continue it with\n"
            f"  triggerlab run --resume {exc.run_dir}"
        )
    err_console.print(
        f"interrupted: {exc.run_dir} {note}", highlight=False, markup=False, soft_wrap=True
    )
    return typer.Exit(code=130)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  triggerlab grid configs/ref002_poisoning_rate.yaml --workers 2\n\n"
        "  triggerlab grid configs/ref002_poisoning_rate.yaml --set base.data.name=mnist "
        "--set base.data.root=/data/mnist\n\n"
        "  triggerlab grid study.yaml --gpus-per-run 0.25\n\n"
        "  triggerlab grid study.yaml --executor ray --address auto\n\n"
        "  triggerlab grid study.yaml --executor slurm --slurm-partition gpu --slurm-gpus 1 "
        "--slurm-time 2:00:00 --no-wait"
    )
)
def grid(
    spec: SpecPath,
    out: GridOut = None,
    workers: Workers = None,
    threads_per_worker: ThreadsPerWorker = None,
    executor: Annotated[str, typer.Option(help="local, ray or slurm")] = "local",
    address: Address = None,
    gpus_per_run: GpusPerRun = None,
    max_runs: MaxRuns = 100_000,
    force: Annotated[bool, typer.Option(help="rerun finished runs too")] = False,
    extend: Extend = False,
    replace: Replace = False,
    overrides: SpecOverrides = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    estimate: Annotated[
        bool,
        typer.Option(help="print the plan's cost first (`triggerlab plan`) and compare at the end"),
    ] = True,
    retries: Retries = 2,
    wait: Wait = True,
    slurm_partition: Partition = None,
    slurm_time: TimeLimit = "60",
    slurm_mem: Memory = None,
    slurm_gpus: Gpus = 0,
    slurm_parallel: Parallel = None,
    slurm_option: SbatchOption = None,
    stack: Stack = "auto",
) -> None:
    """Run every experiment of a grid; finished runs are skipped, so a killed grid resumes."""
    from triggerlab.grid.runner import run_grid
    from triggerlab.grid.spec import load_grid_spec
    from triggerlab.grid.stacking import parse_stack

    if extend and replace:
        raise fail("--extend and --replace: choose one")
    try:
        most = parse_stack(stack)
        options = slurm_options(
            slurm_partition, slurm_time, slurm_mem, slurm_gpus, slurm_parallel, slurm_option
        )
        loaded = load_grid_spec(spec, list(overrides or []))
        grid_dir = out or Path("grids") / (loaded.name or spec.stem)
        check_folder(grid_dir, argument("grid_dir"))  # before fetching any data
        with ConsoleProgress(quiet) as progress, reporting(progress):
            prefetch_grid(loaded, max_runs, progress)
            cost = planned(
                loaded,
                grid_dir,
                max_runs,
                workers,
                threads_per_worker,
                force,
                estimate,
                most if executor == "local" else 1,  # Ray and Slurm train each run alone
            )
            outcome = run_grid(
                loaded,
                grid_dir,
                workers=workers,
                threads=threads_per_worker,
                executor=executor,  # type: ignore[arg-type]
                address=address,
                gpus_per_run=gpus_per_run,
                force=force,
                existing="extend" if extend else "replace" if replace else "refuse",
                max_runs=max_runs,
                progress=progress,
                retries=retries,
                slurm=options,
                wait=wait,
                stack=most,
            )
    except TriggerlabError as exc:
        raise fail(with_ray_hint(exc)) from None
    if cost is not None and cost.here_s() is not None and executor == "local" and outcome.completed:
        console.print(
            f"time: estimated {cost.here_s():.1f} s, measured {outcome.seconds:.1f} s "
            f"({len(outcome.completed)} of the {cost.runs} runs estimated ran)",
            highlight=False,
        )
    print_outcome(grid_dir, outcome)


def planned(
    spec: GridSpec,
    grid_dir: Path,
    max_runs: int,
    workers: int | None,
    threads: int | None,
    force: bool,
    wanted: bool,
    stack: StackSetting = "auto",
) -> GridCost | None:
    """The cost of the runs left to do, printed (None when not wanted or not known)."""
    if not wanted:
        return None
    import warnings

    from triggerlab.cli.planning import estimate

    try:
        cost = estimate(spec, grid_dir, max_runs, workers, threads, force=force, stack=stack)
    except TriggerlabError:
        return None  # bad input: the grid refuses it next, in its own words and order
    except Exception as exc:  # an estimate that fails must never stop the grid
        warnings.warn(f"no cost estimate ({type(exc).__name__}: {exc})", stacklevel=2)
        return None
    for line in cost.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return cost


def prefetch_grid(spec: GridSpec, max_runs: int, progress: ConsoleProgress) -> None:
    """Fetch a grid's datasets: its base's, or each cell's when cells vary the data."""
    from triggerlab.config import validate_config
    from triggerlab.grid.plan import one_config_per_dataset

    if any(k.startswith("data") for k in spec.varied_keys()):  # cells may name other datasets
        prefetch(one_config_per_dataset(spec, max_runs), progress)
    else:  # one dataset for every cell: the base says it (a big grid is planned once)
        prefetch([validate_config(spec.base, "the grid's base")], progress)


def prefetch(configs: list[ExperimentConfig], progress: ConsoleProgress) -> None:
    """Fetch the datasets that ``data.download`` asks for before any work, with a progress bar
    (runs would fetch them too, silently)."""
    from triggerlab.data.prepare import downloaded_root

    wanted = {(c.data.name, c.data.root): c.data for c in configs if c.data.download}
    for data in wanted.values():
        downloaded_root(data, progress)


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
    from triggerlab.analysis.results import write_results

    keys = [k.strip() for k in table.split(",")] if table else None
    try:
        paths = write_results(grid_dir, list(compare or []), keys, list(metric or []))
    except TriggerlabError as exc:
        raise fail(exc) from None
    for shown in ("defenses.md", "tables.md"):
        if shown in paths:
            text = paths[shown].read_text()
            console.print(text, highlight=False, markup=False, soft_wrap=True)
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
    stealth: Annotated[
        str,
        typer.Option(
            help="x axis of the stealth-vs-success frontier: psnr_db, ssim, linf_mean, "
            "l2_mean or l0_fraction"
        ),
    ] = "psnr_db",
) -> None:
    """Draw the grid's figures (PNG and SVG) into GRID_DIR/figures.

    A grid that varies the trigger also gets the stealth-versus-success frontier.
    """
    from triggerlab.analysis.plots.grid_figures import plot_grid

    try:
        paths = plot_grid(grid_dir, tuple(metric) if metric else None, x, hue, stealth)
    except TriggerlabError as exc:
        raise fail(exc) from None
    console.print(f"wrote {len(paths)} files to {grid_dir / 'figures'}", highlight=False)


@app.command()
def report(
    grid_dir: Annotated[Path, typer.Argument(help="a directory written by `triggerlab grid`")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file (default: GRID_DIR/report.html)")
    ] = None,
) -> None:
    """Write one self-contained HTML report: tables, figures, trigger gallery and checklist."""
    from triggerlab.analysis.report import build_report

    try:
        path = build_report(grid_dir, out)
    except TriggerlabError as exc:
        raise fail(exc) from None
    console.print(f"report: {path}", highlight=False)
