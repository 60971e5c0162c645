"""One run seed, many independent random streams: poisoning, the triggered test set, weight
initialisation, batch order, the defence, fine-tuning, augmentation and per-batch poisoning."""

from __future__ import annotations

import numpy as np

# Appending a stream keeps the others' seeds: SeedSequence children depend on their index only.
SEED_STREAMS = (
    "poison",
    "test_trigger",
    "init",
    "order",
    "defense",
    "finetune",
    "augment",
    "per_batch",
)


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for each random stream, all fixed by the one run seed."""
    children = np.random.SeedSequence(seed).spawn(len(SEED_STREAMS))
    return {
        name: int(child.generate_state(1)[0])
        for name, child in zip(SEED_STREAMS, children, strict=True)
    }
