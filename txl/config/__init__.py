"""Configuration: one small dataclass per component (sections.py) and their files and overrides (files.py).

Each section checks its own fields (`validate`); the checks that need the plan
language or the attention variants are txl.plans.check_model and check_run.
"""

from txl.config.files import apply_overrides, from_dict, load_config, save_config, set_path, to_dict
from txl.config.sections import (
    ConfigError,
    DataConfig,
    EvalConfig,
    FastRPBConfig,
    LaSConfig,
    LayerConfig,
    ModelConfig,
    RunConfig,
    SIKFConfig,
    SyntheticConfig,
    T5Config,
    TrainConfig,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FastRPBConfig",
    "LaSConfig",
    "LayerConfig",
    "ModelConfig",
    "RunConfig",
    "SIKFConfig",
    "SyntheticConfig",
    "T5Config",
    "TrainConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "save_config",
    "set_path",
    "to_dict",
]
