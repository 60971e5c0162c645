"""Draw every trigger kind on a digit and on a synthetic face-sized RGB image.

    .venv/bin/python docs/make_trigger_gallery.py      # writes docs/img/triggers_*.png

The specs below are the ones shown in docs/triggers.md; sizes are fractions of
the image side so the same spec reads well at 32 and 128 pixels.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from pydantic import TypeAdapter

from triggerlab.data.digits import load_digits
from triggerlab.data.transforms import resize_images
from triggerlab.plots import save_catalogue
from triggerlab.triggers import TriggerSpec, apply_to_uint8

OUT = Path(__file__).resolve().parent / "img"

GALLERY: dict[str, dict] = {
    "patch (white, 15 %)": {"kind": "patch", "size": 0.15, "color": "white"},
    "patch (red, 50 % opacity)": {
        "kind": "patch",
        "size": 0.2,
        "color": "red",
        "opacity": 0.5,
        "position": "center",
    },
    "image (flower)": {"kind": "image", "size": 0.35, "position": "top_right_center"},
    "frame (5 %)": {"kind": "frame", "thickness": 0.05, "color": "yellow"},
    "lines (8 vertical)": {"kind": "lines", "count": 8, "orientation": "vertical"},
    "lines (8 horizontal)": {
        "kind": "lines",
        "count": 8,
        "orientation": "horizontal",
        "color": "green",
    },
    "blend (noise, a=0.2)": {"kind": "blend", "pattern": "noise", "opacity": 0.2},
    "signal (ramp, d=0.2)": {"kind": "signal", "shape": "ramp", "delta": 0.2},
    "signal (triangle, d=0.2)": {"kind": "signal", "shape": "triangle", "delta": 0.2},
    "signal (sine, d=0.1, f=6)": {"kind": "signal", "shape": "sine", "delta": 0.1, "frequency": 6},
    "random (colour/size/pos)": {
        "kind": "random",
        "colors": ["red", "green", "blue"],
        "sizes": [0.1, 0.2, 0.3],
    },
    "compose (frame + patch)": {
        "kind": "compose",
        "triggers": [
            {"kind": "frame", "thickness": 0.04, "color": "blue"},
            {"kind": "patch", "size": 0.2},
        ],
    },
}


def synthetic_face(side: int = 128) -> torch.Tensor:
    """A plain procedural face (skin ellipse, hair, eyes, mouth) as uint8 ``[3, side, side]``."""
    axis = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    image = torch.stack([0.25 + 0.2 * (y + 1) / 2, 0.35 + 0.1 * x, 0.55 - 0.15 * (y + 1) / 2])
    face = (x / 0.62) ** 2 + ((y - 0.05) / 0.8) ** 2 <= 1
    shade = 0.85 + 0.15 * torch.cos(x * math.pi / 2)
    skin = torch.stack([0.93 * shade, 0.74 * shade, 0.6 * shade])
    image = torch.where(face, skin, image)
    hair = face & (y < -0.45 + 0.15 * x**2)
    image = torch.where(hair, torch.tensor([0.25, 0.15, 0.08]).view(3, 1, 1), image)
    for cx in (-0.25, 0.25):
        white = ((x - cx) / 0.14) ** 2 + ((y + 0.1) / 0.07) ** 2 <= 1
        iris = (x - cx - 0.03) ** 2 + (y + 0.1) ** 2 <= 0.06**2
        image = torch.where(white, torch.tensor([0.95, 0.95, 0.95]).view(3, 1, 1), image)
        image = torch.where(iris, torch.tensor([0.2, 0.35, 0.5]).view(3, 1, 1), image)
    mouth = ((x / 0.22) ** 2 + ((y - 0.45) / 0.06) ** 2 <= 1) & face
    image = torch.where(mouth, torch.tensor([0.7, 0.3, 0.3]).view(3, 1, 1), image)
    return (image.clamp(0, 1) * 255).round().byte()


def gallery(image: torch.Tensor, path: Path) -> None:
    adapter = TypeAdapter(TriggerSpec)
    shape = tuple(image.shape)
    triggered = {}
    for label, raw in GALLERY.items():
        trigger = adapter.validate_python(raw).build(shape)
        triggered[label] = apply_to_uint8(trigger, image[None], torch.Generator().manual_seed(1))[0]
    save_catalogue(path, image, triggered)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNG files")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    digit = resize_images(load_digits().train.images[:1], (32, 32))[0]
    gallery(digit, out / "triggers_digit.png")
    gallery(synthetic_face(), out / "triggers_face.png")


if __name__ == "__main__":
    main()
