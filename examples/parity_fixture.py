"""A CIFAR-10-format fixture and a small parity grid, to try ``triggerlab leaderboard`` here.

The real comparison (``configs/backdoorbench_parity.yaml``) trains 100 epochs of PreAct-
ResNet-18 on CIFAR-10 per cell: a GPU study. This writes random 32x32 images in CIFAR-10's
released pickle format and a grid with the parity config's training settings, on a small
CNN for one epoch: BadNets at 10 % and SIG (clean label) at 5 %, without a defence and with
fine-tuning, two repeats each. It shows what the command prints; its numbers mean nothing.

    python examples/parity_fixture.py /tmp/parity
    triggerlab grid /tmp/parity/spec.yaml --out /tmp/parity/grid
    triggerlab leaderboard /tmp/parity/grid
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
CLASSES.append("truck")


def write_cifar10(root: Path, per_batch: int, seed: int = 0) -> None:
    """``cifar-10-batches-py/``: five training batches, a test batch and the meta file."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({"label_names": CLASSES, "num_vis": 3072}, handle, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, size=per_batch).tolist(),
            "batch_label": name,
        }
        with (folder / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def parity_spec(data_root: Path) -> dict:
    """The parity config's base, shrunk: a small CNN, one epoch, two of its attacks."""
    base = yaml.safe_load((REPO / "configs" / "backdoorbench_badnets_cifar10.yaml").read_text())
    base["data"].update(root=str(data_root), download=False)
    base["model"] = {"name": "small_cnn", "options": {"width": 4, "hidden": 16}}
    base["train"].update(epochs=1, batch_size=32, checkpoint_every=0)
    base["output"] = {"save_model": False}
    signal = {"kind": "signal", "shape": "sine", "delta": 0.157, "frequency": 6}
    return {
        "name": "parity_fixture",
        "base": base,
        "zip": [
            {
                "trigger": [{"kind": "patch", "size": 3, "position": "bottom_right"}, signal],
                "poison.rate": [0.1, 0.05],
                "poison.label_mode": ["all_to_one", "clean_label"],
                "poison.sources": ["all", "non_target"],
            }
        ],
        "grid": {
            "defense": [{"kind": "none"}, {"kind": "finetune", "clean_fraction": 0.05}],
        },
        "repeats": 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for cifar/ and spec.yaml")
    parser.add_argument("--per-batch", type=int, default=200, help="images per CIFAR batch")
    args = parser.parse_args()
    write_cifar10(args.out / "cifar", args.per_batch)
    spec = args.out / "spec.yaml"
    spec.write_text(yaml.safe_dump(parity_spec(args.out / "cifar"), sort_keys=False))
    print(f"wrote {args.out / 'cifar'} and {spec}")


if __name__ == "__main__":
    main()
