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
def backdoored_run(tmp_path_factory):
    """One BadNets run of the embedded default (digits, white 3x3 patch, target 0) with its
    model saved, trained once per test session for every test that needs a trained backdoored
    model as it is (audit, explain); the returned folder must not be changed."""
    from triggerlab.config import load_config
    from triggerlab.run.experiment import run_experiment

    folder = tmp_path_factory.mktemp("backdoored")
    cfg = load_config(
        None, ["output.save_model=true", f"output.directory={folder}", "output.name=run"]
    )
    result = run_experiment(cfg)
    assert result.summary["final"]["asr"] > 0.9
    return result.run_dir
