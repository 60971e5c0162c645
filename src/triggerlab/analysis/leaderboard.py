"""A grid's cells beside a published leaderboard's, number for number (issue 25, item 12).

A leaderboard (``analysis/leaderboards/*.csv``, copied with its source and date in the
file's header) gives clean accuracy (CA), attack success rate (ASR) and robust accuracy
(RA) in percent for each attack, poisoning ratio and defence. ``parity`` finds the grid's
runs of the same cells (an attack by its trigger kind, a defence by its kind, the ratio by
``poison.rate``), takes the defended model's metrics where a defence repaired the model,
and sets each cell's mean beside the board's value with an interval:

- two or more repeats: the 95 % interval over repeats (``statistics.interval``), the spread
  another training would show;
- one repeat: the Wilson 95 % interval of its test predictions (``binomial``), the test
  set's sampling error alone, which understates how much a retrained model differs.

A board value outside the interval marks the cell as disagreeing. The board's own cells are
one run each (seed 0): their spread is unknown, so a mark says "beyond our interval", never
that the board is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from triggerlab.analysis.binomial import pooled_binomial, trials_column
from triggerlab.analysis.statistics import interval
from triggerlab.errors import ArgumentError, DataFormatError
from triggerlab.grid.store import read_manifest, run_of

BOARD_FOLDER = Path(__file__).with_name("leaderboards")
COLUMNS = ("attack", "poison_ratio", "defense", "ca", "asr", "ra")
# The board's metric columns and triggerlab's metrics: ASR and RA over the non-target test
# images (BackdoorBench's bd_test set leaves the target class out), CA over every test image.
METRICS = {"ca": "clean_acc", "asr": "asr", "ra": "robust_acc"}
# BackdoorBench's attack and defence names for triggerlab's kinds.
ATTACKS = {
    "patch": "badnets",
    "blend": "blended",
    "warp": "wanet",
    "quantize": "bpp",
    "signal": "sig",
}
DEFENSES = {
    "none": "none",
    "finetune": "ft",
    "fine_pruning": "fp",
    "neural_cleanse": "nc",
    "nad": "nad",
    "anp": "anp",
    "clp": "clp",
    "ibau": "ibau",
    "abl": "abl",
}
KEY = ["attack", "poison_ratio", "defense"]


@dataclass(frozen=True)
class Board:
    """A published table: its header notes (what, source, date) and its cells in percent."""

    name: str
    notes: tuple[str, ...]
    cells: pd.DataFrame


@dataclass(frozen=True)
class Parity:
    """One row per board cell: the board's values, the grid's mean and interval per metric
    (fractions), how many runs, which interval, and whether the board lies outside it."""

    board: Board
    rows: pd.DataFrame
    unmatched_runs: int  # complete runs whose attack or defence the board does not name


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARD_FOLDER.glob("*.csv"))


def load_board(name: str) -> Board:
    """A shipped leaderboard by name (a file stem of ``analysis/leaderboards/``)."""
    path = BOARD_FOLDER / f"{name}.csv"
    if not path.is_file():
        raise ArgumentError(
            "board", f"no leaderboard {name!r}; shipped: {', '.join(board_names())}"
        )
    lines = path.read_text().splitlines()
    notes = tuple(line.lstrip("# ").rstrip() for line in lines if line.startswith("#"))
    cells = pd.read_csv(path, comment="#")
    if tuple(cells.columns) != COLUMNS:
        raise DataFormatError(f"{path}: expected columns {', '.join(COLUMNS)}")
    return Board(name, notes, cells)


def _cell_of(config: Any) -> dict[str, Any] | None:
    """The board cell a run's config belongs to; None when the board has no such attack or
    defence (or the run poisons by count, not by ratio)."""
    attack = ATTACKS.get(config.trigger.kind)
    defense = DEFENSES.get(config.defense.kind)
    if attack is None or defense is None or config.poison.rate is None:
        return None
    return {"attack": attack, "poison_ratio": round(config.poison.rate, 6), "defense": defense}


def grid_runs(grid_dir: Path) -> tuple[pd.DataFrame, int]:
    """One row per complete grid run that a board cell names: the cell, the metrics of the
    model the board measures (after the defence where one repaired it) and the test-set
    sizes its shares count; and how many complete runs no cell names."""
    manifest = read_manifest(grid_dir)
    rows, unmatched = [], 0
    for entry in manifest["runs"]:
        run = run_of(grid_dir, entry["id"])
        if entry["role"] != "grid" or run.status() != "complete":
            continue
        cell = _cell_of(run.read_config())
        if cell is None:
            unmatched += 1
            continue
        summary = run.read_summary()
        after = (summary.defense or {}).get("after") if cell["defense"] != "none" else None
        metrics = after if after else summary.final
        row = {**cell, "repeat": entry["repeat"]}
        row.update({metric: metrics.get(metric, math.nan) for metric in METRICS.values()})
        row.update(test_size=summary.data.get("test_size"))
        row.update(attack_test_size=summary.data.get("attack_test_size"))
        rows.append(row)
    columns = [*KEY, "repeat", *METRICS.values(), "test_size", "attack_test_size"]
    return pd.DataFrame(rows, columns=columns), unmatched


def _estimate(group: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Mean and interval of one metric of one cell's runs (see the module docstring)."""
    if len(group) >= 2:
        stats_ = interval(group[metric], metric)
        return {"mean": stats_["mean"], "low": stats_["ci_low"], "high": stats_["ci_high"]}
    column = trials_column(metric)
    pooled = pooled_binomial(group[metric], group[column]) if column else {}
    return {
        "mean": float(group[metric].iloc[0]),
        "low": pooled.get("low", math.nan),
        "high": pooled.get("high", math.nan),
    }


def parity(grid_dir: Path | str, board: Board) -> Parity:
    """The board's cells with the grid's estimates beside them."""
    runs, unmatched = grid_runs(Path(grid_dir))
    groups = {(a, round(float(r), 6), d): g for (a, r, d), g in runs.groupby(KEY, sort=False)}
    rows = []
    for cell in board.cells.itertuples(index=False):
        key = (cell.attack, round(float(cell.poison_ratio), 6), cell.defense)
        group = groups.get(key)
        row: dict[str, Any] = dict(zip(KEY, key, strict=True))
        row["n"] = 0 if group is None else len(group)
        row["interval"] = "repeats" if row["n"] >= 2 else "test predictions"
        for column, metric in METRICS.items():
            published = float(getattr(cell, column)) / 100
            row[f"{column}_board"] = published
            if group is None:
                row.update({f"{column}_{k}": math.nan for k in ("mean", "low", "high")})
                row[f"{column}_agrees"] = None
                continue
            estimate = _estimate(group, metric)
            row.update({f"{column}_{k}": v for k, v in estimate.items()})
            known = not math.isnan(estimate["low"])
            inside = estimate["low"] - 1e-9 <= published <= estimate["high"] + 1e-9
            row[f"{column}_agrees"] = inside if known else None
        rows.append(row)
    return Parity(board, pd.DataFrame(rows), unmatched)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def _shown(row: pd.Series, column: str) -> str:
    """``ours [low, high] vs board`` of one metric, marked where the board lies outside."""
    if row["n"] == 0:
        return f"not run / {_percent(row[f'{column}_board'])}"
    ours = _percent(row[f"{column}_mean"])
    span = f"[{_percent(row[f'{column}_low'])}, {_percent(row[f'{column}_high'])}]"
    mark = {True: "", False: " ✗", None: " ?"}[row[f"{column}_agrees"]]
    return f"{ours} {span} / {_percent(row[f'{column}_board'])}{mark}"


def _not_run(rows: pd.DataFrame) -> str:
    """The board cells without a run, by attack and ratio: ``badnets 0.1: fp, nc; ...``."""
    missing = rows[rows["n"] == 0]
    groups = missing.groupby(["attack", "poison_ratio"], sort=False)["defense"]
    return "; ".join(f"{a} {r:g}: {', '.join(d)}" for (a, r), d in groups)


def parity_markdown(result: Parity, every_cell: bool = False) -> str:
    """The comparison as a Markdown table with its legend and the board's source: the cells
    the grid ran (every cell of the board with ``every_cell``), the others named below."""
    rows = result.rows
    lines = [
        "| attack | ratio | defence | n | CA % ours [95 %] / board | ASR % | RA % |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, row in rows.iterrows():
        if row["n"] == 0 and not every_cell:
            continue
        cells = [_shown(row, column) for column in METRICS]
        lines.append(
            f"| {row['attack']} | {row['poison_ratio']:g} | {row['defense']} | {row['n']} | "
            + " | ".join(cells)
            + " |"
        )
    run = rows[rows["n"] > 0]
    marks = [c for c in METRICS if f"{c}_agrees" in rows]
    disagree = sum(int((run[f"{c}_agrees"] == False).sum()) for c in marks)  # noqa: E712
    compared = sum(int(run[f"{c}_agrees"].notna().sum()) for c in marks)
    lines += [
        "",
        f"{len(run)} of {len(rows)} board cells run; {disagree} of {compared} values lie "
        "outside triggerlab's interval (✗); ? where no interval could be made.",
        "Intervals: over repeats (t on the logit scale) where a cell has two or more; with "
        "one, the Wilson interval of its test predictions (test-set error alone: a retrained "
        "model varies more). The board's cells are one run each, their spread unknown.",
    ]
    if not every_cell and (rows["n"] == 0).any():
        lines.append(f"Not run: {_not_run(rows)}.")
    if result.unmatched_runs:
        lines.append(f"{result.unmatched_runs} complete run(s) match no board cell.")
    lines += ["", *(f"Board: {note}" for note in result.board.notes)]
    return "\n".join(lines) + "\n"
