import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the format writers in tests/formats.py


@pytest.fixture(autouse=True)
def _single_thread():
    """Keep CPU timing noise and thread scheduling out of the numbers tests compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
