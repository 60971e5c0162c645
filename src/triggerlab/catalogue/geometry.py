"""Where a trigger goes: sizes in pixels or fractions of the side, and named positions.

Size rule: an integer is a side length in pixels; a float in (0, 1] is a
fraction of the image's shorter side, rounded half up, at least one pixel:
``side = max(1, floor(f * min(H, W) + 0.5))``. Reference 001's 4 %, 6 % and
8 % of a 64-pixel MNIST image are therefore 3, 4 and 5 pixels.

Positions name the top-left pixel of a ``h x w`` stamp on an ``H x W`` image
with a margin ``m`` from the border:

* corners: ``top_left`` (m, m), ``top_right`` (m, W - w - m),
  ``bottom_left`` (H - h - m, m), ``bottom_right`` (H - h - m, W - w - m);
* ``center``: ``((H - h) // 2, (W - w) // 2)``;
* the four "midway" positions of reference 000 (``top_left_center`` ...):
  half-way between the centred stamp and the corresponding corner stamp,
  ``floor((center + corner) / 2)`` on each axis;
* an explicit ``[x, y]``: column x and row y of the top-left pixel.

The short names of reference 002 (``tl``, ``tr``, ``bl``, ``br``) are accepted.
"""

from __future__ import annotations

from typing import Any

from triggerlab.errors import ConfigError

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
NAMED_POSITIONS = (*CORNERS, "center", *(f"{c}_center" for c in CORNERS))
POSITION_ALIASES = {
    "tl": "top_left",
    "tr": "top_right",
    "bl": "bottom_left",
    "br": "bottom_right",
    "centre": "center",
}

SizeValue = int | float
PositionValue = str | tuple[int, int]


def int_sequence(value: Any, length: int, low: int, high: int | None = None) -> bool:
    """True when ``value`` is a list/tuple of ``length`` plain ints within [low, high]."""
    return (
        isinstance(value, list | tuple)
        and len(value) == length
        and all(
            isinstance(v, int)
            and not isinstance(v, bool)
            and v >= low
            and (high is None or v <= high)
            for v in value
        )
    )


def parse_size(value: Any) -> SizeValue:
    """Validate a size: a positive pixel count or a fraction of the side in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"invalid size {value!r}; expected pixels (an integer >= 1) "
            "or a fraction of the image side in (0, 1]"
        )
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"size {value} must be at least 1 pixel")
        return value
    if not 0.0 < value <= 1.0:
        raise ValueError(f"fractional size {value} must lie in (0, 1]; write an integer for pixels")
    return float(value)


def parse_position(value: Any) -> PositionValue:
    """Validate a position: one of NAMED_POSITIONS (or an alias) or [x, y] pixels."""
    if isinstance(value, str):
        name = POSITION_ALIASES.get(value.lower(), value.lower())
        if name not in NAMED_POSITIONS:
            raise ValueError(
                f"unknown position {value!r}; expected one of {', '.join(NAMED_POSITIONS)} "
                "or [x, y] in pixels"
            )
        return name
    if int_sequence(value, 2, 0):
        return (int(value[0]), int(value[1]))
    raise ValueError(
        f"invalid position {value!r}; expected a name ({', '.join(NAMED_POSITIONS)}) "
        "or [x, y] with non-negative integer pixels"
    )


def resolve_size(size: SizeValue, height: int, width: int) -> int:
    """Side length in pixels of a (validated) size on an image of ``height x width``."""
    if isinstance(size, int):
        return size
    return max(1, int(size * min(height, width) + 0.5))


def resolve_position(
    position: PositionValue, stamp: tuple[int, int], image: tuple[int, int], margin: int = 0
) -> tuple[int, int]:
    """Top-left ``(row, col)`` of a ``stamp = (h, w)`` placed on ``image = (H, W)``."""
    h, w = stamp
    height, width = image
    if isinstance(position, tuple):
        x, y = position
        return (y, x)
    center = ((height - h) // 2, (width - w) // 2)
    if position == "center":
        return center
    corner_name = position.removesuffix("_center")
    top = margin if corner_name.startswith("top") else height - h - margin
    left = margin if corner_name.endswith("left") else width - w - margin
    if position == corner_name:
        return (top, left)
    return ((center[0] + top) // 2, (center[1] + left) // 2)


def fit_side(size: SizeValue, shape: tuple[int, int, int], where: str) -> int:
    """Side in pixels of a square trigger; ConfigError naming ``where`` if it exceeds the image."""
    _, height, width = shape
    side = resolve_size(size, height, width)
    if side > min(height, width):
        raise ConfigError(
            f"{where}: a {side}-pixel trigger does not fit a {height}x{width} image "
            f"(expected 1 to {min(height, width)} pixels)"
        )
    return side


def fit_position(
    position: PositionValue, side: int, margin: int, shape: tuple[int, int, int], where: str
) -> tuple[int, int]:
    _, height, width = shape
    top, left = resolve_position(position, (side, side), (height, width), margin)
    if top < 0 or left < 0 or top + side > height or left + side > width:
        raise ConfigError(
            f"{where}: a {side}x{side} trigger at {position} with margin {margin} "
            f"falls outside the {height}x{width} image"
        )
    return top, left
