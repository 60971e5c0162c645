import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Keep CPU timing noise and thread scheduling out of the numbers tests compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
