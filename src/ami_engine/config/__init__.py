"""Engine configs: the parameter table, learning bounds, built-in profiles and loader."""

from .loader import PROFILE_NAMES, Config, load_config, parse_config, profile_text
from .params import KERNEL_FLOATS, LEARNED_BOUNDS, LEARNED_PARAMS, PARAMS, ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "KERNEL_FLOATS",
    "LEARNED_BOUNDS",
    "LEARNED_PARAMS",
    "PARAMS",
    "PROFILE_NAMES",
    "load_config",
    "parse_config",
    "profile_text",
]
