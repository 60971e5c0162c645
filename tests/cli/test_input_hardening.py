"""Bad input at the edge (issues 28 and 29): output folders, YAML, config files that are not
files, grid sizes, seeds, yes/no values for numbers, messages naming the right key, one set
of defaults, and planning in linear time. Every refusal: exit 2, one message, nothing on disk.
"""

import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml
from support import REPO
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import load_config, validate_config
from triggerlab.errors import ArgumentError, ConfigError
from triggerlab.grid.plan import MAX_RUNS, plan_grid, preflight, run_id
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import GridSpec, load_grid_spec

runner = CliRunner()


def refused(*args: str) -> str:
    """The one error message of a command that must exit with status 2."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert result.stderr.count("error:") == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return result.stderr


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- output folders (issue 28 item 1; issue 29: a refused config leaves no empty folder) ---


@pytest.mark.slow
def test_run_out_naming_a_file_is_refused_before_any_work(tmp_path):
    taken = write(tmp_path / "taken", "")
    message = refused("run", "-q", "--out", str(taken))
    assert f"output.directory: {taken} is a file, not a folder" in message
    assert sorted(tmp_path.iterdir()) == [taken] and taken.read_text() == ""


@pytest.mark.slow
def test_run_out_below_a_file_or_where_nothing_can_be_created(tmp_path):
    below = tmp_path / "taken" / "runs"
    write(tmp_path / "taken", "")
    assert "taken is a file, not a folder" in refused("run", "-q", "--out", str(below))
    # /proc takes no new folders, even from root: the creation itself is refused
    message = refused("run", "-q", "--set", "train.epochs=1", "--out", "/proc/triggerlab/x")
    assert "output.directory: cannot create a run folder in /proc/triggerlab/x" in message
    assert not os.path.lexists("/proc/triggerlab")


@pytest.mark.slow
def test_grid_out_naming_a_file_or_below_one(tmp_path):
    spec = REPO / "configs" / "demo_study.yaml"
    taken = write(tmp_path / "taken", "")
    assert f"--out: {taken} is a file, not a folder" in refused(
        "grid", str(spec), "--out", str(taken)
    )
    below = str(taken / "grid")
    assert "taken is a file, not a folder" in refused("grid", str(spec), "--out", below)
    message = refused("grid", str(spec), "-q", "--out", "/proc/triggerlab/g")
    assert "--out: cannot create /proc/triggerlab/g" in message
    assert sorted(tmp_path.iterdir()) == [taken]


@pytest.mark.slow
def test_a_config_refused_once_the_data_is_loaded_leaves_no_folders(tmp_path):
    """WaNet's noise mode with more cover samples than the training set holds is found only
    after the data is loaded: neither the run folder nor the parents made for it remain."""
    out = tmp_path / "new" / "deeper"
    message = refused(
        "run", "-q", "--out", str(out), "--set", "trigger.kind=warp",
        "--set", "trigger.noise_mode=true", "--set", "trigger.cross_ratio=10",
        "--set", "poison.rate=0.5",
    )  # fmt: skip
    assert "cover samples" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_grid_refused_in_preflight_leaves_no_folders(tmp_path):
    spec = write(
        tmp_path / "spec.yaml",
        yaml.safe_dump({"base": {"data": {"resize": 16}}, "grid": {"trigger.size": [3, 40]}}),
    )
    with pytest.raises(ConfigError, match="trigger.size=40"):
        run_grid(load_grid_spec(spec), tmp_path / "new" / "grid")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


# --- YAML (issue 28 item 3) ---


@pytest.mark.slow
def test_a_key_given_twice_in_a_section_is_refused_naming_it_and_both_lines(tmp_path):
    config = write(tmp_path / "c.yaml", "poison:\n  rate: 0.05\n  target: 1\n  rate: 0.2\n")
    message = refused("run", str(config), "--out", str(tmp_path / "runs"))
    assert "key 'poison.rate' is given twice, on lines 2 and 4" in message
    assert str(config) in message and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_section_given_twice_at_the_top_is_refused(tmp_path):
    config = write(tmp_path / "c.yaml", "poison:\n  rate: 0.05\ntrain:\n  epochs: 1\npoison: {}\n")
    assert "key 'poison' is given twice, on lines 1 and 5" in refused("run", str(config))


def test_merge_keys_may_still_be_overridden(tmp_path):
    """A YAML merge (``<<``) followed by a key of its own is an override, not a duplicate."""
    config = write(tmp_path / "c.yaml", "train:\n  <<: {epochs: 1, lr: 0.01}\n  epochs: 2\n")
    train = load_config(config).train
    assert (train.epochs, train.lr) == (2, 0.01)


@pytest.mark.slow
def test_a_duplicate_inside_a_grid_spec_and_a_set_value(tmp_path):
    spec = write(
        tmp_path / "s.yaml", "base: {}\ngrid:\n  poison.rate: [0.1]\n  poison.rate: [0.2]\n"
    )
    with pytest.raises(
        ConfigError, match=r"key 'grid.poison.rate' is given twice, on lines 3 and 4"
    ):
        load_grid_spec(spec)
    message = refused("run", "--set", "data.options={count: 1, count: 2}")
    assert "key 'count' is given twice" in message


@pytest.mark.slow
def test_a_binary_value_is_refused(tmp_path):
    config = write(tmp_path / "c.yaml", "output:\n  name: !!binary aGVsbG8=\n")
    message = refused("run", str(config))
    assert f"config file {config}, line 2: a !!binary value" in message


@pytest.mark.slow
def test_an_integer_of_100000_digits_is_refused_with_a_message(tmp_path):
    config = write(tmp_path / "c.yaml", "train:\n  seed: " + "9" * 100_000 + "\n")
    message = refused("run", str(config))
    assert "line 2: an integer of 100000 digits" in message
    assert len(message) < 400


# --- config files that are not regular files (issue 29 item 5) ---


@pytest.mark.slow
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_config_is_refused_without_reading_it(device):
    started = time.perf_counter()
    message = refused("run", device)
    assert f"config file {device} is a character device; expected a regular YAML file" in message
    assert time.perf_counter() - started < 30


@pytest.mark.slow
def test_a_named_pipe_as_config_is_refused_instead_of_waiting(tmp_path):
    pipe = tmp_path / "config.yaml"
    os.mkfifo(pipe)
    done = subprocess.run(  # a process of its own: reading a pipe nobody writes would hang
        [sys.executable, "-c", "from triggerlab.cli import main; main()", "run", str(pipe)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert done.returncode == 2
    assert "is a named pipe; expected a regular YAML file" in done.stderr


@pytest.mark.slow
def test_a_config_file_over_the_size_limit(tmp_path):
    big = write(tmp_path / "big.yaml", "# padding\n" * 110_000)
    assert "has more than 1000000 bytes" in refused("run", str(big))


# --- grid sizes (issue 28 item 4) ---


def big_spec(folder: Path, **fields) -> Path:
    """10^7 runs: 1,000 rates x 100 sizes x 100 repeats, in a spec of a few kilobytes."""
    spec = {
        "base": {},
        "grid": {"poison.rate": [i / 1000 for i in range(1000)], "trigger.size": list(range(100))},
        "repeats": 100,
        **fields,
    }
    return write(folder / "big.yaml", yaml.safe_dump(spec))


@pytest.mark.slow
def test_a_grid_of_ten_million_runs_is_refused_in_under_a_second(tmp_path):
    spec = load_grid_spec(big_spec(tmp_path))
    started = time.perf_counter()
    with pytest.raises(ArgumentError, match=r"plans up to 10,000,000 runs \(1000 x 100 x 100 "):
        plan_grid(spec)
    assert time.perf_counter() - started < 1.0


@pytest.mark.slow
def test_the_command_line_names_the_count_and_the_flag_that_raises_the_limit(tmp_path):
    message = refused(
        "grid", str(big_spec(tmp_path, clean_baseline=True)), "--out", str(tmp_path / "g")
    )
    assert "--max-runs: grid big plans up to 20,000,000 runs" in message
    assert "2 for clean baselines" in message and "more than the limit of 100,000" in message
    assert not (tmp_path / "g").exists()


@pytest.mark.slow
def test_the_limit_can_be_raised_or_lowered(tmp_path):
    spec = GridSpec.model_validate({"base": {}, "grid": {"trigger.size": [2, 3, 4]}, "repeats": 2})
    assert spec.run_count() == 6
    with pytest.raises(ArgumentError, match="more than the limit of 5"):
        plan_grid(spec, max_runs=5)
    assert len(plan_grid(spec, max_runs=6)) == 6
    written = write(tmp_path / "s.yaml", yaml.safe_dump(spec.model_dump(mode="json")))
    message = refused("grid", str(written), "--max-runs", "5", "--out", str(tmp_path / "g"))
    assert "more than the limit of 5" in message and not (tmp_path / "g").exists()


def test_the_command_line_default_is_the_librarys():
    import inspect

    from triggerlab.cli.experiments import grid

    assert inspect.signature(grid).parameters["max_runs"].default == MAX_RUNS


# --- planning in linear time (issue 29 item 7) ---


def sizes_spec(runs: int) -> GridSpec:
    """Fractional trigger sizes that all draw 3 px at 16 px: every cell a trigger twin."""
    sizes = [0.1875 + i * 1e-7 for i in range(runs)]
    base = {"data": {"resize": 16}}
    return GridSpec.model_validate({"name": "t", "base": base, "grid": {"trigger.size": sizes}})


def planning_seconds(runs: int) -> float:
    spec = sizes_spec(runs)
    started = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the twins' warning
        preflight(plan_grid(spec))
    return time.process_time() - started


@pytest.mark.slow
def test_planning_and_checking_a_grid_takes_linear_time():
    """Ten times the runs take about ten times as long (a generous bound of 25), and a run
    costs a few config validations, not a pass over the dataset (which made 10^4 runs take
    minutes): both measured against work done in this process, so load cannot fail it."""
    planning_seconds(2)  # imports
    started = time.process_time()
    for _ in range(100):
        validate_config({})
    validation = (time.process_time() - started) / 100
    small, large = planning_seconds(300), planning_seconds(3000)
    assert large < 25 * small, (small, large)
    per_run = (large - small) / 2700
    assert per_run < 100 * validation, (per_run, validation)


@pytest.mark.slow
def test_preflight_splits_the_data_once_for_runs_that_share_a_seed(monkeypatch):
    from triggerlab.data import prepare

    calls = []
    original = prepare.split_source
    monkeypatch.setattr(prepare, "split_source", lambda *a: calls.append(1) or original(*a))
    spec = GridSpec.model_validate(
        {"base": {"data": {"resize": 16}}, "grid": {"poison.rate": [0.05, 0.1, 0.2]}, "repeats": 2}
    )
    preflight(plan_grid(spec))
    assert len(calls) == 2  # one per repeat seed, not one per run


# --- seeds, symlinks, yes/no for numbers, the right key named (issue 29, "Also") ---

HUGE = 2**64


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (["trigger.kind=warp", f"trigger.seed={HUGE}"], "trigger.seed"),
        (["trigger.kind=low_frequency", f"trigger.seed={HUGE}"], "trigger.seed"),
        (["trigger.kind=reflection", f"trigger.seed={HUGE}"], "trigger.seed"),
        (["trigger.kind=adaptive_blend", f"trigger.seed={HUGE}"], "trigger.seed"),
        (["trigger.kind=blend", "trigger.pattern=noise", f"trigger.seed={HUGE}"], "trigger.seed"),
        (["trigger.kind=sample_specific", f"trigger.key={HUGE}"], "trigger.key"),
        (
            ["trigger.kind=compose", f"trigger.triggers=[{{kind: warp, seed: {HUGE}}}]"],
            "trigger.triggers[0].seed",
        ),
    ],
)
def test_seeds_beyond_the_generators_range_are_refused_at_the_config(settings, key):
    with pytest.raises(
        ConfigError, match=re.escape(f"{key}: Input should be less than or equal to 4294967295")
    ):
        load_config(None, settings)


def test_a_seed_at_the_bound_is_accepted():
    cfg = load_config(None, ["trigger.kind=warp", "trigger.seed=4294967295"])
    assert cfg.trigger.seed == 2**32 - 1


@pytest.mark.slow
def test_a_dataset_option_seed_beyond_the_range_names_the_option():
    message = refused(
        "run", "--set", "data.name=synthetic_gaze", "--set", f"data.options.seed={HUGE}",
        "--set", "data.options.count=100",
    )  # fmt: skip
    assert "data.options.seed: expected 0 to 4294967295" in message


@pytest.mark.slow
def test_a_grid_base_that_is_a_symlink_loop(tmp_path):
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    spec = write(tmp_path / "s.yaml", "base: a.yaml\ngrid:\n  poison.rate: [0.1]\n")
    message = refused("grid", str(spec), "--out", str(tmp_path / "g"))
    assert f"grid spec {spec}: base 'a.yaml' cannot be resolved to a file" in message
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (["trigger.kind=quantize", "trigger.bits=true"], "trigger.bits"),
        (["trigger.opacity=true"], "trigger.opacity"),
        (["poison.source_classes=[1, true]"], "poison.source_classes"),
        (["data.resize=[true, 16]"], "data.resize"),
        (["defense.kind=finetune", "defense.epochs=false"], "defense.epochs"),
        (
            ["trigger.kind=compose", "trigger.triggers=[{kind: quantize, bits: true}]"],
            "trigger.triggers[0].bits",
        ),
    ],
)
def test_a_yes_no_value_where_a_number_belongs_is_refused(settings, key):
    with pytest.raises(
        ConfigError, match=re.escape(f"{key}: expected a number, not a yes/no value")
    ):
        load_config(None, settings)


def test_yes_no_settings_still_take_yes_and_no():
    assert load_config(None, ["train.compile=true", "output.save_model=true"]).train.compile


def test_a_grid_spec_refuses_yes_no_repeats(tmp_path):
    with pytest.raises(ConfigError, match="repeats: expected a number"):
        load_grid_spec(write(tmp_path / "s.yaml", "base: {}\nrepeats: true\n"))


@pytest.mark.slow
def test_source_classes_that_leave_nothing_to_poison_are_named(tmp_path):
    message = refused("run", "--out", str(tmp_path), "--set", "poison.source_classes=[0]")
    assert message.startswith(
        "error: poison.source_classes: 144 poisoned samples requested but only 0"
    )
    assert "the target class 0 is never a source" in message


@pytest.mark.slow
def test_too_few_clean_samples_name_clean_samples_and_the_least_that_works(tmp_path):
    settings = ["--set", "defense.kind=finetune", "--set", "defense.clean_samples=1"]
    message = refused("run", "--out", str(tmp_path), *settings)
    assert "defense.clean_samples: 1 held-back samples" in message
    assert "expected at least 5" in message and "clean_fraction" not in message


@pytest.mark.slow
def test_a_root_for_a_dataset_without_files_is_refused():
    message = refused("run", "--set", "data.root=/data/digits")
    assert "data.root: dataset 'digits' reads no files" in message


# --- one set of defaults (issue 28 item 9) ---


def test_a_file_that_sets_one_key_takes_every_other_from_the_default(tmp_path):
    config = write(tmp_path / "c.yaml", "poison:\n  rate: 0.05\n")
    assert load_config(config) == load_config(None, ["poison.rate=0.05"])
    assert load_config(config).data.resize == (16, 16)


def test_a_grid_base_and_the_python_api_share_those_defaults():
    assert validate_config({}) == load_config() == load_config(REPO / "configs" / "default.yaml")
    assert validate_config({"train": {"epochs": 2}}).train.lr == load_config().train.lr


def test_resize_left_out_is_the_datasets_run_size_and_null_is_native():
    assert validate_config({"data": {"name": "digits"}}).data.resize == (16, 16)
    assert validate_config({"data": {"name": "digits", "resize": None}}).data.resize is None
    assert validate_config({"data": {"name": "synthetic_gaze"}}).data.resize is None


@pytest.mark.slow
def test_a_partial_config_file_runs(tmp_path):
    config = write(tmp_path / "c.yaml", "poison:\n  rate: 0.05\ntrain:\n  epochs: 1\n")
    result = runner.invoke(app, ["run", str(config), "-q", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output


def test_run_ids_of_explicit_experiments_did_not_change_with_the_defaults():
    """Ids compare against the defaults they were first given under, so grids run before the
    schema took the embedded default's values keep their finished runs."""
    assert run_id(load_config()) == "6fe7e1bc1dd7"
    assert run_id(load_config(REPO / "configs" / "badnets_mnist.yaml")) == "8cbf3fc959d2"
    spec = load_grid_spec(REPO / "configs" / "ref002_trigger_size.yaml")
    ids = [run.run_id for run in plan_grid(spec)]
    assert ids[:3] == ["504404423a17", "0504eb9b5e21", "722f87d6095e"]
