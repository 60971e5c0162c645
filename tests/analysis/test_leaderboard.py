"""`triggerlab leaderboard`: the BackdoorBench table shipped as data, the parity grid's
cells, the comparison's intervals and marks on hand-computed cases, and the command end to
end on a CIFAR-10 fixture."""

import math

import pandas as pd
import pytest
import yaml
from support import REPO
from support.formats import write_cifar10
from typer.testing import CliRunner

from triggerlab.analysis import leaderboard
from triggerlab.analysis.binomial import wilson
from triggerlab.analysis.leaderboard import load_board, parity, parity_markdown
from triggerlab.cli import app
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.spec import load_grid_spec

BOARD = "backdoorbench_cifar10_preactresnet18_10pct"
runner = CliRunner()


def test_the_shipped_board_is_the_published_table_with_its_source():
    board = load_board(BOARD)
    shared = REPO.parent / "shared" / "leaderboards" / f"{BOARD}.csv"
    if shared.exists():  # the copy is the published file, byte for byte
        assert (leaderboard.BOARD_FOLDER / f"{BOARD}.csv").read_bytes() == shared.read_bytes()
    assert len(board.cells) == 45
    assert any("commit b98eab4" in note for note in board.notes)
    row = board.cells.query("attack == 'badnets' and defense == 'none'").iloc[0]
    assert (row.ca, row.asr, row.ra) == (91.32, 95.03, 4.67)
    assert set(board.cells.query("attack == 'sig'").poison_ratio) == {0.05}


def test_the_parity_grid_runs_every_cell_of_the_board_once():
    runs = plan_grid(load_grid_spec(REPO / "configs" / "backdoorbench_parity.yaml"))
    cells = [tuple(leaderboard._cell_of(run.config).values()) for run in runs]
    board = load_board(BOARD).cells
    assert sorted(cells) == sorted(
        zip(board.attack, board.poison_ratio, board.defense, strict=True)
    )
    sig = next(run.config for run in runs if run.config.trigger.kind == "signal")
    assert sig.poison.label_mode == "clean_label" and sig.trigger.delta == pytest.approx(
        40 / 255, abs=1e-3
    )
    wanet = next(run.config for run in runs if run.config.trigger.kind == "warp")
    assert wanet.train.lr_schedule == "constant" and wanet.train.optimizer == "sgd"


def fake_runs(rows):
    columns = ["attack", "poison_ratio", "defense", "repeat", "clean_acc", "asr", "robust_acc"]
    frame = pd.DataFrame([dict(zip(columns, row, strict=True)) for row in rows])
    frame["test_size"], frame["attack_test_size"] = 10_000, 9_000
    return frame


def test_intervals_and_marks_on_hand_computed_cells(monkeypatch):
    rows = [
        # two repeats: the t interval over repeats on the logit scale
        ("badnets", 0.1, "none", 0, 0.90, 0.95, 0.05),
        ("badnets", 0.1, "none", 1, 0.92, 0.96, 0.04),
        # one repeat: the Wilson interval of 9,000 (CA: 10,000) test predictions
        ("badnets", 0.1, "ft", 0, 0.8996, 0.5, 0.894),
    ]
    monkeypatch.setattr(leaderboard, "grid_runs", lambda grid_dir: (fake_runs(rows), 1))
    result = parity("unused", load_board(BOARD))
    by_cell = result.rows.set_index(["attack", "defense"])
    none = by_cell.loc[("badnets", "none")]
    t = 12.706204736174707  # t(0.975, 1)
    logits = [math.log(p / (1 - p)) for p in (0.90, 0.92)]
    centre, spread = sum(logits) / 2, abs(logits[0] - logits[1]) / math.sqrt(2)
    expit = [1 / (1 + math.exp(-(centre + s * t * spread / math.sqrt(2)))) for s in (-1, 1)]
    assert (none["n"], none["interval"]) == (2, "repeats")
    assert none["ca_low"] == pytest.approx(expit[0]) and none["ca_high"] == pytest.approx(expit[1])
    assert none["ca_agrees"]  # 91.32 % lies inside
    ft = by_cell.loc[("badnets", "ft")]
    assert (ft["n"], ft["interval"]) == (1, "test predictions")
    assert (ft["asr_low"], ft["asr_high"]) == pytest.approx(wilson(4_500, 9_000))
    assert ft["ca_agrees"] and ft["ra_agrees"]  # the board's own values: inside
    assert not ft["asr_agrees"]  # 1.48 % against 50 % of 9,000 images
    assert by_cell.loc[("sig", "abl")]["n"] == 0
    text = parity_markdown(result)
    assert "| badnets | 0.1 | ft | 1 | 90.0 [89.4, 90.5] / 90.0 |" in text
    assert "50.0 [49.0, 51.0] / 1.5 ✗" in text
    assert "| sig | 0.05 | abl |" not in text
    assert "Not run: badnets 0.1: fp, nc, nad, anp, clp, ibau, abl; blended 0.1: none, ft" in text
    assert "| sig | 0.05 | abl | 0 | not run / 46.1 |" in parity_markdown(result, every_cell=True)
    assert "2 of 45 board cells run; 1 of 6 values lie outside" in text
    assert "1 complete run(s) match no board cell." in text
    assert "Board: source: github.com/backdoorbench" in text


def test_an_unknown_board_is_refused_naming_the_flag(tmp_path):
    result = runner.invoke(app, ["leaderboard", str(tmp_path), "--board", "nope"])
    assert result.exit_code == 2
    assert "--board" in result.output and BOARD in result.output


@pytest.mark.slow
def test_the_command_end_to_end_on_a_cifar10_fixture(tmp_path):
    write_cifar10(tmp_path / "cifar", per_batch=40)
    base = yaml.safe_load((REPO / "configs" / "backdoorbench_badnets_cifar10.yaml").read_text())
    base["data"].update(root=str(tmp_path / "cifar"), download=False)
    base["model"] = {"name": "small_cnn", "options": {"width": 4, "hidden": 16}}
    base["train"].update(epochs=1, batch_size=32, checkpoint_every=0, device="cpu")
    base["output"] = {"save_model": False}
    spec = {
        "name": "parity_fixture",
        "base": base,
        "zip": [
            {
                "trigger": [
                    {"kind": "patch", "size": 3, "position": "bottom_right"},
                    {"kind": "signal", "delta": 0.157},
                ],
                "poison.rate": [0.1, 0.05],
                "poison.label_mode": ["all_to_one", "clean_label"],
                "poison.sources": ["all", "non_target"],
            }
        ],
        "grid": {
            "defense": [
                {"kind": "none"},
                {"kind": "finetune", "clean_fraction": 0.05, "epochs": 1},
                {"kind": "strip"},  # no cell of the board: counted, not shown
            ]
        },
        "repeats": 2,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    grid_dir = tmp_path / "grid"
    done = runner.invoke(app, ["grid", str(tmp_path / "spec.yaml"), "--out", str(grid_dir)])
    assert done.exit_code == 0, done.output
    result = runner.invoke(app, ["leaderboard", str(grid_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    written = (grid_dir / f"leaderboard_{BOARD}.md").read_text()
    assert written in result.output
    assert "| badnets | 0.1 | none | 2 |" in written and "| sig | 0.05 | ft | 2 |" in written
    assert "4 of 45 board cells run" in written
    assert "4 complete run(s) match no board cell." in written
