"""The report's checklist names the label mode that ran: the paper's, resolved."""

import pandas as pd

from triggerlab.analysis.report.checklist import _poisoning_text
from triggerlab.config import load_config
from triggerlab.grid.plan import PlannedRun


def planned(*settings: str) -> PlannedRun:
    return PlannedRun("id", {}, 0, 0, "grid", None, load_config(None, list(settings)))


def test_the_checklist_names_the_resolved_label_modes():
    table = pd.DataFrame({"role": ["grid"], "poison_count": [72]})
    sig = _poisoning_text([planned("trigger.kind=signal")], table)
    assert "label mode clean_label;" in sig and "paper" not in sig.split("label mode")[1][:20]
    both = _poisoning_text([planned("trigger.kind=signal"), planned()], table)
    assert "label mode all_to_one, clean_label;" in both
    dirty = _poisoning_text([planned("trigger.kind=signal", "poison.label_mode=all_to_one")], table)
    assert "label mode all_to_one;" in dirty
