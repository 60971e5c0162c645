"""The report's checklist says how the runs were poisoned: static, or anew in every batch."""

import pandas as pd

from triggerlab.analysis.report.checklist import _poisoning_text
from triggerlab.config import load_config
from triggerlab.grid.plan import PlannedRun


def planned(*settings: str) -> PlannedRun:
    return PlannedRun("id", {}, 0, 0, "grid", None, load_config(None, list(settings)))


def test_the_checklist_names_each_schedule_and_explains_per_batch():
    table = pd.DataFrame({"role": ["grid"], "poison_count": [135]})
    both = _poisoning_text([planned("trigger.kind=warp"), planned()], table)
    assert "schedule per_batch, static" in both and "anew" in both
    static = _poisoning_text([planned()], table)
    assert "schedule static" in static and "anew" not in static
