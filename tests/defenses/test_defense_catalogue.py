"""The defences current benchmarks expect (NAD, ANP, CLP, I-BAU, ABL, SCALE-UP), each on a
planted backdoor and on a clean control, the default digits model trained once per
attack for all of them (train once, defend many)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support import REPO
from support.formats import write_grey_digits
from torch import nn

from triggerlab.analysis.defense_tables import defense_table
from triggerlab.analysis.plots.grid_figures import plot_grid
from triggerlab.analysis.report import build_report
from triggerlab.analysis.results import collect, write_results
from triggerlab.config import load_config
from triggerlab.defenses.abl import lga_loss
from triggerlab.defenses.clp import channel_lipschitz, lipschitz_outliers
from triggerlab.defenses.ibau import fixed_point_hypergradient
from triggerlab.defenses.nad import attention_map, attention_stages
from triggerlab.defenses.neurons import neuron_layers
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec
from triggerlab.run.experiment import run_experiment
from triggerlab.run.shared_training import trained_files

# Settings that suit the 16x16 digits and the small CNN (the papers' are for CIFAR ResNets).
DEFENSES = [
    {"kind": "nad", "clean_fraction": 0.1, "epochs": 10, "lr": 0.003},
    {"kind": "anp", "clean_fraction": 0.1, "eps": 0.2},
    {"kind": "ibau", "clean_fraction": 0.1, "lr": 0.001, "rounds": 10, "portion": 0.1},
    {"kind": "clp", "u": 2.0},
    {"kind": "abl", "lr": 0.01, "gamma": 0.2},
]


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory) -> Path:
    """Every defence on the backdoored default model (rate 0.1) and on a clean one (rate 0)."""
    folder = tmp_path_factory.mktemp("catalogue")
    spec = folder / "spec.yaml"
    grid = {"defense": DEFENSES, "poison.rate": [0.1, 0.0]}
    base = str(REPO / "configs" / "default.yaml")
    spec.write_text(yaml.safe_dump({"name": "catalogue", "base": base, "grid": grid}))
    assert run_grid(load_grid_spec(spec), folder / "g").ok
    # per rate: one model for the three that hold back 10 %, one for the two that hold none
    assert len(trained_files(folder / "g")) == 4
    return folder / "g"


@pytest.fixture(scope="module")
def outcomes(grid_dir: Path) -> pd.DataFrame:
    table, _ = collect(grid_dir)
    return table.set_index(["defense.kind", "poison.rate"])


def _row(outcomes: pd.DataFrame, kind: str, rate: float) -> pd.Series:
    return outcomes.loc[(kind, rate)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "asr_share", "ca_drop", "clean_ca_drop"),
    [
        # measured on this seed: ASR 0.99 -> 0.31, CA drop 0.000, clean control's 0.045
        ("nad", 0.5, 0.03, 0.08),
        # ASR 0.99 -> 0.68, CA drop 0.000, clean control's 0.014
        ("anp", 0.85, 0.03, 0.04),
        # ASR 0.99 -> 0.37 at a cost: CA drop 0.076, clean control's 0.086
        ("ibau", 0.6, 0.12, 0.14),
        # data-free, and weak on this 48-channel CNN: ASR 0.997 -> 0.91, CA drop 0.025
        ("clp", 0.97, 0.05, 0.05),
    ],
)
def test_repairs_lower_the_planted_backdoor(outcomes, kind, asr_share, ca_drop, clean_ca_drop):
    attacked, clean = _row(outcomes, kind, 0.1), _row(outcomes, kind, 0.0)
    assert attacked["asr"] > 0.95
    assert attacked["asr_after"] < asr_share * attacked["asr"]
    assert attacked["clean_acc"] - attacked["clean_acc_after"] < ca_drop
    # the clean control: no backdoor appears, and clean accuracy holds
    assert clean["asr_after"] < 0.05
    assert clean["clean_acc"] - clean["clean_acc_after"] < clean_ca_drop


@pytest.mark.slow
def test_abl_isolates_poisoned_samples_and_records_no_clean_data(outcomes):
    attacked, clean = _row(outcomes, "abl", 0.1), _row(outcomes, "abl", 0.0)
    # 14 samples isolated of 1,438, of which 10 % are poisoned: they rank far above chance
    assert attacked["detection_auroc"] > 0.7
    assert attacked["defense_clean_samples"] == 0
    # the clean control trains afresh as well, and loses little: a retraining's accuracy moves by
    # a few of the 360 test images from one CPU to another, so the bar is 18 images, not 7
    assert clean["clean_acc_after"] > clean["clean_acc"] - 0.05 and clean["asr_after"] < 0.05


@pytest.mark.slow
def test_every_detector_reports_tpr_at_low_fpr(outcomes):
    attacked = _row(outcomes, "abl", 0.1)
    assert 0 <= attacked["detection_tpr_at_1pct_fpr"] <= attacked["detection_tpr_at_5pct_fpr"]


@pytest.mark.slow
def test_scale_up_flags_triggered_inputs_and_not_a_clean_models(tmp_path):
    """Grey-background digits with a black patch: amplification washes out a clean digit
    but keeps the black patch (0 stays 0), so triggered predictions stay consistent."""
    write_grey_digits(tmp_path / "grey")
    settings = [
        "data.name=mnist",
        f"data.root={tmp_path / 'grey'}",
        "data.resize=16",
        "trigger.color=black",
        "defense.kind=scale_up",
        "defense.clean_fraction=0.1",
        f"output.directory={tmp_path}",
    ]
    attacked = run_experiment(load_config(None, [*settings, "output.name=attacked"]))
    detection = attacked.summary["defense"]["detection"]
    assert attacked.summary["final"]["asr"] > 0.9
    assert detection["auroc"] > 0.9 and detection["tpr_at_5pct_fpr"] > 0.8
    assert detection["fpr"] <= 0.1  # the threshold flags about 5 % of the defender's clean data
    roc = attacked.summary["defense"]["roc"]
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1 and len(roc["fpr"]) == len(roc["tpr"])
    clean = run_experiment(load_config(None, [*settings, "poison.rate=0", "output.name=clean"]))
    assert clean.summary["defense"]["detection"]["tpr"] < 0.1


def test_lga_descends_above_gamma_and_ascends_below():
    losses = torch.tensor([0.2, 0.5, 1.5], requires_grad=True)
    values = lga_loss(losses, 0.5)
    values.sum().backward()
    assert values.tolist() == pytest.approx([-0.2, 0.0, 1.5])
    assert losses.grad.tolist() == [-1.0, 0.0, 1.0]


def test_clp_finds_the_planted_high_lipschitz_channel():
    conv, norm = nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6)
    with torch.no_grad():
        conv.weight.copy_(torch.full_like(conv.weight, 0.1))
        conv.weight[4] *= 20  # one channel 20 x more sensitive to its input
        norm.running_var.fill_(1.0)
    layer = neuron_layers(nn.Sequential(conv, norm, nn.ReLU()), "clp")[0]
    uclc = channel_lipschitz(layer)
    # one kernel of 2 x 9 equal values v: its largest singular value is v * sqrt(2 * 9)
    expected = 0.1 * 18**0.5 / (1 + norm.eps) ** 0.5
    assert uclc[0].item() == pytest.approx(expected)
    assert lipschitz_outliers(uclc, 2.0) == [4]


def test_nad_attention_is_the_normalised_channel_energy():
    features = torch.zeros(1, 2, 2, 2)
    features[0, 0, 0, 0], features[0, 1, 0, 0], features[0, 1, 1, 1] = 3.0, 4.0, 5.0
    attention = attention_map(features, 2.0, eps=0.0)
    # energies 25 at (0, 0) and 25 at (1, 1): each 1 / sqrt(2) after normalising
    assert attention[0, 0, 0, 0].item() == pytest.approx(2**-0.5)
    assert attention[0, 0, 1, 1].item() == pytest.approx(2**-0.5)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten())
    assert attention_stages(model, 3) == [model[0], model[2]]


def test_ibau_hypergradient_matches_the_closed_form():
    """Inner loss (w - a)^2 / 2: the map w - 0.1 (w - a) has the fixed point w* = a, and the
    outer loss w^2 / 2 has d outer / d a = w* = a once the fixed-point iteration converges."""
    a = nn.Parameter(torch.tensor([2.0]))
    grads = fixed_point_hypergradient(
        a.detach().clone(),
        [a],
        200,
        lambda w: ((w - a) ** 2).sum() / 2,
        lambda w: (w**2).sum() / 2,
    )
    assert grads[0].item() == pytest.approx(2.0, rel=1e-3)


@pytest.mark.slow
def test_results_and_report_show_the_defence_by_attack_table_and_roc_curves(grid_dir):
    paths = write_results(grid_dir)
    lines = paths["defenses.md"].read_text().splitlines()
    assert lines[0] == "| defence \\ poison.rate | 0.1 | 0.0 |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {d['kind']}" for d in DEFENSES]
    abl = next(line for line in lines if line.startswith("| abl "))
    assert "AUROC" in abl and "TPR@5%FPR" in abl and abl.count("(n=1)") == 2
    figures = plot_grid(grid_dir)
    assert grid_dir / "figures" / "detection_roc.png" in figures
    page = build_report(grid_dir).read_text()
    assert "Defences against each attack" in page and "TPR@5%FPR" in page


@pytest.mark.slow
def test_the_defence_table_gives_each_cell_its_mean_and_interval():
    table = pd.DataFrame(
        {
            "status": "complete",
            "role": "grid",
            "run_id": list("abcdef"),
            "repeat": [0, 1, 0, 1, 0, 1],
            "defense.kind": ["none", "none", "finetune", "finetune", "strip", "strip"],
            "defense": ["{kind: none}"] * 2 + ["{kind: finetune}"] * 2 + ["{kind: strip}"] * 2,
            "trigger.kind": "patch",
            "asr": [1.0, 0.9, 1.0, 1.0, 1.0, 1.0],
            "clean_acc": [0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
            "asr_after": [None, None, 0.2, 0.4, None, None],
            "clean_acc_after": [None, None, 0.8, 0.8, None, None],
            "detection_auroc": [None, None, None, None, 0.9, 0.7],
        }
    )
    frame = defense_table(table, ["defense"])
    assert list(frame.index) == ["none", "finetune", "strip"]
    assert frame.columns.name == "attack" and list(frame.columns) == ["all runs"]
    none, finetune, strip = frame["all runs"]
    assert none.startswith("ASR 0.950 [") and none.endswith("(n=2)")
    assert finetune.startswith("ASR 0.300 [") and "CA 0.800 [0.800, 0.800]" in finetune
    assert strip.startswith("AUROC 0.800 [") and "ASR" not in strip
