"""Configuration: one small dataclass per component (model.py: the model; sections.py: data, training, evaluation,
the run), field domains (domains.py), and their files and overrides (files.py).

An attention variant's settings (model.las, model.t5, ...) are a dataclass beside the variant in txl/attention/,
registered as a model section with `variant_settings`.

Each section checks its own fields (`validate`); the checks that need the plan
language or the attention variants are txl.model.plans.check_model and check_run.
"""

from txl.config.domains import ConfigError
from txl.config.files import apply_overrides, differences, from_dict, load_config, save_config, set_path, to_dict
from txl.config.model import LayerConfig, ModelConfig, variant_settings
from txl.config.sections import DataConfig, EvalConfig, RunConfig, SyntheticConfig, TrainConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LayerConfig",
    "ModelConfig",
    "RunConfig",
    "SyntheticConfig",
    "TrainConfig",
    "apply_overrides",
    "differences",
    "from_dict",
    "load_config",
    "save_config",
    "set_path",
    "to_dict",
    "variant_settings",
]
