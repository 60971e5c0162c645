"""Trigger colours as a config names them: a name, a grey level or an RGB triple."""

from __future__ import annotations

from typing import Any

from triggerlab.catalogue.geometry import int_sequence

NAMED_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    # The green of reference 001 (a colour chosen to blend with natural images). On one
    # channel triggerlab stamps its luminance (146); reference 001's code wrote 0 there, a
    # black trigger (docs/references.md, reference 001, item 4): use black for theirs.
    "green001": (102, 179, 92),
}

LUMA_WEIGHTS = (0.299, 0.587, 0.114)

ColorValue = str | int | tuple[int, int, int]


def parse_color(value: Any) -> ColorValue:
    """Validate a colour given as a name, a grey level 0-255 or an RGB triple of 0-255."""
    if isinstance(value, str):
        name = value.lower()
        if name not in NAMED_COLORS:
            raise ValueError(
                f"unknown colour {value!r}; expected one of {', '.join(NAMED_COLORS)}, "
                "a grey level 0-255 or [R, G, B] with values 0-255"
            )
        return name
    if isinstance(value, bool):
        raise ValueError("expected a colour name, a grey level 0-255 or [R, G, B], not a boolean")
    if isinstance(value, int):
        if not 0 <= value <= 255:
            raise ValueError(f"grey level {value} is outside 0-255")
        return value
    if int_sequence(value, 3, 0, 255):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise ValueError(
        f"invalid colour {value!r}; expected a name ({', '.join(NAMED_COLORS)}), "
        "a grey level 0-255 or [R, G, B] with values 0-255"
    )


def color_rgb(color: ColorValue) -> tuple[int, int, int]:
    """The 0-255 RGB triple of a validated colour."""
    if isinstance(color, str):
        return NAMED_COLORS[color]
    if isinstance(color, int):
        return (color, color, color)
    return color
