"""Running the configured defence after training, and reporting what it achieved.

Repairs (fine-tuning, fine-pruning, Neural Cleanse's unlearning) report every
metric before and after; detectors (STRIP, spectral signatures, activation
clustering) report TPR, FPR, precision, F1 and AUROC; every report names the
clean data the defender used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from triggerlab.defenses.evaluation import detection_metrics
from triggerlab.defenses.features import penultimate_features
from triggerlab.defenses.neural_cleanse import (
    anomaly_indices,
    flagged_classes,
    scan,
    unlearning_set,
)
from triggerlab.defenses.repair import fine_prune, fine_tune
from triggerlab.defenses.samples import activation_clustering, spectral_signatures
from triggerlab.defenses.strip import strip_entropy, strip_threshold
from triggerlab.plots import save_reversed_triggers
from triggerlab.poison import PoisonResult

if TYPE_CHECKING:
    from triggerlab.experiment import Prepared

# Defences that work from clean data the defender holds back (the others inspect the training set).
HOLDS_BACK_DATA = ("finetune", "fine_pruning", "strip", "neural_cleanse")


def cleanse(
    p: Prepared,
    before: dict[str, float],
    evaluate: Callable[[nn.Module], dict[str, float]],
    generator: torch.Generator,
    run_dir: Path,
) -> dict[str, Any]:
    """Neural Cleanse on the held-back clean data; unlearn the flagged classes' triggers."""
    assert p.defender is not None
    settings = p.cfg.defense
    clean = p.defender
    triggers = scan(
        p.model,
        clean.images,
        clean.targets,
        len(p.data.class_names),
        settings.steps,
        settings.cost,
        p.device,
        generator,
    )
    norms = torch.tensor([t.l1 for t in triggers])
    index = anomaly_indices(norms)
    flagged = flagged_classes(norms)
    save_reversed_triggers(
        run_dir / "reversed_triggers.png", triggers, index.tolist(), p.data.class_names
    )
    result: dict[str, Any] = {
        "kind": "neural_cleanse",
        "clean_samples": len(clean),
        "steps": settings.steps,
        "cost": settings.cost,
        "l1": norms.tolist(),
        "anomaly_index": index.tolist(),
        "reversed_success": [t.success for t in triggers],
        "flagged": flagged,
        "target_flagged": p.poison.target in flagged,
        "target_anomaly_index": float(index[p.poison.target]),
    }
    if settings.unlearn and flagged:
        images = unlearning_set(clean.images, [triggers[c] for c in flagged], 0.2, generator)
        fine_tune(
            p.model,
            p.task,
            images,
            clean.targets,
            p.cfg.train,
            settings.epochs,
            settings.lr,
            p.device,
            generator,
        )
        result.update(before=before, after=evaluate(p.model), epochs=settings.epochs)
    return result


def detect_poisoned_samples(p: Prepared, poisoned: PoisonResult) -> dict[str, Any]:
    """Score every training sample from the trained model's penultimate features.

    Classes are analysed one by one; regression has no classes, so its whole
    training set is one group.
    """
    settings = p.cfg.defense
    train = poisoned.train
    features = penultimate_features(p.model, train.images, p.device)
    groups = torch.zeros(len(train), dtype=torch.long) if p.data.is_regression else train.targets
    if settings.kind == "spectral_signatures":
        scores, flagged = spectral_signatures(features, groups, settings.expected_fraction)
    else:
        scores, flagged = activation_clustering(
            features, groups, settings.cluster_share, p.seeds["defense"]
        )
    truth = torch.zeros(len(train), dtype=torch.bool)
    truth[poisoned.indices] = True
    return {
        "kind": settings.kind,
        "clean_samples": 0,
        "training_samples": len(train),
        "poisoned": poisoned.count,
        "flagged": int(flagged.sum()),
        "expected_fraction": settings.expected_fraction,
        "cluster_share": settings.cluster_share,
        "detection": detection_metrics(truth, scores, flagged),
    }


def detect_with_strip(
    p: Prepared, triggered_test: torch.Tensor, generator: torch.Generator
) -> dict[str, Any]:
    """STRIP on the test set: triggered inputs the attack targets against all clean inputs.

    Overlays and the threshold come from the defender's held-back clean data only.
    """
    assert p.defender is not None
    settings = p.cfg.defense
    test = p.data.test

    def entropy(images: torch.Tensor) -> torch.Tensor:
        return strip_entropy(
            p.model,
            images,
            p.defender.images,
            settings.overlays,
            settings.blend,
            p.device,
            generator,
        )

    threshold = strip_threshold(entropy(p.defender.images), settings.false_rejection)
    attacked = p.task.attack_mask(test.targets)
    scores = torch.cat([entropy(test.images), entropy(triggered_test[attacked])])
    labels = torch.cat(
        [
            torch.zeros(len(test), dtype=torch.bool),
            torch.ones(int(attacked.sum()), dtype=torch.bool),
        ]
    )
    return {
        "kind": "strip",
        "clean_samples": len(p.defender),
        "overlays": settings.overlays,
        "blend": settings.blend,
        "false_rejection": settings.false_rejection,
        "threshold": threshold,
        "detection": detection_metrics(labels, -scores, scores < threshold),
    }


def apply_defense(
    p: Prepared,
    before: dict[str, float],
    evaluate: Callable[[nn.Module], dict[str, float]],
    triggered_test: torch.Tensor,
    poisoned: PoisonResult,
    run_dir: Path,
) -> dict[str, Any]:
    """Run the configured defence after training and report what it achieved."""
    settings = p.cfg.defense
    generator = torch.Generator().manual_seed(p.seeds["defense"])
    if settings.kind in ("spectral_signatures", "activation_clustering"):
        return detect_poisoned_samples(p, poisoned)
    assert p.defender is not None
    data = (p.defender.images, p.defender.targets)
    if settings.kind == "strip":
        return detect_with_strip(p, triggered_test, generator)
    if settings.kind == "neural_cleanse":
        return cleanse(p, before, evaluate, generator, run_dir)
    if settings.kind == "finetune":
        result = fine_tune(
            p.model, p.task, *data, p.cfg.train, settings.epochs, settings.lr, p.device, generator
        )
    else:
        result = fine_prune(
            p.model,
            p.task,
            *data,
            p.cfg.train,
            settings.prune_ratio,
            settings.epochs,
            settings.lr,
            p.device,
            generator,
        )
    return {
        "kind": settings.kind,
        "clean_samples": result.clean_samples,
        "epochs": result.epochs,
        "lr": settings.lr,
        "pruned_channels": result.pruned_channels,
        "channels": result.channels,
        "before": before,
        "after": evaluate(p.model),
    }
