"""``poison.rounding: down``: the count of references 001's and 002's code, int(rate x N)."""

import pytest

from triggerlab.attack.poison import poison_count
from triggerlab.config import PoisonConfig


@pytest.mark.parametrize(
    ("rate", "nearest", "down"),
    [(0.01, 14, 14), (0.02, 29, 28), (0.025, 36, 35), (0.0275, 40, 39), (0.05, 72, 71)],
)
def test_down_truncates_where_nearest_rounds(rate, nearest, down):
    """Reference 002's rates on the 1,437 training digits."""
    assert poison_count(PoisonConfig(rate=rate), 1437) == nearest
    assert poison_count(PoisonConfig(rate=rate, rounding="down"), 1437) == down


def test_an_exact_count_is_taken_as_it_is():
    assert poison_count(PoisonConfig(count=5, rounding="down"), 1437) == 5
