"""The experiment config: a validated pydantic model, loaded from YAML with ``KEY=VALUE``
overrides.

``schema`` holds the sections, ``overrides`` the ``KEY=VALUE`` handling,
``messages`` turns validation errors into one line per key, and ``loading``
reads YAML. ``load_config`` turns any problem into one ``ConfigError`` whose
message names the offending keys.
"""

from triggerlab.config.loading import load_config, override, validate_config
from triggerlab.config.messages import format_validation_error, section_keys
from triggerlab.config.overrides import (
    apply_override,
    apply_overrides,
    parse_override,
    set_dotted,
    split_assignments,
)
from triggerlab.config.schema import (
    DEFAULT_EXPERIMENT,
    UNION_SECTIONS,
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    ModelConfig,
    OutputConfig,
    PoisonConfig,
    TrainConfig,
)
from triggerlab.config.yaml_input import read_yaml

__all__ = [
    "DEFAULT_EXPERIMENT",
    "UNION_SECTIONS",
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OutputConfig",
    "PoisonConfig",
    "TrainConfig",
    "apply_override",
    "apply_overrides",
    "format_validation_error",
    "load_config",
    "override",
    "parse_override",
    "read_yaml",
    "section_keys",
    "set_dotted",
    "split_assignments",
    "validate_config",
]
