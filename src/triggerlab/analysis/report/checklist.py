"""Reference 004's BadNets reporting checklist, filled from a grid's configs and results."""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from triggerlab.catalogue.triggers import describe_spec
from triggerlab.config import ExperimentConfig
from triggerlab.grid.plan import PlannedRun


def _values(plan: list[PlannedRun], getter: Any) -> str:
    values = list(dict.fromkeys(json.dumps(getter(r.config), default=str) for r in plan))
    return ", ".join(html.escape(v.strip('"')) for v in values)


def defense_text(runs: list[PlannedRun]) -> str:
    defended = [r for r in runs if r.config.defense.kind != "none"]
    if not defended:
        return "none in this grid: no defence saw the data, the weights or the predictions"
    kinds = sorted({r.config.defense.kind for r in defended})
    holding = [r for r in defended if r.config.defense.holds_back_data]
    data = []
    if holding:
        fractions = _values(holding, lambda c: c.defense.clean_fraction)
        data.append(f"the defender holds back a clean share {fractions} of the training set")
    if len(holding) < len(defended):
        data.append("the training-sample detectors inspect the training set the model saw")
    return (
        f"{', '.join(kinds)}: {'; '.join(data)}; every defence sees the model's weights and "
        "never sees test data. Metrics after a repair are the <code>*_after</code> columns, "
        "a detector's are the <code>detection_*</code> columns"
    )


def _values_of(runs: list[PlannedRun], path: str) -> str:
    """Distinct values of a dotted config key over the runs."""

    def get(cfg: ExperimentConfig) -> Any:
        node: Any = cfg
        for part in path.split("."):
            node = getattr(node, part)
        return node

    return _values(runs, get)


def _false_positive_text(table: pd.DataFrame, lead: str = "asr") -> str:
    """How often the trigger 'succeeds' on models that were never poisoned."""
    baseline = table[(table["role"] == "baseline") | (table.get("poison_count", 0) == 0)]
    success = (
        lead if lead in table else next((c for c in table if c.startswith("attack_success_")), None)
    )
    if success is None or success not in baseline or not baseline[success].notna().any():
        return "no clean baseline in this grid"
    return (
        f"{success} of the trigger on clean (rate 0) models: "
        f"mean {baseline[success].mean():.3f} "
        f"over {baseline[success].notna().sum()} runs"
    )


def _poisoning_text(runs: list[PlannedRun], table: pd.DataFrame) -> str:
    modes = {r.config.poison_label_mode for r in runs}
    counts = (
        table.loc[table["role"] == "grid", "poison_count"].dropna()
        if "poison_count" in table
        else []
    )
    count_text = (
        f"{int(min(counts))} to {int(max(counts))} samples per run"
        if len(counts)
        else "not run yet"
    )

    def values(path: str) -> str:
        return _values_of(runs, path)

    schedules = {r.config.poison_schedule for r in runs}
    per_batch = (
        "; per-batch runs poison the first int(batch x rate) eligible samples of every "
        "training batch anew (counts per epoch) and hand defences a fixed set drawn as above"
        if "per_batch" in schedules
        else ""
    )
    return (
        f"rate {values('poison.rate')} (count {values('poison.count')}), {count_text}; "
        f"mode {values('poison.mode')}; label mode {', '.join(sorted(modes))}; "
        f"schedule {', '.join(sorted(schedules))}; "
        f"source classes {values('poison.source_classes')} (null: all eligible); "
        f"target {values('poison.target')}; sampling: uniform without replacement from eligible "
        "samples (non-target for all-to-one, target class for clean-label), seeded per run; "
        f"poisoned indices saved in every run's poisoned_indices.csv{per_batch}"
    )


def _training_text(runs: list[PlannedRun]) -> str:
    def values(path: str) -> str:
        return _values_of(runs, path)

    stages = "in one run"
    if any(run.config.data.split == "pretune_finetune" for run in runs):
        stages = (
            "in two stages (reference 000's protocol: pre-tuned on every subject but the "
            f"held-out one {values('data.test_subjects')} (null: the last), then fine-tuned on "
            f"{values('data.finetune_count')} of its images for "
            f"{values('train.finetune_epochs')} epochs at lr {values('train.finetune_lr')} "
            "(null: lr), both stages poisoned; tested on its other images)"
        )
    return (
        f"clean and poisoned examples trained together from scratch {stages}; "
        f"model {values('model.name')}, optimizer {values('train.optimizer')}, "
        f"lr {values('train.lr')}, epochs {values('train.epochs')}, "
        f"batch size {values('train.batch_size')}; data {values('data.name')}"
    )


STAGE_TEXT = {
    "model_input": "stamped on the images as the model takes them (after data.resize; "
    "fractional sizes rounded half up)",
    "native": "stamped on the dataset's images at their stored size (fractional sizes "
    "truncated, max(1, int(f x side)), as reference 001's code does), then resized with the "
    "clean images",
}


def _stage_text(runs: list[PlannedRun]) -> str:
    """Where the triggers were stamped (``trigger.stage``), in words."""
    stages = sorted({run.config.trigger.stage for run in runs})
    return "; ".join(f"stage {s}: {STAGE_TEXT[s]}" for s in stages)


def checklist(plan: list[PlannedRun], table: pd.DataFrame, lead: str = "asr") -> str:
    """Reference 004's BadNets reporting checklist, filled from the configs and results."""
    grid_runs = [r for r in plan if r.role == "grid"]
    modes = {r.config.poison_label_mode for r in grid_runs}
    access = "training data and labels (label-flipping data poisoning)"
    if modes == {"clean_label"}:
        access = "training data only: clean-label poisoning, labels untouched"
    triggers = _values(grid_runs, lambda c: describe_spec(c.trigger))
    if "clean_error" in table:
        measured = (
            "clean error, attack error to the target, attack success within the tolerances, mean "
            "shift towards the target, clean error increase against paired clean baselines"
        )
    else:
        measured = (
            "clean accuracy, attack success rate (target class excluded), ASR with the target "
            "class, robust accuracy, clean accuracy drop against paired clean baselines"
        )
    if lead == "asr_all" and "clean_error" not in table:
        measured = "led by the ASR with the target class (asr_all, as the references' code); " + (
            measured
        )
    metrics = f"{measured}; false positives: {_false_positive_text(table, lead)}"
    rows = [
        ("Attacker access", access + "; the training procedure and model are not touched"),
        ("Poisoning", _poisoning_text(grid_runs, table)),
        (
            "Trigger",
            f"{triggers}; digital (added to the stored 8-bit images), not physical; "
            f"{_stage_text(grid_runs)}; the same specification triggers the test set",
        ),
        ("Training", _training_text(grid_runs)),
        ("Metrics", metrics),
        (
            "Defense test",
            defense_text(grid_runs),
        ),
    ]
    body = "".join(
        f'<tr><td class="key"><b>{k}</b></td><td class="key">{v}</td></tr>' for k, v in rows
    )
    return (
        f"<table><tr><th class='key'>Field</th><th class='key'>This study</th></tr>{body}</table>"
    )
