"""Engine configs: the parameter table, learning bounds, built-in profiles and loader."""

from .loader import (
    PROFILE_NAMES,
    PROFILES_ENV,
    Config,
    find_profile,
    is_profile_name,
    list_profiles,
    load_config,
    parse_config,
    profile_search_path,
    profile_text,
)
from .params import LEARNED_BOUNDS, LEARNED_PARAMS, PARAMS, ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "LEARNED_BOUNDS",
    "LEARNED_PARAMS",
    "PARAMS",
    "PROFILE_NAMES",
    "PROFILES_ENV",
    "find_profile",
    "is_profile_name",
    "list_profiles",
    "load_config",
    "parse_config",
    "profile_search_path",
    "profile_text",
]
