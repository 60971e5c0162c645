"""What every command shares: the consoles, one error line, progress bars."""

from __future__ import annotations

from typing import TextIO

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from triggerlab.errors import ArgumentError, RunFailed, TriggerlabError
from triggerlab.progress import Update

console = Console()
err_console = Console(stderr=True)


def listing(rows: list[tuple[str, list[str]]], table: Table) -> None:
    """A listing: the rich ``table`` on a terminal; plain lines (a heading, then indented
    details, never wrapped mid-sentence) when the output goes to a file or a pipe."""
    if console.is_terminal:
        console.print(table)
        return
    for heading, details in rows:
        typer.echo(heading)
        for line in details:
            typer.echo(f"  {line}")


# Library arguments whose flag is not ``--`` plus the argument's name with dashes.
FLAGS = {
    "threads": "--threads-per-worker",
    "overrides": "--set",
    "factory": "--model",
    "existing": "--extend / --replace",
    "grid_dir": "--out",
    "wait": "--no-wait",
}


def flag_of(argument: str) -> str:
    return FLAGS.get(argument, "--" + argument.replace("_", "-"))


def fail(error: TriggerlabError | str) -> typer.Exit:
    """Print one error message (user text verbatim, never read as markup); exit status 2."""
    if isinstance(error, ArgumentError):
        message = error.shown_as(flag_of(error.argument))
    else:
        message = str(error)
    err_console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    return typer.Exit(code=2)


def disk_full(error: OSError) -> SystemExit:
    """A full disk: one message saying so, and that nothing was corrupted; exit status 2.

    True of every command: files are written under a temporary name and renamed into place
    only once whole (a download stays a ``.part`` until verified), so a file in place is
    always complete, and an unfinished run resumes from its last checkpoint.
    """
    where = f" while writing {error.filename}" if error.filename else ""
    err_console.print(
        Text("error: ", style="bold red")
        + Text(
            f"the disk is full{where} ({error.strerror or error}). Nothing was corrupted: "
            "every file in place is whole, as files are written under a temporary name and "
            "renamed only once complete; an unfinished run or download continues where it "
            "stopped. Free some space and run the command again."
        ),
        soft_wrap=True,
    )
    return SystemExit(2)


def failed_run(error: RunFailed) -> typer.Exit:
    """A run that started and could not finish: one message, exit status 1."""
    err_console.print(Text("run failed: ", style="bold red") + Text(str(error)), soft_wrap=True)
    return typer.Exit(code=1)


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings as one plain line, ``warning: ...``, not a source location and code line."""
    err_console.print(Text("warning: ", style="bold yellow") + Text(str(message)), soft_wrap=True)


class ConsoleProgress:
    """Library progress updates as bars on a terminal, or one line per milestone in a log."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.interactive = err_console.is_terminal and not quiet
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}", markup=False),
            console=err_console,
            disable=not self.interactive,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ConsoleProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, update: Update) -> None:
        if self.quiet:
            return
        if not self.interactive:
            if update.milestone and update.note:
                console.print(update.note, highlight=False, markup=False, soft_wrap=True)
            return
        if update.stage not in self.tasks:
            self.tasks[update.stage] = self.bars.add_task(update.stage, total=update.total, note="")
        self.bars.update(
            self.tasks[update.stage], completed=update.done, total=update.total, note=update.note
        )
