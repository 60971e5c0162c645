"""The one catalogue of metric names: what each is called, its unit, and whether it is a share.

Every table, figure, report and console line reads labels here. Families of
names are resolved by pattern: ``attack_success_<tau>``, ``clean_mae_<output>``,
and the prefixed or suffixed copies a defence or a two-stage protocol adds
(``<metric>_after``, ``detection_<metric>``, ``pretuned_<metric>``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

LABEL_UNIT = "label unit"  # a regression error: degrees for gaze and head pose, else label units


# The unit of a regression error for each kind of continuous label (``data.labels``): gaze is
# compared as the angle between directions, head pose as angles, anything else in its own unit.
ERROR_UNITS = {"gaze": "degrees", "headpose": "degrees", "generic": "label units"}


def error_unit(label_kind: str | None) -> str | None:
    """The unit of a run's errors from its summary's ``data.label_kind``; None when the run
    has no continuous labels (classification)."""
    return ERROR_UNITS.get(label_kind or "")


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # axes, table headers, console
    short: str  # progress lines and narrow columns
    fraction: bool = False  # a share bounded in [0, 1]
    unit: str = ""  # "" (none), a unit, or LABEL_UNIT
    decimals: int | None = None  # in tables: None is 3 for a share, 2 for the rest

    def unit_text(self, label_unit: str | None = None) -> str:
        """The unit to print, with a regression error's unit filled in when it is known."""
        if self.unit == LABEL_UNIT:
            return label_unit or ""
        return self.unit


_CATALOGUE = (
    Metric("clean_acc", "clean accuracy (CA)", "CA", fraction=True),
    Metric("asr", "attack success rate (ASR)", "ASR", fraction=True),
    Metric("asr_all", "ASR incl. target class", "ASR all", fraction=True),
    Metric("robust_acc", "robust accuracy (RA)", "RA", fraction=True),
    Metric("clean_acc_drop", "clean accuracy drop (baseline CA - CA)", "CAD", decimals=3),
    Metric("clean_error", "clean error", "err", unit=LABEL_UNIT),
    Metric("attack_error", "attack error (to the target)", "atk err", unit=LABEL_UNIT),
    Metric("mean_shift", "mean shift towards the target", "shift", unit=LABEL_UNIT),
    Metric(
        "clean_error_increase", "clean error increase over the baseline", "CEI", unit=LABEL_UNIT
    ),
    Metric("bin_acc", "bin accuracy (clean)", "bin acc", fraction=True),
    Metric("bin_asr", "triggered predictions in the target's bin", "bin ASR", fraction=True),
    Metric("train_loss", "training loss", "loss"),
    Metric("l0_fraction", "changed pixels (L0 fraction)", "L0", fraction=True),
    Metric("l2_mean", "mean L2 distance", "L2"),
    Metric("linf_mean", "mean L-infinity distance", "Linf", fraction=True),
    Metric("psnr_db", "PSNR (per image)", "PSNR", unit="dB"),
    Metric("psnr_pooled_db", "PSNR (pooled MSE)", "PSNR pooled", unit="dB"),
    Metric("ssim", "SSIM", "SSIM", decimals=3),
    Metric("poison_count", "poisoned samples", "poisoned"),
    Metric("poison_fraction", "poisoned fraction", "fraction", fraction=True),
    Metric("total_s", "run time", "time", unit="s"),
    Metric("train_s", "training time", "train time", unit="s"),
    Metric("train_images_per_s", "training throughput", "img/s", unit="images/s"),
    Metric("der", "defence effectiveness rating (DER)", "DER", fraction=True),
    Metric("tpr", "true positive rate", "TPR", fraction=True),
    Metric("fpr", "false positive rate", "FPR", fraction=True),
    Metric("precision", "precision", "precision", fraction=True),
    Metric("f1", "F1", "F1", fraction=True),
    Metric("auroc", "AUROC", "AUROC", fraction=True),
    Metric("tpr_at_1pct_fpr", "TPR at 1 % FPR", "TPR@1%FPR", fraction=True),
    Metric("tpr_at_5pct_fpr", "TPR at 5 % FPR", "TPR@5%FPR", fraction=True),
)
CATALOGUE: dict[str, Metric] = {m.name: m for m in _CATALOGUE}

# A run's metrics computed from the clean test images and their labels alone: neither the
# trigger nor the attack's target plays a part in them (``attack/tasks.py``). The others
# (ASR, robust accuracy, attack errors, ...) are measured on triggered images.
CLEAN_DATA_METRICS = frozenset({"train_loss", "clean_acc", "clean_error", "bin_acc"})


def of_clean_data(name: str) -> bool:
    """Whether metric ``name`` reads only the clean test images and their labels."""
    return name in CLEAN_DATA_METRICS or name.startswith("clean_mae_")


# The order results tables list the task metrics in.
TASK_ORDER = (
    "clean_acc",
    "asr",
    "asr_all",
    "robust_acc",
    "clean_acc_drop",
    "clean_error",
    "attack_error",
    "mean_shift",
    "clean_error_increase",
)
STEALTH = ("l0_fraction", "l2_mean", "linf_mean", "psnr_db", "psnr_pooled_db", "ssim")
# Prefixes and suffixes that make a copy of a metric measured at another moment.
_VARIANTS = (
    ("pretuned_", "", "{} after pre-tuning", "pre {}"),
    ("", "_after", "{} after the defence", "{} after"),
    ("detection_", "", "detection {}", "det {}"),
)


def metric(name: str) -> Metric:
    """The catalogue entry of ``name``, patterns included; unknown names label themselves."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    if name.startswith("attack_success_"):
        tau = name.removeprefix("attack_success_")
        return Metric(name, f"attack success within {tau}", f"AS@{tau}", fraction=True)
    if name.startswith("clean_mae_"):
        output = name.removeprefix("clean_mae_")
        return Metric(name, f"clean MAE of {output}", f"MAE {output}", unit=LABEL_UNIT)
    for prefix, suffix, label, short in _VARIANTS:
        inner = name.removeprefix(prefix).removesuffix(suffix)
        if (prefix or suffix) and inner != name and name == f"{prefix}{inner}{suffix}":
            base = metric(inner)
            return replace(
                base, name=name, label=label.format(base.label), short=short.format(base.short)
            )
    return Metric(name, name, name)


def metric_label(name: str) -> str:
    return metric(name).label


def metric_text(name: str, label_unit: str | None = None) -> str:
    """The label with its unit, a regression error's and tolerance's unit filled in:
    ``clean error (degrees)``, ``attack success within 5 degrees``."""
    entry = metric(name)
    if name.removeprefix("pretuned_").startswith("attack_success_") and label_unit:
        return f"{entry.label} {label_unit}"
    unit = entry.unit_text(label_unit)
    return f"{entry.label} ({unit})" if unit else entry.label


def is_fraction(name: str) -> bool:
    return metric(name).fraction


def decimals(name: str) -> int:
    """Decimals a table shows: three for a share and for values on its scale (a drop in
    accuracy, SSIM: 0.957 against 0.961 must show), two for the rest."""
    entry = metric(name)
    if entry.decimals is not None:
        return entry.decimals
    return 3 if entry.fraction else 2


def metric_columns(columns: Iterable[str]) -> list[str]:
    """The metrics among ``columns`` (a results table's), in a stable order: the task's,
    then patterned families, then defence, detection and pre-tuning copies."""
    present = list(columns)
    named = [m for m in TASK_ORDER if m in present]
    extra = sorted(
        c
        for c in present
        if c.startswith(("attack_success_", "clean_mae_", "bin_")) and not c.endswith("_after")
    )
    after = sorted(c for c in present if c.endswith("_after")) + [
        c for c in ("der",) if c in present
    ]
    detection = sorted(c for c in present if c.startswith("detection_"))
    pretuned = sorted(c for c in present if c.startswith("pretuned_"))
    return named + extra + after + detection + pretuned
