"""Every shipped config validates: experiments load, grid specs plan every cell."""

import pytest
import yaml
from support import REPO

from triggerlab.config import load_config
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.spec import load_grid_spec

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    raw = yaml.safe_load(path.read_text())
    if "base" in raw:
        plan = plan_grid(load_grid_spec(path))
        assert plan and len({run.run_id for run in plan}) == len(plan)
    else:
        assert load_config(path).data.name
