"""Configs as immutable data built from TOML files (docs/formats.md, "Config files").

A config file sets parameters at top level, may name a profile it `extends` (default
`base`), and may carry a `[meta]` table that the engine ignores. Built-in profiles are
TOML files shipped inside this package. Nothing in a config file is executed.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .params import KERNEL_FLOATS, LEARNED_BOUNDS, PARAMS, ConfigError, coerce_value

PROFILE_NAMES: tuple[str, ...] = ("base", "production_safe", "high_critical", "chaos_tuning")
_RESERVED = {"extends", "meta"}


@dataclass(frozen=True)
class Config:
    """The effective value of every engine parameter, plus where it came from.

    `values` maps each parameter name of docs/engine.md §14 to its canonical value
    (float, int, or tuple of floats). `source` names the profile or file; `meta` is the
    file's `[meta]` table, kept for provenance and never read by the engine.
    """

    values: Mapping[str, Any]
    source: str = "base"
    extends: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [k for k in PARAMS if k not in self.values]
        if missing:
            raise ConfigError(f"{missing[0]}: missing from the effective config")
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def replace(self, **changes: Any) -> Config:
        """A new config with some parameters changed (validated like a file's)."""
        values = dict(self.values)
        for name, raw in changes.items():
            values[name] = coerce_value(name, raw)
        _check_cross(values, self.source)
        return Config(values, source=self.source, extends=self.extends)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, lists for tuples, keys in the canonical order."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, self.values[k]) for k in PARAMS)}

    @property
    def config_id(self) -> str:
        """First 16 hex digits of SHA-256 of the effective config as compact sorted JSON."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def learned(self) -> dict[str, float]:
        return {k: float(self.values[k]) for k in LEARNED_BOUNDS}

    def kernel_row(self) -> list[float]:
        """The scalar parameters in the order the batch kernel reads them."""
        return [float(self.values[k]) for k in KERNEL_FLOATS] + [float(self.values["CUS_MEAN_WINDOW"])] + [
            *self.values["CUS_WEIGHTS"],
            *self.values["SAFE_ACTION"],
        ]


def _check_cross(values: Mapping[str, Any], where: str) -> None:
    if values["C_MIN"] > values["C_MAX"]:
        raise ConfigError(f"{where}: C_MIN ({values['C_MIN']}) must be <= C_MAX ({values['C_MAX']})")
    grid = values["ACTION_GRID"]
    for x in values["SAFE_ACTION"]:
        if x not in grid:
            raise ConfigError(f"{where}: ACTION_GRID {list(grid)} must contain every value of SAFE_ACTION ({x})")


def _relative_to(extends: str, where: str) -> str:
    """A relative `extends` path is read from the including file's folder."""
    if extends in PROFILE_NAMES or Path(extends).is_absolute() or where.startswith("profile "):
        return extends
    return str(Path(where).parent / extends)


def _read_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None


def _profile_text(name: str) -> str:
    return resources.files(__package__).joinpath("profiles", f"{name}.toml").read_text()


def parse_config(data: Mapping[str, Any], where: str, _seen: tuple[str, ...] = ()) -> Config:
    """Build a Config from an already-parsed TOML table."""
    extends = data.get("extends", "base" if where != "profile base" else None)
    if extends is not None and not isinstance(extends, str):
        raise ConfigError(f"{where}: extends: expected a profile name or path, got {extends!r}")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: meta: expected a table")
    if extends is None:
        values: dict[str, Any] = {}
    else:
        if extends in _seen:
            raise ConfigError(f"{where}: extends: cycle through {extends!r}")
        values = dict(load_config(_relative_to(extends, where), _seen=(*_seen, extends)).values)
    for key, raw in data.items():
        if key in _RESERVED:
            continue
        try:
            values[key] = coerce_value(key, raw)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if extends is None:
        missing = [k for k in PARAMS if k not in values]
        if missing:
            raise ConfigError(f"{where}: {missing[0]}: missing (a config without `extends` sets every key)")
    _check_cross(values, where)
    return Config(values, source=where.removeprefix("profile "), extends=extends, meta=meta)


def load_config(name_or_path: str | Path = "base", *, _seen: tuple[str, ...] = ()) -> Config:
    """Load a built-in profile by name, or a TOML config file by path."""
    name = str(name_or_path)
    if name in PROFILE_NAMES and not Path(name).suffix:
        return parse_config(_read_toml(_profile_text(name), f"profile {name}"), f"profile {name}", _seen)
    path = Path(name)
    if not path.is_file():
        known = ", ".join(PROFILE_NAMES)
        raise ConfigError(f"{name}: no such profile ({known}) or config file")
    return parse_config(_read_toml(path.read_text(), name), name, _seen)


def profile_text(name: str) -> str:
    """The TOML source of a built-in profile."""
    if name not in PROFILE_NAMES:
        raise ConfigError(f"{name}: no such profile ({', '.join(PROFILE_NAMES)})")
    return _profile_text(name)
