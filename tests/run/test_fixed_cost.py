"""A run's fixed cost: it imports what it needs when it needs it, and records its phases."""

import json
import subprocess
import sys

import numpy as np
import pytest

from triggerlab.data.digits import _digits_table

HEAVY = ("matplotlib", "pandas", "scipy", "skimage", "sklearn")


def heavy_imports(code: str) -> list[str]:
    """The heavy libraries a fresh process has imported after running ``code``."""
    listed = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\nimport sys, json\n{listed}"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    return [m for m in HEAVY if m in modules]


def test_importing_the_run_imports_no_plotting_tables_or_scientific_libraries():
    assert heavy_imports("import triggerlab.run.experiment") == []


@pytest.mark.slow
def test_a_run_imports_none_of_them_and_records_its_phases(tmp_path):
    code = (
        "from triggerlab.config import load_config\n"
        "from triggerlab.run.experiment import run_experiment\n"
        f"cfg = load_config(None, ['train.epochs=1', 'output.directory={tmp_path}'])\n"
        "result = run_experiment(cfg)\n"
    )
    assert heavy_imports(code) == []
    (summary,) = tmp_path.glob("*/summary.json")
    timings = json.loads(summary.read_text())["timings"]
    phases = timings["phases"]
    assert list(phases) == [
        "prepare_s",
        "open_s",
        "poison_phase_s",
        "inputs_s",
        "train_phase_s",
        "final_eval_s",
        "draw_s",
        "save_model_s",
        "defend_s",
        "summarise_s",
    ]
    assert all(v >= 0 for v in phases.values())
    assert sum(phases.values()) <= timings["total_s"]
    assert 0 < timings["epochs_s"] <= phases["train_phase_s"]
    assert timings["startup_s"] > 0  # the first run of its process
    assert timings["fixed_s"] == pytest.approx(
        timings["total_s"] - timings["epochs_s"] + timings["startup_s"]
    )


def test_the_digits_table_is_scikit_learns():
    from sklearn.datasets import load_digits

    levels, targets = _digits_table()
    bunch = load_digits()
    assert np.array_equal(levels, bunch.images) and levels.dtype == np.float64
    assert np.array_equal(targets, bunch.target) and targets.dtype == np.int64


def test_samples_figure_frames_each_image_so_a_white_border_trigger_shows():
    import io

    import torch
    from PIL import Image

    from triggerlab.figures import SEPARATOR, samples_png

    clean = torch.zeros((3, 1, 16, 16), dtype=torch.uint8)
    triggered = clean.clone()
    triggered[:, :, -3:, -3:] = 255  # a white patch at the bottom right corner
    png = samples_png(clean, triggered, ["1"] * 3, ["1"] * 3, ["0"] * 3, "digits, target 0")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    white = int((np.asarray(image) == 255).all(axis=2).sum())
    patch = 3 * 3 * 3 * 6 * 6  # three patches of 3x3 pixels, each enlarged 6 times a side
    framed = [
        (x, y)
        for y in range(1, image.height - 1)
        for x in range(1, image.width - 1)
        if image.getpixel((x, y)) == (255, 255, 255)
        and image.getpixel((x + 1, y)) == SEPARATOR
        and image.getpixel((x, y + 1)) == SEPARATOR
    ]
    assert len(framed) == 3  # each patch's bottom-right pixel touches the frame, not white
    assert white > patch
