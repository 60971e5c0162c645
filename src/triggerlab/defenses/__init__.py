"""Defences against backdoors. So far: model repair by fine-tuning and fine-pruning.

A defender only ever sees clean data it holds back from the training set
(``defense.clean_fraction``), never the test set: its choices (which channels
to prune, how long to fine-tune) cannot look at the attack's success.
"""

from triggerlab.defenses.repair import (
    RepairResult,
    fine_prune,
    fine_tune,
    last_conv,
    select_pruned_channels,
)

__all__ = ["RepairResult", "fine_prune", "fine_tune", "last_conv", "select_pruned_channels"]
