"""Defences against backdoors: one spec per kind (``defense: {kind: ...}``), one module each.

Adding a defence is one new module with a ``DefenseSpec`` subclass (its
parameters, what it needs, and ``run``) and one line in ``DefenseKind``
below. Repairs: ``finetune``, ``fine_pruning``, ``nad``, ``anp``, ``clp`` (data-free),
``ibau``; training-time: ``abl``; input detectors: ``strip``, ``scale_up``;
training-sample detectors: ``spectral_signatures``, ``activation_clustering``;
model inspection with repair: ``neural_cleanse``. The evaluation of every
kind is shared (``defenses/evaluation.py``).
"""

from typing import Annotated, get_args

from pydantic import Field

from triggerlab.defenses.abl import AblSpec
from triggerlab.defenses.activation_clustering import ActivationClusteringSpec
from triggerlab.defenses.anp import AnpSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, DefenseSpec, NoDefenseSpec
from triggerlab.defenses.clp import ClpSpec
from triggerlab.defenses.fine_pruning import FinePruningSpec
from triggerlab.defenses.finetune import FinetuneSpec
from triggerlab.defenses.ibau import IbauSpec
from triggerlab.defenses.nad import NadSpec
from triggerlab.defenses.neural_cleanse import NeuralCleanseSpec
from triggerlab.defenses.scale_up import ScaleUpSpec
from triggerlab.defenses.spectral_signatures import SpectralSignaturesSpec
from triggerlab.defenses.strip import StripSpec

DefenseKind = Annotated[
    NoDefenseSpec
    | FinetuneSpec
    | FinePruningSpec
    | StripSpec
    | SpectralSignaturesSpec
    | ActivationClusteringSpec
    | NeuralCleanseSpec
    | NadSpec
    | AnpSpec
    | ClpSpec
    | IbauSpec
    | AblSpec
    | ScaleUpSpec,
    Field(discriminator="kind"),
]

DEFENSE_KINDS: dict[str, type[DefenseSpec]] = {
    spec.model_fields["kind"].default: spec for spec in get_args(get_args(DefenseKind)[0])
}

__all__ = ["DEFENSE_KINDS", "DefenseInputs", "DefenseKind", "DefenseOutcome", "DefenseSpec"]
