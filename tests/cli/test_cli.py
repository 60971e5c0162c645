"""The command line: a run, listings, and each bad input -> exit 2, one message, no files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO
from support.formats import write_mnist
from typer.testing import CliRunner

from triggerlab.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.slow
def test_run_prints_the_summary_table_and_writes_a_run(tmp_path):
    result = invoke("run", "--out", str(tmp_path), "--set", "train.epochs=1", "-q")
    assert result.exit_code == 0, result.output
    assert "clean accuracy (CA)" in result.output
    assert "attack success rate" in result.output
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "summary.json").is_file()
    assert str(run_dir) in result.output.replace("\n", "")


@pytest.mark.slow
def test_run_from_a_config_file_with_progress_lines(tmp_path):
    config = REPO / "configs" / "default.yaml"
    result = invoke(
        "run", str(config), "--set", "train.epochs=2", "--set", f"output.directory={tmp_path}"
    )
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.output  # not a terminal: one line per epoch


def test_datasets_and_models_listings():
    datasets = invoke("datasets")
    assert datasets.exit_code == 0
    for name in ("digits", "mnist", "cifar10", "tinyimagenet", "gtsrb", "imagefolder"):
        assert name in datasets.output
    assert "t10k-images-idx3-ubyte" in datasets.output
    models = invoke("models")
    assert models.exit_code == 0 and "resnet18_cifar" in models.output
    # not a terminal: plain lines, a heading and indented details, no table borders
    assert "\ndigits: " in "\n" + datasets.output and "  files: " in datasets.output
    assert "│" not in datasets.output + models.output and "\nresnet18\n" in models.output


LISTING_PROBE = """
import sys
from typer.testing import CliRunner
from triggerlab.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
assert result.exit_code == 0, result.output
heavy = ("torch", "torchvision", "sklearn", "matplotlib", "pandas", "timm", "scipy")
print(" ".join(m for m in heavy if m in sys.modules))
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", [["datasets"], ["models"], ["defenses"], ["triggers", "list"]])
def test_listings_import_no_heavy_library(command):
    """What keeps a listing fast (benchmarks/startup.py times them): not even torch, whose
    import alone takes about 1.9 s; the torch-free catalogues answer."""
    done = subprocess.run(
        [sys.executable, "-c", LISTING_PROBE, *command], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


@pytest.mark.slow
def test_a_bad_config_is_refused_before_the_engine_loads():
    """Exit 2 without importing the experiment engine (plots, scipy, pandas): 2.2 s, not 3.4."""
    probe = (
        "import sys; from typer.testing import CliRunner; from triggerlab.cli import app\n"
        "result = CliRunner().invoke(app, ['run', '--set', 'poison.rate=7'])\n"
        "assert result.exit_code == 2 and 'poison.rate' in result.output, result.output\n"
        "heavy = ('triggerlab.run.experiment', 'matplotlib')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_listings_come_from_the_catalogues():
    from triggerlab.cli.listings import build_listings

    live = build_listings()
    assert [d["name"] for d in live["datasets"]][:2] == ["digits", "mnist"]
    assert ["margin", "0", "pixels between a corner trigger and the border"] in next(
        t["parameters"] for t in live["triggers"] if t["kind"] == "patch"
    )
    assert {
        "name": "small_cnn",
        "options": "width=16, hidden=512, output_softmax=False",
    }.items() <= next(m for m in live["models"] if m["name"] == "small_cnn").items()


def mnist_root(tmp_path: Path, damage: str) -> Path:
    root = tmp_path / "mnist"
    write_mnist(root)
    images = root / "train-images-idx3-ubyte"
    if damage == "missing":
        images.unlink()
    elif damage == "truncated":
        images.write_bytes(images.read_bytes()[:1000])
    elif damage == "magic":
        images.write_bytes(b"\x00\x00\x08\x04" + images.read_bytes()[4:])
    return root


BAD_SETTINGS = {
    "unknown key": (["trigger.colour=red"], "trigger.colour: unknown key"),
    "rate above 1": (["poison.rate=1.2"], "poison.rate: Input should be less than or equal to 1"),
    "negative rate": (
        ["poison.rate=-0.1"],
        "poison.rate: Input should be greater than or equal to 0",
    ),
    "trigger larger than image": (
        ["trigger.size=17"],
        "trigger.size: a 17-pixel trigger does not fit a 16x16",
    ),
    "unknown dataset": (["data.name=imagenet"], "data.name: unknown dataset 'imagenet'"),
    "unknown model": (["model.name=transformer"], "model.name: unknown model 'transformer'"),
    "fp16 on the CPU": (
        ["train.precision=fp16", "train.device=cpu"],
        "train.precision: fp16 needs a CUDA device",
    ),
    "negative checkpoint interval": (
        ["train.checkpoint_every=-1"],
        "train.checkpoint_every: Input should be greater than or equal to 0 (got -1)",
    ),
    "unknown augmentation": (
        ["train.augment=[rotate]"],
        "train.augment[0]: Input should be 'random_crop' or 'hflip' (got 'rotate')",
    ),
    "padding that crops the image away": (
        ["train.augment=[random_crop]", "train.crop_padding=16"],
        "train.crop_padding: 16 pixels of padding would let a crop miss the 16x16 image",
    ),
    "target outside classes": (
        ["poison.target=10"],
        "poison.target: class 10 does not exist; expected 0-9",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_config_exits_2_with_one_message_and_no_run_directory(tmp_path, case):
    settings, message = BAD_SETTINGS[case]
    args = ["run", "--out", str(tmp_path / "runs")]
    for item in settings:
        args += ["--set", item]
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("error:") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "cannot find train-images-idx3-ubyte"),
        ("truncated", "truncated or corrupted"),
        ("magic", "wrong magic number 2052"),
    ],
)
def test_bad_data_file_exits_2_naming_the_file(tmp_path, damage, message):
    root = mnist_root(tmp_path, damage)
    result = invoke(
        "run",
        "--out",
        str(tmp_path / "runs"),
        "--set",
        "data.name=mnist",
        "--set",
        f"data.root={root}",
    )
    assert result.exit_code == 2
    assert message in result.stderr
    assert "train-images-idx3-ubyte" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_missing_config_file(tmp_path):
    result = invoke("run", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "not found" in result.stderr


@pytest.mark.slow
def test_console_script_entry_point(tmp_path):
    """The installed `triggerlab` command, as a user runs it."""
    exe = Path(sys.executable).with_name("triggerlab")
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [str(exe), "run", "--set", "poison.rate=7", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "poison.rate" in done.stderr
    assert not (tmp_path / "r").exists()
    helped = subprocess.run(
        [str(exe), "run", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert helped.returncode == 0 and "configs/badnets_mnist.yaml" in helped.stdout
