"""`triggerlab triggers preview --data NAME` draws the images at the size a run of that dataset
uses, and every trigger kind previews on every dataset at that size."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from support.formats import (
    write_cifar10,
    write_cifar100,
    write_gtsrb,
    write_image,
    write_mnist,
    write_tinyimagenet,
)
from typer.testing import CliRunner

import triggerlab.tools.preview as preview_module
from triggerlab.catalogue.datasets import DATASETS
from triggerlab.catalogue.triggers import TRIGGER_KINDS
from triggerlab.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def write_mpiifacegaze(root: Path) -> None:
    """Two subjects of the normalised release (HDF5, BGR planes), 16 px for speed."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for subject in ("p00", "p01"):
        with h5py.File(root / f"{subject}.mat", "w") as handle:
            handle.create_dataset("Data/data", data=rng.integers(0, 256, (8, 3, 16, 16), np.uint8))
            handle.create_dataset("Data/label", data=rng.normal(size=(8, 16)).astype(np.float32))


def write_biwi(root: Path) -> None:
    """The preprocessed npz pair (official split) at its 64 px."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for part in ("train", "test"):
        images = rng.integers(0, 256, (6, 64, 64, 3), np.uint8)
        pose = rng.normal(size=(6, 3)).astype(np.float32)
        np.savez(root / f"BIWI_{part}.npz", image=images, pose=pose)


def write_photos(root: Path) -> None:
    """An image folder of 32 px photos, two classes (its native size is that of its files)."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        for i in range(5):
            write_image(root / name / f"{i}.png", rng.integers(0, 256, (32, 32, 3), np.uint8))


# name: (fixture writer or None, extra settings, (height, width) a run of it draws).
# gtsrb (sizes vary) and the MPIIFaceGaze release (448 px, 27 GB) refuse to load without a
# size, in a run and in a preview alike: they get the size their message proposes.
DATASET_CASES = {
    "digits": (None, [], (16, 16)),  # the embedded default upsamples the 8 px digits
    "mnist": (write_mnist, [], (28, 28)),
    "cifar10": (write_cifar10, [], (32, 32)),
    "cifar100": (write_cifar100, [], (32, 32)),
    "tinyimagenet": (write_tinyimagenet, [], (64, 64)),
    "gtsrb": (write_gtsrb, ["--resize", "32"], (32, 32)),
    "synthetic_gaze": (None, ["--set", "data.options.count=60"], (64, 64)),
    "synthetic_headpose": (None, ["--set", "data.options.count=60"], (64, 64)),
    "mpiifacegaze": (write_mpiifacegaze, ["--resize", "224"], (224, 224)),
    "biwi": (write_biwi, [], (64, 64)),
    "imagefolder": (write_photos, [], (32, 32)),
}

# Each kind with its defaults; compose has none (it needs its parts).
KIND_SETTINGS = {kind: [f"kind={kind}"] for kind in TRIGGER_KINDS}
KIND_SETTINGS["compose"] = ["kind=compose", "triggers=[{kind: frame}, {kind: patch}]"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    made = {}
    for name, (writer, _, _) in DATASET_CASES.items():
        if writer is not None:
            made[name] = tmp_path_factory.mktemp(name)
            if name in ("mpiifacegaze", "biwi", "imagefolder"):
                made[name] = made[name] / "files"
            writer(made[name])
    return made


@pytest.fixture
def drawn(monkeypatch):
    """The images the preview drew, recorded on their way to the figure."""
    seen: list[tuple[int, int]] = []
    original = preview_module.save_trigger_preview

    def spy(path, clean, triggered, title, caption):
        seen.append(tuple(clean.shape[-2:]))
        original(path, clean, triggered, title, caption)

    monkeypatch.setattr(preview_module, "save_trigger_preview", spy)
    return seen


def preview(out: Path, dataset: str, root: Path | None, kind: str):
    _, extra, _ = DATASET_CASES[dataset]
    args = ["triggers", "preview", "--data", dataset, "--out", str(out), "--samples", "2"]
    args += ["--root", str(root)] if root is not None else []
    for item in KIND_SETTINGS[kind]:
        args += ["--trigger", item]
    return runner.invoke(app, args + extra, env={"COLUMNS": "200"})


def test_every_dataset_has_a_case():
    assert set(DATASET_CASES) == set(DATASETS)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(DATASET_CASES))
def test_every_kind_previews_at_the_size_a_run_of_the_dataset_uses(tmp_path, roots, drawn, dataset):
    height, width = DATASET_CASES[dataset][2]
    for kind in sorted(TRIGGER_KINDS):
        out = tmp_path / f"{kind}.png"
        result = preview(out, dataset, roots.get(dataset), kind)
        assert result.exit_code == 0, f"{kind} on {dataset}: {result.output}"
        assert drawn[-1] == (height, width), kind
        assert out.read_bytes()[:8] == PNG
        with Image.open(out) as image:  # two rows of three panels and the captions
            assert image.width >= 400 and image.height >= 300, (kind, image.size)
        assert "PSNR" in result.output and f"wrote {out}" in " ".join(result.output.split())


@pytest.mark.slow
def test_the_digits_preview_draws_16_pixels_as_the_default_run(tmp_path, drawn):
    """Issue 28, item 6: at the native 8 px the digits refused lines that a run draws."""
    out = tmp_path / "lines.png"
    args = ["triggers", "preview", "--data", "digits", "--out", str(out)]
    args += ["--trigger", "kind=lines count=8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert drawn == [(16, 16)]
    result = runner.invoke(app, [*args, "--resize", "8"])  # told otherwise, it obeys
    assert result.exit_code == 2
    assert "8 lines 1 pixel(s) thick" in result.output and "across 8 pixels" in result.output
