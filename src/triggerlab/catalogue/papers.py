"""Each trigger kind's paper, the label mode that paper poisoned with, and named presets: the
settings a paper's code (or BackdoorBench's) ran, trigger and poisoning together.

``trigger.preset: <name>`` fills every trigger setting the config leaves out with the
preset's, and every ``poison`` setting the config leaves out with the preset's poisoning
(its label mode, or BackdoorBench's dirty-label form of a clean-label paper).
``poison.label_mode: paper``, the default, is each kind's ``Paper.label_mode`` (SIG and
Refool are clean-label; see ``config.schema.paper_label_mode``). ``triggerlab triggers list``
prints the paper and its label mode beside each kind. Torch-free, like the rest of the
catalogue; the sources (repository, file, line) are in ``docs/authors_code.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Named settings: ``trigger`` parameters and ``poison`` settings, and where they come from."""

    trigger: dict[str, Any]
    poison: dict[str, Any]
    source: str


@dataclass(frozen=True)
class Paper:
    """The paper a kind implements and the label mode it poisoned with."""

    citation: str
    label_mode: str  # one of PoisonConfig.label_mode's values, or "any" (a combinator)
    presets: dict[str, Preset] = field(default_factory=dict)


DIRTY = {"label_mode": "all_to_one"}
# BackdoorBench draws its dirty-label poisoned samples from every class, the target's too
# (utils/backdoor_generate_poison_index.py:38-63).
BB_DIRTY = {"label_mode": "all_to_one", "sources": "all"}

TRIGGER_PAPERS: dict[str, Paper] = {
    "patch": Paper(
        "Gu, Dolan-Gavitt & Garg 2017 (BadNets)",
        "all_to_one",
        {
            "backdoorbench": Preset(
                {"size": 3, "position": "bottom_right", "margin": 0, "color": "white"},
                BB_DIRTY,
                "BackdoorBench config/attack/badnet/default.yaml; resource/badnet",
            )
        },
    ),
    "image": Paper("Gu, Dolan-Gavitt & Garg 2017 (BadNets); reference 000's flower", "all_to_one"),
    "frame": Paper("reference 000 (BadNets on gaze regression)", "all_to_one"),
    "lines": Paper("reference 000 (BadNets on gaze regression)", "all_to_one"),
    "blend": Paper(
        "Chen, Liu, Li, Lu & Song 2017 (Blended)",
        "all_to_one",
        {
            "backdoorbench": Preset(
                {"opacity": 0.2},
                BB_DIRTY,
                "BackdoorBench config/attack/blended/default.yaml (its Hello-Kitty image is not "
                "shipped: give pattern image and path)",
            )
        },
    ),
    "signal": Paper(
        "Barni, Kallas & Tondi 2019 (SIG)",
        "clean_label",
        {
            "backdoorbench": Preset(
                {"shape": "sine", "delta": 40 / 255, "frequency": 6.0, "first_column": 0},
                {"label_mode": "clean_label"},
                "BackdoorBench config/attack/sig/default.yaml:1-6, attack/sig.py:78-85, "
                "utils/bd_img_transform/sig.py:41-53",
            )
        },
    ),
    "random": Paper("reference 000 (random colour, size and position)", "all_to_one"),
    "warp": Paper(
        "Nguyen & Tran 2021 (WaNet)",
        "all_to_one",
        {
            "authors": Preset(
                {
                    "strength": 0.5,
                    "grid": 4,
                    "grid_rescale": 1.0,
                    "noise_mode": True,
                    "cross_ratio": 2.0,
                },
                DIRTY,
                "VinAIResearch/Warping-based_Backdoor_Attack-release config.py:30-34",
            )
        },
    ),
    "quantize": Paper(
        "Wang, Zhai & Ma 2022 (BppAttack)",
        "all_to_one",
        {
            "authors": Preset(
                {"bits": 3, "dither": False},
                DIRTY,
                "RU-System-Software-and-Security/BppAttack config.py:18-30 (squeeze_num 8, "
                "dithering off)",
            )
        },
    ),
    "low_frequency": Paper("Zeng, Park, Mao, Jia & Ding 2021 (LF)", "all_to_one"),
    "reflection": Paper(
        "Liu, Ma, Bailey & Lu 2020 (Refool)",
        "clean_label",
        {
            "authors": Preset(
                {"formula": "authors", "mode": "mixed", "ghost_rate": 0.39},
                {"label_mode": "clean_label"},
                "DreamtaleCore/Refool scripts/insert_reflection.py:47-149, 185 (ghost_rate "
                "0.39, alpha_t and the rest drawn per image)",
            ),
            "backdoorbench": Preset(
                {"formula": "authors", "mode": "mixed", "ghost_rate": 0.49, "strength": 0.6},
                BB_DIRTY,
                "BackdoorBench config/attack/refool/default.yaml (alpha_t 0.4, clean_label "
                "False; its reflection folder: give path)",
            ),
        },
    ),
    "adaptive_blend": Paper(
        "Qi, Xie, Li, Wang & Mittal 2023 (Adaptive-Blend)",
        "all_to_one",
        {
            "authors": Preset(
                {
                    "opacity": 0.2,
                    "train_opacity": 0.15,
                    "pieces": 16,
                    "masked_pieces": 8,
                    "conservatism": 0.5,
                },
                DIRTY,
                "vtu81/backdoor-toolbox poison_tool_box/adaptive_blend.py:24-135, "
                "README.md:120-126",
            )
        },
    ),
    "sample_specific": Paper("stands in for Li et al. 2021 (ISSBA); not ISSBA", "all_to_one"),
    "compose": Paper("a combination of other kinds", "any"),
}


def preset_of(kind: str, name: str) -> Preset | None:
    """The preset ``name`` of trigger ``kind``; None when it has none of that name."""
    paper = TRIGGER_PAPERS.get(kind)
    return None if paper is None else paper.presets.get(name)


def preset_names(kind: str) -> list[str]:
    paper = TRIGGER_PAPERS.get(kind)
    return [] if paper is None else list(paper.presets)
