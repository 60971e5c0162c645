"""`triggerlab triggers list|preview` and bad trigger inputs through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from triggerlab.catalogue.triggers import TRIGGER_KINDS
from triggerlab.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_list_documents_every_kind_and_parameter():
    result = invoke("triggers", "list")
    assert result.exit_code == 0
    for kind, spec in TRIGGER_KINDS.items():
        assert f"{kind}:" in result.output
        for name, info in spec.model_fields.items():
            if name != "kind":
                assert name in result.output
                assert info.description, f"{kind}.{name} has no description"
    assert "green001" in result.output and "top_left_center" in result.output
    assert "or [x, y]" in result.output  # not eaten as rich markup


PREVIEWS = {
    "patch": ["kind=patch color=red size=0.2"],
    "image": ["kind=image size=0.4"],
    "frame": ["kind=frame", "thickness=2"],
    "lines": ["kind=lines count=6 orientation=horizontal"],
    "blend": ["kind=blend opacity=0.3"],
    "signal": ["kind=signal shape=ramp delta=0.2"],
    "random": ["kind=random", "sizes=[2,4]"],
    "compose": ["kind=compose", "triggers=[{kind: frame}, {kind: patch}]"],
    "warp": ["kind=warp strength=1.0 grid=4"],
    "quantize": ["kind=quantize bits=2 dither=true"],
    "low_frequency": ["kind=low_frequency pattern=random_smooth eps=0.1"],
    "reflection": ["kind=reflection mode=ghost"],
    "adaptive_blend": ["kind=adaptive_blend pieces=4 masked_pieces=2"],
    "sample_specific": ["kind=sample_specific eps=0.08"],
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(PREVIEWS))
def test_preview_writes_a_png_for_every_kind(tmp_path, kind):
    assert set(PREVIEWS) == set(TRIGGER_KINDS)
    out = tmp_path / "sub" / f"{kind}.png"
    args = ["triggers", "preview", "--out", str(out), "--resize", "24", "--samples", "3"]
    for item in PREVIEWS[kind]:
        args += ["--trigger", item]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG
    assert "PSNR" in result.output and "SSIM" in result.output


@pytest.mark.slow
def test_preview_from_a_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trigger: {kind: frame, thickness: 1}\ndata: {name: digits, resize: 16}\n")
    result = invoke("triggers", "preview", str(config), "--out", str(tmp_path / "g.png"))
    assert result.exit_code == 0, result.output
    # a 1-pixel frame on 16x16 covers 60 of 256 pixels; a few digits touch the border
    # with white already, where a white frame changes nothing
    l0 = float(result.output.split("L0 ")[1].split()[0])
    assert 0.22 < l0 <= 60 / 256


BAD = {
    "zero size": (["kind=patch size=0"], "trigger.size: size 0 must be at least 1 pixel"),
    "size larger than image": (
        ["kind=patch size=40"],
        "trigger.size: a 40-pixel trigger does not fit",
    ),
    "zero thickness": (
        ["kind=frame thickness=0"],
        "trigger.thickness: size 0 must be at least 1 pixel",
    ),
    "frame too thick": (
        ["kind=frame thickness=9"],
        "trigger.thickness: a 9-pixel frame covers the whole",
    ),
    "opacity above 1": (
        ["kind=patch opacity=1.5"],
        "trigger.opacity: Input should be less than or equal to 1",
    ),
    "opacity zero": (["kind=lines opacity=0"], "trigger.opacity: Input should be greater than 0"),
    "unknown colour": (["kind=frame color=mauve"], "trigger.color: unknown colour 'mauve'"),
    "lines do not fit": (
        ["kind=lines count=16"],
        "trigger.count: 16 lines 1 pixel(s) thick do not fit",
    ),
    "delta above 1": (
        ["kind=signal delta=1.5"],
        "trigger.delta: Input should be less than or equal to 1",
    ),
    "frequency zero": (
        ["kind=signal frequency=0"],
        "trigger.frequency: Input should be greater than 0",
    ),
    "unreadable image": (
        ["kind=image path=/nonexistent/t.png"],
        "trigger.path: cannot read image file",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["run", "preview"])
def test_bad_trigger_exits_2_naming_the_field(tmp_path, case, command):
    items, message = BAD[case]
    if command == "run":
        args = ["run", "--out", str(tmp_path / "runs")]
        for item in items[0].split():
            args += ["--set", f"trigger.{item}"]
    else:
        args = [
            "triggers",
            "preview",
            "--out",
            str(tmp_path / "runs" / "p.png"),
            "--trigger",
            items[0],
        ]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_summary_holds_the_stealth_metrics(tmp_path):
    result = invoke(
        "run",
        "-q",
        "--out",
        str(tmp_path),
        "--set",
        "train.epochs=1",
        "--set",
        "trigger.kind=signal",
        "--set",
        "trigger.delta=0.1",
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    stealth = json.loads((run_dir / "summary.json").read_text())["stealth"]
    assert set(stealth) == {
        "sample",
        "l0_fraction",
        "l2_mean",
        "linf_mean",
        "psnr_db",
        "psnr_pooled_db",
        "ssim",
    }
    assert stealth["sample"] == 256
    assert 0.09 <= stealth["linf_mean"] <= 0.11


@pytest.mark.slow
def test_preview_of_another_dataset_uses_that_datasets_own_size(tmp_path, monkeypatch):
    import triggerlab.tools.preview as module

    seen = {}

    def capture(cfg, out, samples):
        seen["resize"] = cfg.data.resize
        return {"l0_fraction": 0, "l2_mean": 0, "linf_mean": 0, "psnr_db": None, "ssim": 1}

    monkeypatch.setattr(module, "preview_trigger", capture)
    out = str(tmp_path / "p.png")
    assert invoke("triggers", "preview", "--data", "synthetic_gaze", "--out", out).exit_code == 0
    assert seen["resize"] is None  # the faces' own 64 px, not the digits' default 16
    invoke("triggers", "preview", "--data", "synthetic_gaze", "--resize", "32", "--out", out)
    assert seen["resize"] == (32, 32)
