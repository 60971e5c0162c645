"""The loopback HTTP server the fetching tests download from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.fetchserver import Served, serve


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    with serve() as served:
        yield served
