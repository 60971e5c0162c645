import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Keep CPU timing noise and thread scheduling out of the numbers tests compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_once(tmp_path_factory):
    """``run_experiment`` with a store of trained models shared by the whole test session (the
    grid's train once, defend many): runs whose training is the same (the same training key:
    everything but the defence, with the share the defence holds back) train it once, the
    others load it and replay its epochs."""
    from triggerlab.grid.plan import training_key
    from triggerlab.run.experiment import run_experiment
    from triggerlab.run.shared_training import SharedTraining

    folder = tmp_path_factory.mktemp("trained-once")

    def run(cfg, run_dir=None):
        return run_experiment(cfg, run_dir, shared=SharedTraining(folder, training_key(cfg)))

    return run


@pytest.fixture(scope="session")
def backdoored_run(tmp_path_factory, train_once):
    """One BadNets run of the embedded default (digits, white 3x3 patch, target 0) with its
    model saved, trained once per test session for every test that needs a trained backdoored
    model as it is (audit, explain); the returned folder must not be changed."""
    from triggerlab.config import load_config

    folder = tmp_path_factory.mktemp("backdoored")
    cfg = load_config(
        None, ["output.save_model=true", f"output.directory={folder}", "output.name=run"]
    )
    result = train_once(cfg)
    assert result.summary["final"]["asr"] > 0.9
    return result.run_dir
