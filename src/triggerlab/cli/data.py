"""``triggerlab data fetch`` and ``triggerlab data check``: getting datasets and checking
copies placed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triggerlab.cli.common import ConsoleProgress, console, fail
from triggerlab.errors import TriggerlabError

app = typer.Typer(help="Get datasets (fetch) and check copies placed by hand (check).")

NameArgument = Annotated[
    str,
    typer.Argument(help="mnist, cifar10, cifar100, gtsrb, tinyimagenet, mpiifacegaze or biwi"),
]


@app.command()
def fetch(
    name: NameArgument,
    root: Annotated[
        Path | None,
        typer.Option(help="folder to fetch into (default: the per-user cache, see `datasets`)"),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(help="base URL of a mirror holding the same files (or TRIGGERLAB_MIRROR)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Download, verify and unpack a dataset; a complete copy already there is kept.

    Datasets behind a licence form (mpiifacegaze, biwi) cannot be fetched: the
    command says where to request them and where to put the files.
    """
    from triggerlab.data.fetch import default_root, fetch_dataset, manual_route, source

    try:
        src = source(name)
        where = root or default_root(name)
        if not src.fetchable:
            console.print(
                f"{name} cannot be downloaded automatically ({src.licence}).\n"
                f"{manual_route(src, where)}.\n"
                f"Then check the copy: triggerlab data check {name} --root {where}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(code=2)
        already = not src.missing(where)
        with ConsoleProgress(quiet) as progress:
            path = fetch_dataset(name, root, mirror=mirror, progress=progress)
    except TriggerlabError as exc:
        raise fail(exc) from None
    state = "already complete" if already else "fetched and verified"
    console.print(f"{name}: {state} in {path}; use it with data.root: {path}", highlight=False)


@app.command()
def check(
    name: NameArgument,
    root: Annotated[Path, typer.Option(help="the folder holding the copy")],
) -> None:
    """Check that a copy of a dataset is complete and readable (the loader's checks run)."""
    from triggerlab.data.fetch.check import check_dataset

    try:
        line = check_dataset(name, root)
    except TriggerlabError as exc:
        raise fail(exc) from None
    console.print(line, highlight=False, markup=False)
