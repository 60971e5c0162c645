"""`triggerlab leaderboard`: a grid's cells beside a published leaderboard's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triggerlab.cli.common import console, fail
from triggerlab.errors import TriggerlabError
from triggerlab.files import write_text_atomic

app = typer.Typer()

DEFAULT_BOARD = "backdoorbench_cifar10_preactresnet18_10pct"


@app.command()
def leaderboard(
    grid_dir: Annotated[Path, typer.Argument(help="a directory written by `triggerlab grid`")],
    board: Annotated[
        str, typer.Option(help="a shipped leaderboard (file name in analysis/leaderboards/)")
    ] = DEFAULT_BOARD,
    every_cell: Annotated[
        bool, typer.Option("--every-cell", help="also list the board's cells the grid did not run")
    ] = False,
) -> None:
    """Print the grid's clean accuracy, ASR and robust accuracy beside a published
    leaderboard's, cell by cell, with 95 % intervals; mark values outside them.

    The runs are matched by trigger kind (patch = BadNets, blend = Blended, warp = WaNet,
    quantize = BppAttack, signal = SIG), defence kind and poison.rate; the table is also
    written to GRID_DIR/leaderboard_BOARD.md. configs/backdoorbench_parity.yaml runs every
    cell of the default board.
    """
    from triggerlab.analysis.leaderboard import load_board, parity, parity_markdown

    try:
        result = parity(grid_dir, load_board(board))
    except TriggerlabError as exc:
        raise fail(exc) from None
    text = parity_markdown(result, every_cell)
    path = grid_dir / f"leaderboard_{board}.md"
    write_text_atomic(path, text)
    console.print(text, highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {path}", highlight=False)
