"""Text shaping shared by every figure: titles broken at spaces only."""

from __future__ import annotations

import textwrap


def wrapped(text: str, width: int) -> str:
    """A title in lines of ``width``, broken at spaces only: the report's caption joins the
    lines with a space, which would leave "logit- scale" after a break at a hyphen."""
    return textwrap.fill(text, width, break_on_hyphens=False)
