"""Tiny grid specs for tests: digits, one or two epochs, a few cells."""

from pathlib import Path

import yaml

BASE = {
    "data": {"name": "digits", "resize": 16},
    "trigger": {"kind": "patch", "size": 3},
    "poison": {"rate": 0.1, "target": 0},
    "model": {"name": "small_cnn", "options": {"width": 4, "hidden": 32}},
    # lr and schedule as these tests were tuned with (the defaults are 0.002 and cosine)
    "train": {
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.001,
        "lr_schedule": "constant",
        "device": "cpu",
    },
}


def write_spec(folder: Path, name: str = "spec.yaml", **fields) -> Path:
    spec = {
        "base": BASE,
        "grid": {"poison.rate": [0.05, 0.1], "trigger.size": [2, 3]},
        "repeats": 1,
    }
    spec.update(fields)
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
