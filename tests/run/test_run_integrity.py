"""Runs that could end "complete" with wrong numbers, or work without a bound: the frozen-feature
cache across seeds, checkpoints read back on resume, defence parameters, sizes that cannot fit,
two processes on one run, and audits of models that misbehave."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import load_config
from triggerlab.run.experiment import run_experiment

runner = CliRunner()
SMALL = [
    "train.device=cpu",
    "model.options={width: 4, hidden: 32}",
    "train.batch_size=64",
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """An empty feature cache of each test's own."""
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))


def config(tmp_path, *extra):
    return load_config(None, [*SMALL, f"output.directory={tmp_path}", *extra])


# ---- the frozen-feature cache and fresh weights ------------------------------------------------

FROZEN = ["model.freeze=classifier", "train.epochs=3"]


@pytest.mark.slow  # trains models
def test_fresh_weights_of_another_seed_get_their_own_features(tmp_path):
    """With fresh weights the frozen body depends on the seed: a second seed must not reuse
    the first seed's features (it did: clean accuracy 0.29 instead of 0.10)."""
    run_experiment(config(tmp_path, *FROZEN, "output.name=s0"))
    cached = run_experiment(config(tmp_path, *FROZEN, "train.seed=1", "output.name=s1"))
    plain = run_experiment(
        config(tmp_path, *FROZEN, "train.seed=1", "model.feature_cache=false", "output.name=p1")
    )
    assert cached.summary["feature_cache"]["used"] and cached.summary["feature_cache"]["built_here"]
    for name in ("clean_acc", "asr", "robust_acc"):
        assert cached.summary["final"][name] == pytest.approx(
            plain.summary["final"][name], abs=0.006
        ), name


@pytest.mark.slow  # trains models
def test_a_grids_repeats_with_fresh_weights_match_uncached_runs(tmp_path):
    from support.gridspecs import write_spec

    from triggerlab.grid.runner import run_grid
    from triggerlab.grid.spec import load_grid_spec

    finals = {}
    for cache in ("true", "false"):
        spec = write_spec(tmp_path, f"{cache}.yaml", grid={"poison.rate": [0.1]}, repeats=2)
        overrides = [
            "base.model.freeze=classifier",
            f"base.model.feature_cache={cache}",
            "base.train.epochs=4",
            "base.train.lr=0.01",
        ]
        outcome = run_grid(load_grid_spec(spec, overrides), tmp_path / cache, threads=1)
        assert outcome.ok
        finals[cache] = {}
        for run in (tmp_path / cache / "runs").iterdir():
            seed = yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"]
            finals[cache][seed] = json.loads((run / "summary.json").read_text())["final"]
    assert len(finals["true"]) == 2 and finals["true"].keys() == finals["false"].keys()
    for seed, final in finals["true"].items():
        assert final["clean_acc"] == pytest.approx(finals["false"][seed]["clean_acc"], abs=0.006)
        assert final["train_loss"] == pytest.approx(finals["false"][seed]["train_loss"], rel=1e-3)


# ---- defence parameters, element by element, before any work ------------------------------------

QUICK = ["train.epochs=1", "output.name=r"]


def refused(tmp_path, *settings: str) -> str:
    """Run the CLI with ``settings``; assert exit 2, one message, nothing written; the message."""
    args = ["run", "-q", "--out", str(tmp_path / "out")]
    args += [a for s in [*SMALL, *QUICK, *settings] for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("error:") == 1, result.stderr
    assert not (tmp_path / "out").exists()
    return " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["defense.scales=[.nan]"], "defense.scales[0]: Input should be a finite number"),
        (["defense.scales=[3, -1]"], "defense.scales[1]: Input should be greater than 1"),
        (["defense.scales=[0]"], "defense.scales[0]: Input should be greater than 1"),
        (["defense.scales=[1e300]"], "defense.scales[0]: Input should be less than or equal"),
    ],
)
def test_scale_up_scales_are_checked_one_by_one(tmp_path, settings, message):
    assert message in refused(tmp_path, "defense.kind=scale_up", *settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["defense.betas=[.nan]"], "defense.betas[0]: Input should be a finite number"),
        (["defense.betas=[1, .inf]"], "defense.betas[1]: Input should be a finite number"),
        (["defense.betas=[1e300]"], "defense.betas[0]: Input should be less than or equal"),
        (["defense.betas=[-1]"], "defense.betas[0]: Input should be greater than or equal to 0"),
        (["defense.lr=1e300"], "defense.lr: Input should be less than or equal to 10"),
        (["defense.lr=.inf"], "defense.lr: Input should be a finite number"),
        (["defense.epochs=1000000000"], "defense.epochs: Input should be less than or equal"),
        # small_cnn has two convolution stages: a third weight would be dropped
        (["defense.betas=[1, 2, 3]"], "defense.betas: 3 weights, but the model has 2 stage(s)"),
    ],
)
def test_nad_parameters_are_refused_before_any_work(tmp_path, settings, message):
    text = refused(tmp_path, "defense.kind=nad", *settings)
    assert message in text
    assert "train.lr" not in text


def test_strip_overlays_are_bounded(tmp_path):
    text = refused(tmp_path, "defense.kind=strip", "defense.overlays=1000000000")
    assert "defense.overlays: Input should be less than or equal to 1000" in text


def test_nad_defaults_fit_a_shallower_model_and_say_which_betas(tmp_path):
    from triggerlab.catalogue.defenses import NadSpec
    from triggerlab.defenses.nad import stage_betas
    from triggerlab.models import build_configured

    model, _ = build_configured(load_config(None, SMALL).model, (1, 16, 16), 10)
    assert stage_betas(NadSpec(kind="nad"), model) == [1000.0, 1000.0]
    assert stage_betas(NadSpec(kind="nad", betas=[7.0]), model) == [7.0]


def test_a_diverging_defence_fine_tune_names_defense_lr():
    import torch
    from torch import nn

    from triggerlab.config import TrainConfig
    from triggerlab.defenses.repair import Retraining, fine_tune
    from triggerlab.errors import RunFailed

    class Task:
        metric_names = ("clean_acc",)

        def loss(self, outputs, targets):
            return nn.functional.cross_entropy(outputs, targets)

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    nn.init.constant_(model[1].weight, float("inf"))
    images = torch.randint(1, 255, (8, 1, 2, 2), dtype=torch.uint8)
    with pytest.raises(RunFailed, match=r"too high \(defense\.lr\)"):
        fine_tune(
            model,
            Task(),
            images,
            torch.zeros(8, dtype=torch.long),
            train=TrainConfig(batch_size=4),
            recipe=Retraining(epochs=1, lr=1.0, batch_size=4),
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(0),
        )


# ---- what resume reads from a checkpoint ---------------------------------------------------------

KILLABLE = [
    *SMALL,
    "train.epochs=4",
    "train.optimizer=sgd",
    "train.lr=0.05",
    "train.lr_schedule=cosine",
    "train.checkpoint_every=1",
]


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A run that died after epoch 3's metrics, before its checkpoint: it holds epoch 2's."""
    from triggerlab.run import training

    folder = tmp_path_factory.mktemp("killed")
    original = training.EpochLog.__call__

    def dying(self, record):
        original(self, record)
        if record["epoch"] == 3:
            raise RuntimeError("killed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.EpochLog, "__call__", dying)
        with pytest.raises(RuntimeError, match="killed"):
            run_experiment(load_config(None, [*KILLABLE, f"output.directory={folder}"]))
    (run,) = folder.iterdir()
    return run


@pytest.fixture
def killed(killed_run, tmp_path) -> Path:
    """A copy of the killed run of this test's own."""
    copy = tmp_path / "killed"
    shutil.copytree(killed_run, copy)
    return copy


def resume_refused(run: Path) -> str:
    result = runner.invoke(app, ["run", "-q", "--resume", str(run)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (run / "summary.json").exists()
    return " ".join(result.stderr.split())


def edit_checkpoint(run: Path, change, redigest: bool = False) -> None:
    from triggerlab.train.checkpoint import META, meta_digest

    meta = json.loads((run / META).read_text())
    change(meta)
    if redigest:
        meta["digest"] = meta_digest(meta)
    (run / META).write_text(json.dumps(meta))


def _set(key, value):
    def change(meta):
        meta[key] = value

    change.name = f"{key}={value}"
    return change


def _history_value(meta):
    meta["history"][0]["clean_acc"] = 0.999


def _shorter_history(meta):
    meta["history"] = meta["history"][:-1]


def _scheduler(meta):
    meta["scheduler"]["last_epoch"] = 0


def _learning_rate(meta):
    meta["param_groups"][0]["lr"] = 0.5


def _renumbered(meta):
    meta["history"][1]["epoch"] = 7


CHANGED = "checkpoint.json: changed or damaged since it was written (its digest does not match"


@pytest.mark.slow  # trains models
@pytest.mark.parametrize(
    "change",
    [
        _history_value,
        _shorter_history,
        _scheduler,
        _learning_rate,
        _set("history", "forged"),
        _set("history", 5),
        _set("epoch", "three"),
        _set("stage", "warmup"),
        _set("digest", None),
        _set("digest", "0" * 64),
    ],
    ids=lambda change: getattr(change, "name", change.__name__),
)
def test_a_changed_checkpoint_is_refused_on_resume(killed, change):
    edit_checkpoint(killed, change)
    assert CHANGED in resume_refused(killed)


@pytest.mark.slow  # trains models
def test_a_checkpoint_without_a_digest_is_not_trusted(killed):
    edit_checkpoint(killed, lambda meta: meta.pop("digest"))
    text = resume_refused(killed)
    assert (
        "checkpoint.json: has no digest (an older triggerlab wrote it, or it was changed)" in text
    )


@pytest.mark.slow  # trains models
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            _set("history", "forged"),
            "not a valid checkpoint (history: Input should be a valid list",
        ),
        (_set("epoch", "three"), "not a valid checkpoint (epoch: Input should be a valid integer"),
        (_set("stage", "warmup"), "not a valid checkpoint (stage: Input should be 'train' or"),
        (_set("tensors", "../model.safetensors"), "not a valid checkpoint (tensors: String should"),
        (_set("stage", "finetune"), "stage 'finetune' is not a stage of this run (train)"),
        (_set("epoch", 7), "epoch 7 of stage 'train' is outside 1-3"),
        (_shorter_history, "its history holds 1 epochs; epoch 2 of stage 'train' needs 2"),
        (_renumbered, "history record 2 is not epoch 2 of stage 'train'"),
    ],
)
def test_every_field_resume_reads_is_validated(killed, change, message):
    """Even with a digest that matches (a checkpoint written wrongly), no field is trusted."""
    edit_checkpoint(killed, change, redigest=True)
    assert message in resume_refused(killed)


@pytest.mark.slow  # trains models
def test_a_config_changed_after_the_kill_is_refused(killed):
    config = killed / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 4", "epochs: 5"))
    text = resume_refused(killed)
    assert "config.yaml: changed since the checkpoint was written" in text


@pytest.mark.slow  # trains models
def test_a_resumed_run_leaves_no_temporary_files_and_continues_exactly(killed, tmp_path):
    # what a SIGKILL in the middle of an atomic write leaves behind
    (killed / ".metrics.csv.k2x8q1ab.tmp").write_text("epoch,train_loss\n1,")
    (killed / ".checkpoint.json.p0o9i8uy.tmp").write_text("{")
    result = runner.invoke(app, ["run", "-q", "--resume", str(killed)])
    assert result.exit_code == 0, result.output
    assert not list(killed.glob(".*"))
    whole = run_experiment(load_config(None, [*KILLABLE, f"output.directory={tmp_path / 'w'}"]))
    assert _rows(killed) == _rows(whole.run_dir)


def _rows(run: Path) -> list[dict[str, float]]:
    from triggerlab.run.rundir import TIMING_COLUMNS, read_metrics

    rows = read_metrics(run / "metrics.csv")
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.mark.slow  # trains models
def test_a_run_is_resumed_by_one_process_at_a_time(killed):
    from triggerlab.run.rundir import RunDir

    with RunDir(killed).lock():  # another process, running it now
        text = resume_refused(killed)
    assert f"{killed}: another triggerlab process is running this run now" in text
    assert runner.invoke(app, ["run", "-q", "--resume", str(killed)]).exit_code == 0


# ---- audits of models that misbehave -------------------------------------------------------------

USER_MODELS = """
import sys

import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.scale = scale

    def forward(self, x):
        return self.fc(x.flatten(1)) * self.scale


def plain():
    return Linear()


def nan_outputs():
    return Linear(float("nan"))


def exits():
    sys.exit(0)


class ExitingForward(Linear):
    def forward(self, x):
        sys.exit(0)


def exits_in_forward():
    return ExitingForward()
"""


@pytest.fixture
def user_models(tmp_path) -> Path:
    """A user's module (``usermodels_<test>.py``) and weights that fit its models."""
    import torch
    from torch import nn

    folder = tmp_path / "code"
    folder.mkdir()
    (folder / f"usermodels_{tmp_path.name}.py").write_text(USER_MODELS)
    (folder / f"exiting_{tmp_path.name}.py").write_text("import sys\nsys.exit(0)\n")
    state = nn.Linear(64, 10).state_dict()
    torch.save({f"fc.{k}": v for k, v in state.items()}, tmp_path / "model.pt")
    return folder


def audit_refused(tmp_path, folder: Path, model: str, *extra: str) -> str:
    module = f"{model.partition(':')[0]}_{tmp_path.name}"
    args = ["audit", "--model", f"{module}:{model.partition(':')[2] or 'plain'}"]
    args += ["--module-path", str(folder), "--weights", str(tmp_path / "model.pt")]
    args += ["--data", "digits", "--set", "data.resize=8", "--samples", "50"]
    args += ["--out", str(tmp_path / "report"), "-q"]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "report").exists()
    return " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("exiting:plain", "--model: importing 'exiting_"),
        ("usermodels:exits", "calling usermodels_"),
        ("usermodels:exits_in_forward", "--model: its forward pass called sys.exit(0)"),
    ],
)
def test_an_audited_model_that_exits_is_an_error(tmp_path, user_models, model, message):
    text = audit_refused(tmp_path, user_models, model)
    assert message in text and "sys.exit(0)" in text


def test_an_audited_model_that_outputs_nan_is_refused_naming_the_nan(tmp_path, user_models):
    text = audit_refused(tmp_path, user_models, "usermodels:nan_outputs")
    assert "--model: it outputs NaN or infinite values for 50 of 50 clean digits images" in text


@pytest.mark.parametrize("normalization", ["nan,nan", "0.5,inf", "nan,0.5"])
def test_a_non_finite_input_normalization_is_refused(tmp_path, user_models, normalization):
    text = audit_refused(
        tmp_path, user_models, "usermodels:plain", "--input-normalization", normalization
    )
    assert "--input-normalization: " in text and "must be finite numbers" in text


# ---- sizes that cannot fit: refused before any work ---------------------------------------------


def test_a_model_that_cannot_fit_in_memory_is_refused_naming_the_key(tmp_path, monkeypatch):
    """At 64x64 the small CNN, its gradients and Adam's state take 42 MB: with 40 MB free it
    cannot train, and nothing is written (it trained and then died in the allocator)."""
    from triggerlab.data import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 40 * 2**20)
    text = refused(tmp_path, "data.resize=64", "model.options={}")
    assert text.startswith("error: data.resize: small_cnn on 1x64x64 images needs about")
    assert "more than the 36 MB it can use (40 MB available)" in text
    assert "choose a smaller data.resize" in text


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (["data.resize=2048", "model.options={}"], "data.resize"),
        (["model.options={hidden: 10000000}"], "model.options"),
    ],
    ids=["resize", "hidden"],
)
def test_a_network_too_large_is_refused_before_loading_or_building(
    tmp_path, monkeypatch, settings, key
):
    from triggerlab.data import memory
    from triggerlab.run import prepare

    def not_loaded(*_args, **_kwargs):
        raise AssertionError("the images were loaded")

    monkeypatch.setattr(memory, "available_bytes", lambda: 1 * 2**30)
    monkeypatch.setattr(prepare, "load_source", not_loaded)
    text = refused(tmp_path, *settings)
    assert f"error: {key}: small_cnn on 1x" in text and "GB of CPU memory" in text


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"memory.max": "max", "memory.current": "10"}, None),
        (
            {"memory.max": "1000", "memory.current": "900", "memory.stat": "inactive_file 300"},
            400,
        ),
        (
            {
                "memory/memory.limit_in_bytes": "2000",
                "memory/memory.usage_in_bytes": "500",
                "memory/memory.stat": "cache 9\ntotal_inactive_file 100",
            },
            1600,
        ),
        (
            {
                "memory/memory.limit_in_bytes": str(2**63 - 4096),
                "memory/memory.usage_in_bytes": "1",
            },
            None,
        ),
    ],
    ids=["v2-unlimited", "v2", "v1", "v1-unlimited"],
)
def test_a_containers_memory_limit_counts_as_the_memory_available(tmp_path, files, expected):
    """Inside a container /proc/meminfo shows the host's memory; its cgroup limit is what the
    run can really take."""
    from triggerlab.data.memory import _cgroup_available

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert _cgroup_available(tmp_path) == expected


def test_resizing_to_a_large_size_works_in_bounded_chunks(monkeypatch):
    """Resizing took float copies of 2048 images at once (34 GB at 2048x2048): the chunks are
    now bounded in bytes, and the images are the same."""
    import torch

    from triggerlab.data import transforms

    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    whole = transforms.resize_images(images, (64, 64))
    seen = []
    interpolate = transforms.F.interpolate

    def recording(x, **kwargs):
        seen.append(x.shape[0])
        return interpolate(x, **kwargs)

    monkeypatch.setattr(transforms, "_CHUNK_BYTES", 4 * 64 * 64 * 3)  # three images' floats
    monkeypatch.setattr(transforms.F, "interpolate", recording)
    assert torch.equal(transforms.resize_images(images, (64, 64)), whole)
    assert seen == [3, 3, 3, 1]
