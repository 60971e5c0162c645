"""Draw every trigger kind on a digit and on a synthetic face-sized RGB image.

    .venv/bin/python docs/make_trigger_gallery.py      # writes docs/img/triggers_*.png

The specs below are the ones shown in docs/triggers.md; sizes are fractions of
the image side so the same spec reads well at 32 and 128 pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from pydantic import TypeAdapter

from triggerlab.catalogue.triggers import TriggerSpec
from triggerlab.data.digits import load_digits
from triggerlab.data.faces import Subjects, render
from triggerlab.data.transforms import resize_images
from triggerlab.figures import save_catalogue
from triggerlab.triggers import map_uint8

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
    "warp (WaNet, s=1)": {"kind": "warp", "strength": 1.0},
    "quantize (3 bits, dithered)": {"kind": "quantize", "bits": 3, "dither": True},
    "low_frequency (eps=0.1)": {"kind": "low_frequency", "eps": 0.1},
    "reflection (focal, w=0.3)": {
        "kind": "reflection",
        "mode": "focal",
        "strength": 0.3,
        "sigma": 2.0,
    },
    "reflection (ghost, w=0.4)": {
        "kind": "reflection",
        "mode": "ghost",
        "strength": 0.4,
        "offset": [4, 4],
    },
    "adaptive_blend (test)": {"kind": "adaptive_blend", "opacity": 0.2},
    # a poisoned training sample: 8 of the 16 pieces (TRAINING_FORM draws it)
    "adaptive_blend (training)": {"kind": "adaptive_blend", "opacity": 0.2},
    "sample_specific (eps=0.1)": {"kind": "sample_specific", "eps": 0.1},
    "compose (frame + patch)": {
        "kind": "compose",
        "triggers": [
            {"kind": "frame", "thickness": 0.04, "color": "blue"},
            {"kind": "patch", "size": 0.2},
        ],
    },
}


TRAINING_FORM = {"adaptive_blend (training)"}  # drawn as a poisoned training sample sees it


def synthetic_face(side: int = 128) -> torch.Tensor:
    """One frontal face from triggerlab's procedural renderer, uint8 ``[3, side, side]``."""
    generator = torch.Generator().manual_seed(4)
    people = Subjects.draw(1, generator)
    subject, pose, gaze = torch.zeros(1, dtype=torch.long), torch.zeros(1, 3), torch.zeros(1, 2)
    return render(subject, pose, gaze, people, (side, side), generator)[0]


def gallery(image: torch.Tensor, path: Path) -> None:
    adapter = TypeAdapter(TriggerSpec)
    shape = tuple(image.shape)
    triggered = {}
    for label, raw in GALLERY.items():
        trigger = adapter.validate_python(raw).build(shape)
        form = trigger.apply_payload if label in TRAINING_FORM else trigger.apply
        triggered[label] = map_uint8(form, image[None], torch.Generator().manual_seed(1))[0]
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
