"""The corpus of bad input: every case exits 2 with one message naming the key or file, shows
no traceback and leaves nothing on disk; a run that cannot finish is recorded as failed.

Cases are grouped by where the bad input enters: an override, a config file, the output
location, a grid spec, a grid folder, a dataset file. Each names the text its message must
contain.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from support.formats import (
    write_cifar10,
    write_gtsrb,
    write_image,
    write_imagefolder,
    write_mnist,
    write_tinyimagenet,
)
from support.gridspecs import BASE, write_spec
from typer.testing import CliRunner

from triggerlab.cli import app

pytestmark = pytest.mark.slow  # every test here trains or runs a pipeline

runner = CliRunner()
QUICK = ["train.epochs=1", "model.options={width: 4, hidden: 16}"]


def rejected(result, *needles: str) -> str:
    """Exit status 2, one ``error:`` message containing every needle, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    message = result.stderr
    assert message.startswith("error: "), message
    assert "Traceback" not in result.output and "Traceback" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


def run_cli(tmp_path: Path, *settings: str, config: Path | None = None):
    args = ["run", "--out", str(tmp_path / "out")]
    if config is not None:
        args.insert(1, str(config))
    for item in settings:
        args += ["--set", item]
    return runner.invoke(app, args)


# ---- overrides ---------------------------------------------------------------------------------

OVERRIDES = {
    "name is ..": (["output.name=.."], "output.name: '..' is not a plain folder name"),
    "name is .": (["output.name=."], "output.name"),
    "name is empty": (["output.name=''"], "output.name: '' is not a plain folder name"),
    "name with a separator": (["output.name=a/b"], "output.name: 'a/b'"),
    "absolute name": (["output.name=/etc"], "output.name: '/etc'"),
    "NUL in a name": (['output.name="a\\0b"'], "NUL"),
    "infinite lr": (["train.lr=.inf"], "train.lr: Input should be a finite number"),
    "NaN lr": (["train.lr=.nan"], "train.lr"),
    "absurd epochs": (["train.epochs=1000000000"], "train.epochs: Input should be less than"),
    "absurd seed": (["train.seed=99999999999"], "train.seed: Input should be less than"),
    "absurd resize": (["data.resize=100000"], "data.resize: invalid size"),
    "zero threads": (["train.threads=0"], "train.threads"),
    "absurd target": (["poison.target=1000000"], "poison.target"),
    "markup in a value": (["data.name=[/x]"], "data.name: Input should be a valid string"),
    "markup shown verbatim": (["data.name=[bold]evil"], "[bold]evil"),
    "tolerances on classes": (["evaluation.tolerances=[1]"], "evaluation.tolerances"),
    "bin settings without bins": (["evaluation.bin_output=yaw"], "bin_output"),
    "a parameter of another defence": (
        ["defense.prune_ratio=0.3"],
        "defense.prune_ratio: unknown key for defense kind 'none'; it belongs to fine_pruning",
    ),
    "more poisoned samples than eligible": (
        ["poison.rate=null", "poison.count=1400"],
        "poison.count: 1400 poisoned samples requested but only",
    ),
    "clean-label beyond the target class": (
        ["poison.label_mode=clean_label", "poison.rate=0.5"],
        "poisons only images of the target class 0, and there are",
    ),
    "SIG's paper default beyond the target class": (
        ["trigger.kind=signal", "poison.rate=0.1"],
        "poison.rate: 0.1 of the training set of 1438 samples is 144 poisoned samples",
    ),
    "lines that merge": (
        ["trigger.kind=lines", "trigger.count=40", "data.resize=64"],
        "trigger.count: 40 lines 1 pixel(s) thick merge into 25 bands",
    ),
    "an override without =": (["poison.rate"], "--set 'poison.rate': expected KEY=VALUE"),
    "an override that is not YAML": (["poison.rate=[1,"], "--set 'poison.rate=[1,'"),
}


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_bad_overrides(tmp_path, case):
    settings, needle = OVERRIDES[case]
    rejected(run_cli(tmp_path, *settings), needle)
    assert nothing_in(tmp_path / "out")


# ---- config files ------------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "data: {options: {x: " + "[" * depth + "1" + "]" * depth + "}}\n"


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)
CONFIG_FILES = {
    "not UTF-8": (b"data:\n  name: digits\xff\xfe\n", "is not UTF-8 text (byte 0xff"),
    "NUL byte": (b"data:\n  name: dig\x00its\n", "a NUL character on line 2"),
    "NUL escape in a string": (b'output: {name: "a\\0b"}\n', "NUL"),
    "deep nesting": (nested(5000).encode(), "nests deeper than"),
    "alias bomb": (BILLION_LAUGHS.encode(), "expands to more than"),
    "alias to itself": (b"data: &x {options: *x}\n", "contains itself"),
    "oversized": (b"# " + b"x" * 1_100_000 + b"\n", "a config is at most"),
    "a list, not a mapping": (b"- data\n- trigger\n", "expected a mapping of sections"),
    "invalid YAML": (b"data: {name: [\n", "is not valid YAML"),
    "unknown section": (b"trainer: {epochs: 1}\n", "trainer: unknown key"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_bad_config_files(tmp_path, case):
    content, needle = CONFIG_FILES[case]
    config = tmp_path / "bad.yaml"
    config.write_bytes(content)
    message = rejected(run_cli(tmp_path, config=config), needle)
    assert len(message) < 2000  # a message quotes bounded pieces of the input, never all of it
    assert nothing_in(tmp_path / "out")


def test_a_config_that_is_a_folder(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    rejected(run_cli(tmp_path, config=tmp_path / "folder.yaml"), "is a folder, not a file")


# ---- the output location -----------------------------------------------------------------------


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    rejected(run_cli(tmp_path, *QUICK), "output")
    assert (tmp_path / "out").read_text() == "not a folder"


def test_output_folder_below_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["run", "--out", str(tmp_path / "file" / "runs"), "-s", QUICK[0]])
    rejected(result, "output")


def test_run_files_get_the_users_umask(tmp_path):
    result = run_cli(tmp_path, *QUICK, "output.name=r")
    assert result.exit_code == 0, result.output
    import os

    umask = os.umask(0)
    os.umask(umask)
    mode = (tmp_path / "out" / "r" / "summary.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask, oct(mode)  # as any file the user creates, not 0600


# ---- grid specs and grid folders ---------------------------------------------------------------

SPECS = {
    "unknown spec key": (
        {"grids": {}},
        "grids: unknown key; expected one of name, base, grid, zip, repeats, seed",
    ),
    "name that escapes": ({"spec_name": ".."}, "name: '..' is not a plain folder name"),
    "absurd repeats": ({"repeats": 100000}, "repeats: Input should be less than"),
    "infinite seed": ({"seed": float("inf")}, "seed"),
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_bad_grid_specs(tmp_path, case):
    fields, needle = SPECS[case]
    if "spec_name" in fields:  # write_spec's own ``name`` is the file name
        fields = {"name": fields.pop("spec_name")}
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({"base": BASE, **fields}))
    else:
        spec = write_spec(tmp_path, **fields)
    result = runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "g")])
    rejected(result, needle)
    assert not (tmp_path / "g").exists()


def test_grid_spec_alias_bomb(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BILLION_LAUGHS + "base: {}\n")
    rejected(runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "g")]), "expands")
    assert not (tmp_path / "g").exists()


def test_ray_executor_without_ray_leaves_nothing(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    spec = write_spec(tmp_path)
    result = runner.invoke(
        app, ["grid", str(spec), "--out", str(tmp_path / "g"), "--executor", "ray"]
    )
    rejected(result, "--executor: 'ray' needs Ray: pip install 'triggerlab[ray]'")
    assert not (tmp_path / "g").exists()


def test_preflight_rejection_leaves_nothing(tmp_path):
    spec = write_spec(tmp_path, grid={"trigger.size": [3, 40]})
    rejected(runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "g")]), "trigger.size")
    assert not (tmp_path / "g").exists()


def test_a_grid_folder_of_another_spec_is_refused_then_extended_or_replaced(tmp_path):
    first = write_spec(tmp_path, "a.yaml", grid={"poison.rate": [0.05, 0.1]})
    out = str(tmp_path / "g")
    assert runner.invoke(app, ["grid", str(first), "--out", out, "-q"]).exit_code == 0
    manifest = (tmp_path / "g" / "manifest.json").read_text()
    second = write_spec(tmp_path, "b.yaml", grid={"poison.rate": [0.1, 0.2]})
    message = rejected(
        runner.invoke(app, ["grid", str(second), "--out", out]), "holds the runs of another"
    )
    assert "grid.poison.rate: [0.05, 0.1] -> [0.1, 0.2]" in message
    assert (tmp_path / "g" / "manifest.json").read_text() == manifest  # untouched
    extended = runner.invoke(app, ["grid", str(second), "--out", out, "-q", "--extend"])
    assert extended.exit_code == 0, extended.output
    assert "3 runs" in extended.output or "2 runs, 1 already finished" in extended.output
    runs = json.loads((tmp_path / "g" / "manifest.json").read_text())["runs"]
    assert len(runs) == 3  # 0.1 reused, 0.2 added, 0.05 kept
    replaced = runner.invoke(app, ["grid", str(first), "--out", out, "-q", "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert len(list((tmp_path / "g" / "runs").iterdir())) == 2


def make_grid(tmp_path: Path) -> Path:
    spec = write_spec(tmp_path, grid={"poison.rate": [0.1]})
    assert (
        runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "g"), "-q"]).exit_code == 0
    )
    return tmp_path / "g"


def test_results_on_a_manifest_of_the_wrong_shape(tmp_path):
    grid = make_grid(tmp_path)
    (grid / "manifest.json").write_text(json.dumps({"runs": "not a list"}))
    rejected(runner.invoke(app, ["results", str(grid)]), "manifest.json: not a triggerlab grid")


def test_results_on_a_summary_without_final(tmp_path):
    grid = make_grid(tmp_path)
    (summary,) = grid.glob("runs/*/summary.json")
    data = json.loads(summary.read_text())
    del data["final"]
    summary.write_text(json.dumps(data))
    rejected(runner.invoke(app, ["results", str(grid)]), f"{summary}: not a triggerlab run summary")


def test_compare_with_a_value_that_is_not_yaml(tmp_path):
    grid = make_grid(tmp_path)
    result = runner.invoke(app, ["results", str(grid), "--compare", "poison.rate=[0.1,0.2"])
    rejected(result, "--compare")


# ---- dataset files -----------------------------------------------------------------------------


def cifar_with_string_labels(root: Path) -> Path:
    write_cifar10(root)
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    content = pickle.loads(batch.read_bytes())
    content["labels"] = ["cat"] * len(content["labels"])
    batch.write_bytes(pickle.dumps(content, protocol=2))
    return batch


def cifar_of_one_class(root: Path) -> Path:
    write_cifar10(root)
    folder = root / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        content = pickle.loads((folder / name).read_bytes())
        content["labels"] = [3] * len(content["labels"])
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return folder


def tiny_with_binary(name: str):
    def write(root: Path) -> Path:
        write_tinyimagenet(root)
        path = root / "tiny-imagenet-200" / name
        path.write_bytes(b"n01\xff\xfe\n")
        return path

    return write


def tiny_with_an_odd_image(root: Path) -> Path:
    write_tinyimagenet(root)
    odd = root / "tiny-imagenet-200" / "train" / "n02" / "images" / "n02_1.JPEG"
    write_image(odd, np.zeros((48, 48, 3), np.uint8))
    return odd


def gtsrb_with_binary_csv(root: Path) -> Path:
    write_gtsrb(root)
    csv_path = root / "Final_Training" / "Images" / "00001" / "GT-00001.csv"
    csv_path.write_bytes(csv_path.read_bytes() + b"\xff\xfe\n")
    return csv_path


def imagefolder_with_a_bomb(root: Path) -> Path:
    write_imagefolder(root)
    bomb = root / "cat" / "bomb.png"
    # A valid PNG header declaring 40000 x 40000 pixels: PIL refuses it before decoding.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return bomb


def imagefolder_of_one_class(root: Path) -> Path:
    write_imagefolder(root, classes=("cat",))
    return root


def mnist_with_labels_out_of_range(root: Path) -> Path:
    from support.formats import idx_bytes

    write_mnist(root)
    path = root / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.full(20, 12, np.uint8), 2049))
    return path


def mpii_annotation_binary(root: Path) -> Path:
    folder = root / "p00"
    write_image(folder / "day01" / "0001.jpg", np.zeros((20, 20, 3), np.uint8))
    table = folder / "p00.txt"
    table.write_bytes(b"day01/0001.jpg " + b"1 " * 27 + b"\xff\n")
    return table


def mpii_mat(kind: str):
    def write(root: Path) -> Path:
        path = root / "p00.mat"
        with h5py.File(path, "w") as handle:
            if kind == "group":
                handle.create_group("Data/data")
            else:
                handle.create_dataset("Data/data", data="not an image")
            handle.create_dataset("Data/label", data=np.zeros((2, 16), np.float32))
        return path

    return write


def biwi_npz(pose, count: int = 3):
    def write(root: Path) -> Path:
        path = root / "one.npz"
        np.savez(path, image=np.zeros((count, 8, 8, 3), np.uint8), pose=pose)
        return path

    return write


NAN_POSE = np.array([[0, 0, 0], [np.nan, 1, 2], [3, 4, 5]], np.float32)
DATA_FILES = {
    "CIFAR labels that are not integers": ("cifar10", cifar_with_string_labels, "'labels'"),
    "CIFAR of one class": ("cifar10", cifar_of_one_class, "same class"),
    "TinyImageNet wnids.txt not UTF-8": ("tinyimagenet", tiny_with_binary("wnids.txt"), "UTF-8"),
    "TinyImageNet words.txt not UTF-8": ("tinyimagenet", tiny_with_binary("words.txt"), "UTF-8"),
    "TinyImageNet images of two sizes": (
        "tinyimagenet",
        tiny_with_an_odd_image,
        "is 48x48 but",
    ),
    "GTSRB CSV not UTF-8": ("gtsrb", gtsrb_with_binary_csv, "not UTF-8 text"),
    "a PNG declaring 40000x40000 pixels": (
        "imagefolder",
        imagefolder_with_a_bomb,
        "declares more pixels",
    ),
    "an image folder of one class": ("imagefolder", imagefolder_of_one_class, "same class"),
    "MNIST labels outside the classes": (
        "mnist",
        mnist_with_labels_out_of_range,
        "train-labels-idx1-ubyte",
    ),
    "MPIIFaceGaze annotations not UTF-8": ("mpiifacegaze", mpii_annotation_binary, "UTF-8"),
    "MPIIFaceGaze Data/data a group": ("mpiifacegaze", mpii_mat("group"), "not groups"),
    "MPIIFaceGaze Data/data a string": ("mpiifacegaze", mpii_mat("string"), "must hold numbers"),
    "Biwi poses as strings": ("biwi", biwi_npz(np.array([["a", "b", "c"]] * 3)), "'pose'"),
    "Biwi npz without images": ("biwi", biwi_npz(np.zeros((0, 3)), count=0), "no images"),
    "Biwi poses that are NaN": ("biwi", biwi_npz(NAN_POSE), "not finite"),
}


@pytest.mark.parametrize("case", sorted(DATA_FILES))
def test_bad_dataset_files(tmp_path, case):
    name, write, needle = DATA_FILES[case]
    root = tmp_path / "data"
    root.mkdir()
    culprit = write(root)
    data_root = culprit if name == "biwi" else root
    extra = ["poison.target=[0, 0, 0]"] if name == "biwi" else []
    resize = "null" if "two sizes" in case else "16"  # resizing would hide different sizes
    settings = [f"data.name={name}", f"data.root={data_root}", f"data.resize={resize}", *extra]
    result = run_cli(tmp_path, *settings)
    message = rejected(result, needle)
    assert str(root) in message  # the file, or at least the dataset folder, is named
    assert nothing_in(tmp_path / "out")


def test_memory_is_known_before_any_work(tmp_path, monkeypatch):
    import triggerlab.data.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 50_000_000)
    result = run_cli(tmp_path, "data.resize=512")
    # the network at that size is counted before the images are loaded: it is the larger need
    message = rejected(result, "data.resize: small_cnn on 1x512x512 images needs about 13.7 GB")
    assert "GB" in message and "available" in message
    assert nothing_in(tmp_path / "out")
    from triggerlab.errors import ConfigError

    with pytest.raises(ConfigError, match="data.resize: 1,438 images of 1x512x512 take 0.4 GB"):
        memory.check_fits(1438, 1, 512, 512, "data.resize")


# ---- runs that start and cannot finish --------------------------------------------------------


def test_a_diverging_run_is_failed_not_complete(tmp_path, monkeypatch):
    import torch

    from triggerlab.attack.tasks import ClassificationTask

    calls = {"n": 0}
    real = ClassificationTask.loss

    def loss(self, outputs, targets):
        calls["n"] += 1
        value = real(self, outputs, targets)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(ClassificationTask, "loss", loss)
    result = run_cli(tmp_path, *QUICK, "output.name=diverged")
    assert result.exit_code == 1, result.output
    assert "run failed: epoch 1: the training loss is not finite" in result.stderr
    assert "from batch 3 of" in result.stderr and "Traceback" not in result.output
    run = tmp_path / "out" / "diverged"
    assert not (run / "summary.json").exists()
    failed = json.loads((run / "failed.json").read_text())
    assert failed["error"] == "RunFailed" and "batch 3" in failed["message"]
    assert torch.isnan(torch.tensor(float("nan")))


# ---- auditing code from elsewhere --------------------------------------------------------------


def test_audit_reads_the_weights_before_importing_the_model(tmp_path):
    module = tmp_path / "sneaky.py"
    marker = tmp_path / "imported"
    module.write_text(f"open({str(marker)!r}, 'w').close()\ndef make():\n    return None\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[:1] + sys.argv[2:]; "
        "from triggerlab.cli import main; main()"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path),
            "audit",
            "--model",
            "sneaky:make",
            "--weights",
            str(tmp_path / "missing.safetensors"),
            "--data",
            "digits",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--weights" in result.stderr
    assert not marker.exists()


def test_audit_help_says_it_runs_the_models_code():
    result = runner.invoke(app, ["audit", "--help"], env={"COLUMNS": "200"})
    assert "runs its code" in result.output.replace("\n", " ")


def test_the_grid_base_is_checked_like_a_config(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": {**BASE, "train": {"lr": float("inf")}}}))
    rejected(runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "g")]), "train.lr")
