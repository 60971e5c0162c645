"""Declarations name their implementation by import path, so that reading them imports no
torch (as Lightning's ``class_path`` does)."""

from __future__ import annotations

import importlib
from typing import Any


def implementation_of(path: str) -> Any:
    """The object a ``module:name`` import path names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
