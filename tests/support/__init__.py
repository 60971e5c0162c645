"""What the tests share: writers of fixture files in the real formats (``formats``), small grid
specs (``gridspecs``), foreign models for the audit (``auditmodels``) and the repository's
root. ``tests/`` is on pytest's ``pythonpath``, so tests import ``support.<module>``."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
