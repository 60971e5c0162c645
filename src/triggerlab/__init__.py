"""triggerlab: systematic backdoor (data-poisoning) experiments on image models.

The calls a notebook needs::

    import triggerlab as tl

    cfg = tl.load_config("configs/default.yaml", ["train.epochs=5"])
    cfg = tl.override(cfg, "poison.rate=0.05", "trigger.size=4")
    result = tl.run_experiment(cfg)              # one run directory
    spec = tl.load_grid_spec("configs/demo_study.yaml")
    tl.run_grid(spec, "grids/demo_study")        # a resumable study
    table, varied = tl.collect_results("grids/demo_study")
    tl.plot_grid("grids/demo_study")
    tl.build_report("grids/demo_study")

Names are imported on first use, so ``import triggerlab`` stays fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("triggerlab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# public name -> module that defines it
_EXPORTS = {
    "ExperimentConfig": "triggerlab.config",
    "load_config": "triggerlab.config",
    "override": "triggerlab.config",
    "run_experiment": "triggerlab.run.experiment",
    "RunResult": "triggerlab.run.experiment",
    "GridSpec": "triggerlab.grid.spec",
    "load_grid_spec": "triggerlab.grid.spec",
    "run_grid": "triggerlab.grid.runner",
    "collect_results": "triggerlab.analysis.results",
    "write_results": "triggerlab.analysis.results",
    "plot_grid": "triggerlab.analysis.plots.grid_figures",
    "build_report": "triggerlab.analysis.report",
    "audit_model": "triggerlab.tools.audit",
    "audit_files": "triggerlab.tools.audit",
    "audit_run": "triggerlab.tools.audit",
    "AuditOptions": "triggerlab.tools.audit",
    "preview_trigger": "triggerlab.tools.preview",
    "TriggerlabError": "triggerlab.errors",
    "ConfigError": "triggerlab.errors",
    "DataFormatError": "triggerlab.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'triggerlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
