"""The ``triggerlab`` command: thin wrappers around library calls.

Each command parses its flags, calls the library and prints; library errors
become one message and exit status 2 (``common.fail``), with a library
argument shown as the flag that set it. A full disk, wherever it strikes, ends
the command here in one message (``common.disk_full``).
"""

from __future__ import annotations

import errno
import gc
import sys
import warnings

import typer

from triggerlab.cli import (
    cluster,
    data,
    experiments,
    inspection,
    leaderboards,
    planning,
    triggers,
)
from triggerlab.cli.common import disk_full, err_console, show_warning

app = typer.Typer(
    name="triggerlab",
    help="Systematic backdoor (data-poisoning) experiments on image models.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
for group in (experiments.app, planning.app, cluster.app, inspection.app, leaderboards.app):
    for command in group.registered_commands:
        app.registered_commands.append(command)
app.add_typer(triggers.app, name="triggers")
app.add_typer(data.app, name="data")


def main() -> None:
    warnings.showwarning = show_warning
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise disk_full(exc) from None


def entry() -> None:
    """The process's command line (the ``triggerlab`` script, ``python -m triggerlab``):
    ``main``, then the objects it made are left out of the collections at interpreter exit,
    which walk every object torch's import made (0.3 s of each command). Not in ``main``,
    which tests call in their own long-lived process."""
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    entry()
