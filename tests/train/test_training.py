"""Training as GPU users run it, checked on CPU: mixed precision, compilation, batched
augmentation, checkpoints that resume a killed run to identical numbers."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import REPO
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import load_config
from triggerlab.run import training
from triggerlab.run.experiment import resume_run, run_experiment
from triggerlab.run.rundir import TIMING_COLUMNS, read_metrics
from triggerlab.train import augment, devices
from triggerlab.train.checkpoint import META, TENSORS_GLOB
from triggerlab.train.devices import Precision

runner = CliRunner()
CPU = torch.device("cpu")
# A run whose every random stream matters: SGD with momentum, a cosine schedule, both
# augmentations, and a checkpoint after every epoch.
RESUMABLE = [
    "train.device=cpu",
    "train.epochs=6",
    "train.optimizer=sgd",
    "train.lr=0.05",
    "train.lr_schedule=cosine",
    "train.augment=[random_crop, hflip]",
    "train.crop_padding=2",
    "train.checkpoint_every=1",
]


def config(tmp_path, *extra):
    return load_config(None, [f"output.directory={tmp_path}", *extra])


def metric_rows(run_dir: Path) -> list[dict[str, float]]:
    """metrics.csv without the timing columns (which no two runs share)."""
    rows = read_metrics(run_dir / "metrics.csv")
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


# ---- precision and compilation -------------------------------------------------------------


@pytest.mark.slow
def test_bf16_and_fp32_runs_of_the_default_experiment_agree(tmp_path):
    """Mixed precision must not change what the metrics say: the default experiment's clean
    accuracy and ASR agree within 3 points (measured: identical CA, ASR 0.994 vs 0.991)."""
    finals = {}
    for precision in ("fp32", "bf16"):
        cfg = config(tmp_path, "train.device=cpu", f"train.precision={precision}")
        finals[precision] = run_experiment(cfg)
    fp32, bf16 = (finals[p].summary["final"] for p in ("fp32", "bf16"))
    assert fp32["clean_acc"] > 0.9 and fp32["asr"] > 0.9
    for name in ("clean_acc", "asr"):
        assert bf16[name] == pytest.approx(fp32[name], abs=0.03), name
    assert bf16["train_loss"] != fp32["train_loss"]  # bf16 really computed something else


def test_autocast_computes_in_bf16_on_cpu_and_fp16_needs_cuda():
    layer = torch.nn.Linear(4, 2)
    x = torch.ones(3, 4)
    with Precision("bf16", CPU).autocast():
        assert layer(x).dtype == torch.bfloat16
    with Precision("fp32", CPU).autocast():
        assert layer(x).dtype == torch.float32
    assert Precision("bf16", CPU).scaler() is None
    with pytest.raises(Exception, match="fp16 needs a CUDA device"):
        Precision("fp16", CPU)


@pytest.mark.slow
def test_a_model_that_cannot_compile_trains_uncompiled_with_one_warning(tmp_path, monkeypatch):
    calls = []

    def broken_compile(model):
        def forward(x):
            calls.append(x.shape[0])
            raise RuntimeError("backend inductor failed\nlong traceback")

        return forward

    monkeypatch.setattr(devices.torch, "compile", broken_compile)
    quick = ["train.device=cpu", "train.epochs=2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = run_experiment(config(tmp_path, *quick, "train.compile=true", "output.name=c"))
    messages = [str(w.message) for w in caught if "train.compile" in str(w.message)]
    assert messages == [
        "train.compile: BadNetCNN cannot be compiled (RuntimeError: backend inductor failed); "
        "training it uncompiled"
    ]
    assert len(calls) == 1  # tried once, then eager for good
    eager = run_experiment(config(tmp_path, *quick, "output.name=e"))
    assert metric_rows(compiled.run_dir) == metric_rows(eager.run_dir)


@pytest.mark.slow
def test_compiled_forward_matches_the_eager_model():
    """The real torch.compile (inductor on CPU, needs a C compiler): same outputs, shared
    weights; where it cannot compile, the fallback warns instead."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    wrapper = devices.compiled(model, True)
    assert wrapper is not None and devices.compiled(model, False) is None
    x = torch.randn(5, 1, 4, 4)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        out = wrapper(x)
    torch.testing.assert_close(out, model(x))
    assert set(dict(wrapper.named_parameters())) == {"model.1.weight", "model.1.bias"}


# ---- augmentation --------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 6),
    size=st.integers(3, 9),
    padding=st.integers(0, 4),
    seed=st.integers(0, 2**31),
)
def test_random_crop_cuts_a_window_of_the_zero_padded_image(batch, size, padding, seed):
    x = torch.randint(1, 256, (batch, 2, size, size), dtype=torch.uint8).float()
    out = augment.random_crop(x, padding, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    offsets = torch.randint(
        0, 2 * padding + 1, (2, batch), generator=torch.Generator().manual_seed(seed)
    )
    for i in range(batch):
        top, left = offsets[0, i].item(), offsets[1, i].item()
        assert torch.equal(out[i], padded[i, :, top : top + size, left : left + size])


def test_hflip_mirrors_about_half_the_images_and_the_trigger_moves_with_the_crop():
    x = torch.zeros(400, 1, 8, 8)
    x[:, :, 5:8, 5:8] = 1.0  # a 3x3 patch in the bottom-right corner
    flipped = augment.hflip(x, torch.Generator().manual_seed(0))
    mirrored = flipped[:, 0, 5:8, 0:3].amin(dim=(1, 2)) == 1
    kept = flipped[:, 0, 5:8, 5:8].amin(dim=(1, 2)) == 1
    assert torch.all(mirrored ^ kept)
    assert 160 < int(mirrored.sum()) < 240  # Binomial(400, 1/2): 6 standard deviations
    cropped = augment.random_crop(x[:50], 2, torch.Generator().manual_seed(1))
    assert torch.all(cropped.sum(dim=(1, 2, 3)) > 0)  # the patch moves but stays (mostly) in
    moved = {tuple(torch.nonzero(c[0])[0].tolist()) for c in cropped}
    assert len(moved) > 5


@pytest.mark.slow
def test_augmentation_is_seeded_and_applied_to_training_batches_only(tmp_path, monkeypatch):
    seen = []
    original = augment.Augment.__call__

    def counting(self, x):
        seen.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(augment.Augment, "__call__", counting)
    settings_ = ["train.device=cpu", "train.epochs=2", "train.augment=[random_crop, hflip]"]
    a = run_experiment(config(tmp_path, *settings_, "output.name=a"))
    train_size = a.summary["data"]["train_size"]
    assert sum(seen) == 2 * train_size  # every training image, each epoch; no test image
    b = run_experiment(config(tmp_path, *settings_, "output.name=b"))
    plain = run_experiment(config(tmp_path, "train.device=cpu", "train.epochs=2", "output.name=p"))
    assert metric_rows(a.run_dir) == metric_rows(b.run_dir)
    assert metric_rows(a.run_dir) != metric_rows(plain.run_dir)


@pytest.mark.slow
def test_augmentations_that_would_falsify_labels_are_refused(tmp_path):
    result = runner.invoke(
        app,
        [
            "run",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "data.name=synthetic_gaze",
            "--set",
            "data.options={count: 40, subjects: 2}",
            "--set",
            "poison.target=[0.1, 0.1]",
            "--set",
            "train.augment=[hflip]",
        ],
    )
    assert result.exit_code == 2
    assert "train.augment: hflip mirrors images but not their continuous labels" in result.stderr
    assert not (tmp_path / "r").exists()


# ---- checkpoints and resume ----------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_run_resumed_from_its_checkpoint_has_identical_metrics(tmp_path):
    """Kill a `triggerlab run` process at a random epoch (SIGKILL), continue it with
    `triggerlab run --resume`, and compare with a run that was never interrupted."""
    exe = str(Path(sys.executable).with_name("triggerlab"))
    # ten slower epochs (24x24 images), so that the kill lands before the run ends
    settings_ = [*RESUMABLE, "train.epochs=10", "data.resize=24", "train.threads=1"]
    args = [a for s in settings_ for a in ("--set", s)]
    whole = subprocess.run(
        [exe, "run", "-q", "--out", str(tmp_path), *args, "--set", "output.name=whole"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr
    kill_after = random.randint(2, 6)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [exe, "run", "-q", "--out", str(tmp_path), *args, "--set", "output.name=killed"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (killed / "metrics.csv").exists() and len(read_metrics(killed / "metrics.csv")) >= (
            kill_after
        ):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert process.wait(timeout=60) == -signal.SIGKILL, f"not killed after epoch {kill_after}"
    assert not (killed / "summary.json").exists()
    # the checkpoint's tensor file exists; a newer one may too, when the kill came between
    # writing it and checkpoint.json
    assert (killed / json.loads((killed / META).read_text())["tensors"]).exists()

    resumed = subprocess.run(
        [exe, "run", "-q", "--resume", str(killed)], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((killed / "summary.json").read_text())
    assert 1 <= summary["resumed_from_epoch"] <= kill_after
    assert metric_rows(killed) == metric_rows(tmp_path / "whole"), f"killed at {kill_after}"
    whole_summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["final"] == whole_summary["final"]
    assert not (killed / META).exists() and not list(killed.glob(TENSORS_GLOB))


def kill_at_epoch(monkeypatch, epoch: int) -> None:
    """Make the run die right after writing the metrics of ``epoch`` (before its checkpoint)."""
    original = training.EpochLog.__call__

    def dying(self, record):
        original(self, record)
        if record["epoch"] == epoch:
            raise RuntimeError("killed")

    monkeypatch.setattr(training.EpochLog, "__call__", dying)


@pytest.mark.slow
def test_ctrl_c_says_how_to_continue_and_resume_does(tmp_path, monkeypatch):
    original = training.EpochLog.__call__

    def interrupted(self, record):
        original(self, record)
        if record["epoch"] == 4:
            raise KeyboardInterrupt

    args = ["run", "--out", str(tmp_path), "-q"]
    args += [a for s in [*RESUMABLE, "output.name=r"] for a in ("--set", s)]
    with monkeypatch.context() as patch:
        patch.setattr(training.EpochLog, "__call__", interrupted)
        result = runner.invoke(app, args)
    assert result.exit_code == 130
    words = " ".join(result.stderr.split())  # the console may wrap a long path
    run = tmp_path / "r"
    assert words == (
        f"interrupted: {run} keeps its checkpoint after epoch 3; continue it with "
        f"triggerlab run --resume {run}"
    )
    resumed = runner.invoke(app, ["run", "--resume", str(tmp_path / "r")])
    assert resumed.exit_code == 0, resumed.output
    assert "from the checkpoint after epoch 3" in resumed.output


@pytest.mark.slow
def test_rerunning_a_killed_named_run_continues_it(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        kill_at_epoch(patch, 4)
        with pytest.raises(RuntimeError, match="killed"):
            run_experiment(config(tmp_path, *RESUMABLE, "output.name=named"))
    run = tmp_path / "named"
    assert json.loads((run / META).read_text())["epoch"] == 3
    with pytest.warns(UserWarning, match="killed after epoch 3; continuing it from its checkpoint"):
        resumed = run_experiment(config(tmp_path, *RESUMABLE, "output.name=named"))
    assert resumed.run_dir == run and resumed.summary["resumed_from_epoch"] == 3
    whole = run_experiment(config(tmp_path, *RESUMABLE, "output.name=whole"))
    assert metric_rows(run) == metric_rows(whole.run_dir)


@pytest.mark.slow
def test_a_two_stage_run_resumes_inside_its_fine_tuning_stage(tmp_path, monkeypatch):
    two_stage = [
        *RESUMABLE,
        "data.name=synthetic_gaze",
        "data.resize=16",
        "data.options={count: 160, subjects: 4}",
        "data.split=pretune_finetune",
        "data.finetune_count=20",
        "poison.target=[-0.3, 0.4]",
        "train.augment=[random_crop]",
        "train.epochs=3",
        "train.finetune_epochs=3",
    ]
    for kill in (2, 5):  # at the end of the first stage, and inside the second
        with monkeypatch.context() as patch:
            kill_at_epoch(patch, kill)
            with pytest.raises(RuntimeError):
                run_experiment(config(tmp_path, *two_stage, f"output.name=k{kill}"))
        resumed = resume_run(tmp_path / f"k{kill}")
        assert resumed.summary["resumed_from_epoch"] == kill - 1
    whole = run_experiment(config(tmp_path, *two_stage, "output.name=whole"))
    assert [r["epoch"] for r in metric_rows(whole.run_dir)] == [1, 2, 3, 4, 5, 6]
    for kill in (2, 5):
        assert metric_rows(tmp_path / f"k{kill}") == metric_rows(whole.run_dir), kill


@pytest.mark.slow
def test_a_grid_continues_its_killed_run_from_the_checkpoint(tmp_path, monkeypatch):
    from support.gridspecs import write_spec

    from triggerlab.grid.runner import run_grid
    from triggerlab.grid.spec import load_grid_spec

    spec = load_grid_spec(
        write_spec(tmp_path, grid={"poison.rate": [0.1]}), [f"base.{s}" for s in RESUMABLE]
    )
    with monkeypatch.context() as patch:
        kill_at_epoch(patch, 3)
        first = run_grid(spec, tmp_path / "g", threads=1)
    assert not first.ok
    (run,) = (tmp_path / "g" / "runs").iterdir()
    assert (run / META).exists() and (run / "failed.json").exists()
    again = run_grid(spec, tmp_path / "g", threads=1)
    assert again.ok and again.completed == [run.name]
    assert json.loads((run / "summary.json").read_text())["resumed_from_epoch"] == 2
    assert not (run / "failed.json").exists()
    fresh = run_grid(spec, tmp_path / "fresh", threads=1)
    assert fresh.ok
    assert metric_rows(run) == metric_rows(tmp_path / "fresh" / "runs" / run.name)


@pytest.mark.slow
def test_checkpoints_are_removed_at_the_end_unless_kept(tmp_path):
    kept = run_experiment(config(tmp_path, *RESUMABLE, "train.keep_checkpoints=true"))
    assert json.loads((kept.run_dir / META).read_text())["epoch"] == 5  # the last before the end
    assert [p.name for p in kept.run_dir.glob(TENSORS_GLOB)] == ["checkpoint-train-5.safetensors"]
    plain = run_experiment(config(tmp_path, *RESUMABLE))
    assert not (plain.run_dir / META).exists() and not list(plain.run_dir.glob(TENSORS_GLOB))


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_refused_never_loaded(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        kill_at_epoch(patch, 3)
        with pytest.raises(RuntimeError):
            run_experiment(config(tmp_path, *RESUMABLE, "output.name=r"))
    (tensors,) = (tmp_path / "r").glob(TENSORS_GLOB)
    data = bytearray(tensors.read_bytes())
    data[-5] ^= 0xFF
    tensors.write_bytes(bytes(data))
    result = runner.invoke(app, ["run", "--resume", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "the checkpoint is damaged (its SHA-256 does not match checkpoint.json)" in (
        result.stderr
    )
    assert result.stderr.count("error:") == 1
    assert not (tmp_path / "r" / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume", "{tmp}/nothing"], "not a run directory (no config.yaml) to resume"),
        (["--resume", "{tmp}/done"], "the run is complete; there is nothing to resume"),
        (["--resume", "{tmp}/done", "--set", "train.epochs=3"], "--resume: a run continues"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(tmp_path, args, message):
    run_experiment(config(tmp_path, "train.device=cpu", "train.epochs=1", "output.name=done"))
    result = runner.invoke(app, ["run", *(a.format(tmp=tmp_path) for a in args)])
    assert result.exit_code == 2
    assert message in result.stderr


# ---- several runs per GPU ------------------------------------------------------------------


@pytest.mark.slow
def test_gpus_per_run_is_refused_without_cuda(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("base: {train: {epochs: 1}}\ngrid: {poison.rate: [0.1]}\n")
    for fraction, message in (
        ("0.25", "--gpus-per-run: this machine has no CUDA GPU to share"),
        ("1.5", "--gpus-per-run: expected a fraction of one GPU in (0, 1]"),
    ):
        result = runner.invoke(
            app, ["grid", str(spec), "--out", str(tmp_path / "g"), "--gpus-per-run", fraction]
        )
        assert result.exit_code == 2, result.output
        assert message in result.stderr and result.stderr.count("error:") == 1
        assert not (tmp_path / "g").exists()


def test_runs_share_gpus_in_slots_pinned_round_robin(monkeypatch):
    import multiprocessing

    from triggerlab.errors import ArgumentError
    from triggerlab.grid import gpus

    share = gpus.GpuShare(0.25, 2)
    assert (share.runs_per_gpu, share.slots) == (4, 8)
    assert gpus.GpuShare(1 / 3, 1).runs_per_gpu == 3  # a third is three runs, not two
    assert gpus.local_workers(share, None) == 8 and gpus.local_workers(share, 3) == 3
    assert gpus.local_workers(None, None) == 1
    with pytest.raises(ArgumentError, match="9 workers do not fit: 0.25 of a GPU per run puts 4"):
        gpus.local_workers(share, 9)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    ids = gpus.device_ids(share)
    assert ids == ["5", "7"]
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    assert [gpus.pin_worker(counter, ids) for _ in range(8)] == ["5", "7"] * 4
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"  # each worker then sees its one GPU


# ---- the BackdoorBench protocol ------------------------------------------------------------

CONFIGS = REPO / "configs"


@pytest.mark.slow
def test_the_backdoorbench_preset_is_the_leaderboard_protocol_and_runs(tmp_path):
    from support.formats import write_cifar10

    from triggerlab.grid.plan import plan_grid
    from triggerlab.grid.spec import load_grid_spec

    cfg = load_config(CONFIGS / "backdoorbench_badnets_cifar10.yaml")
    train, poison = cfg.train, cfg.poison
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        5e-4,
    )
    assert (train.batch_size, train.lr_schedule, train.epochs) == (128, "cosine", 100)
    assert train.augment == ["random_crop", "hflip"] and train.crop_padding == 4
    assert (poison.rate, poison.target, poison.sources) == (0.1, 0, "all")
    assert (cfg.trigger.size, cfg.trigger.color, cfg.trigger.position) == (
        3,
        "white",
        "bottom_right",
    )
    assert cfg.model.name == "preact_resnet18"
    rates = [
        r.config.poison.rate
        for r in plan_grid(load_grid_spec(CONFIGS / "backdoorbench_rates.yaml"))
    ]
    assert rates == [0.001, 0.005, 0.01, 0.05, 0.1]

    write_cifar10(tmp_path / "cifar", per_batch=8)
    result = runner.invoke(
        app,
        [
            "run",
            str(CONFIGS / "backdoorbench_badnets_cifar10.yaml"),
            "--set",
            f"data.root={tmp_path / 'cifar'}",
            "--set",
            "train.epochs=2",
            "--out",
            str(tmp_path / "runs"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(
        (tmp_path / "runs" / "backdoorbench_badnets_cifar10" / "summary.json").read_text()
    )
    assert summary["poison"]["count"] == 4  # 10 % of 40 images, drawn from every class
