"""Draw every trigger kind on a digit and on a synthetic face-sized RGB image.

    .venv/bin/python docs/make_trigger_gallery.py      # writes docs/img/triggers_*.png

It draws every example of every trigger spec (``examples`` in
``catalogue/triggers.py``, also what the benchmarks and the tests iterate): adding a kind
with its examples adds it here. Sizes are fractions of the image side so the same spec reads
well at 32 and 128 pixels. A trigger whose poisoned training samples look different from its
test-time form (Adaptive-Blend's masked pieces) gets a second panel for its training form.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from triggerlab.catalogue.triggers import trigger_examples
from triggerlab.data.digits import load_digits
from triggerlab.data.faces import Subjects, render
from triggerlab.data.transforms import resize_images
from triggerlab.figures import save_catalogue
from triggerlab.triggers import map_uint8

OUT = Path(__file__).resolve().parent / "img"


def synthetic_face(side: int = 128) -> torch.Tensor:
    """One frontal face from triggerlab's procedural renderer, uint8 ``[3, side, side]``."""
    generator = torch.Generator().manual_seed(4)
    people = Subjects.draw(1, generator)
    subject, pose, gaze = torch.zeros(1, dtype=torch.long), torch.zeros(1, 3), torch.zeros(1, 2)
    return render(subject, pose, gaze, people, (side, side), generator)[0]


def gallery(image: torch.Tensor, path: Path) -> None:
    shape = tuple(image.shape)
    triggered = {}
    for label, spec in trigger_examples().items():
        trigger = spec.build(shape)
        drawn = map_uint8(trigger.apply, image[None], torch.Generator().manual_seed(1))[0]
        triggered[label] = drawn
        payload = getattr(trigger, "apply_payload", None)
        if payload is not None:  # a poisoned training sample, where it differs
            trained = map_uint8(payload, image[None], torch.Generator().manual_seed(1))[0]
            if not torch.equal(trained, drawn):
                triggered[f"{label} (training)"] = trained
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
