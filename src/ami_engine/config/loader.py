"""Configs as immutable data built from TOML files (docs/formats.md, "Config files").

A config file sets parameters at top level, may name a profile it `extends` (default
`base`), and may carry a `[meta]` table that the engine ignores. Built-in profiles are
TOML files shipped inside this package. Nothing in a config file is executed.

A file whose `[meta]` carries a `config_id` (an applied profile, a suggestion) claims
that digest of its effective values: loading it checks the claim, so a file edited after
it was written is refused. Profiles are found by name on a search path: `./profiles`,
then the folders in AMI_ENGINE_PROFILES, then the built-ins; a file on the search path
may not take a built-in's name, and it must carry its `config_id` (it is an applied
profile).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import InputError
from ..io.files import InMemoryFile, read_once
from ..io.tomlfile import MAX_TOML_BYTES, parse_toml, read_toml_text
from .params import KERNEL_ROW, LEARNED_BOUNDS, PARAMS, ConfigError, coerce_value

_LONGEST_WINDOW = 2**53

PROFILE_NAMES: tuple[str, ...] = ("base", "production_safe", "high_critical", "chaos_tuning")
PROFILES_ENV = "AMI_ENGINE_PROFILES"
LOCAL_PROFILES = "profiles"
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
        """The parameters the engine's kernels read, as floats laid out as KERNEL_ROW. A
        CUS_MEAN_WINDOW beyond 2**53 (longer than any stream can be, and than a float holds
        exactly) is given as 2**53: the same decisions, and a whole number the kernels can
        take as an integer."""
        row: list[float] = []
        for name, width in KERNEL_ROW:
            value = self.values[name]
            if PARAMS[name].kind == "int":
                value = min(value, _LONGEST_WINDOW)
            row += map(float, value) if width > 1 else [float(value)]
        return row


def _check_cross(values: Mapping[str, Any], where: str) -> None:
    if values["C_MIN"] > values["C_MAX"]:
        raise ConfigError(f"{where}: C_MIN ({values['C_MIN']}) must be <= C_MAX ({values['C_MAX']})")
    grid = values["ACTION_GRID"]
    for x in values["SAFE_ACTION"]:
        if x not in grid:
            raise ConfigError(f"{where}: ACTION_GRID {list(grid)} must contain every value of SAFE_ACTION ({x})")


def is_profile_name(text: str) -> bool:
    """A bare name such as `tuned` (no folder, no suffix): looked up on the search path."""
    return bool(text) and "/" not in text and os.sep not in text and not Path(text).suffix and text not in (".", "..")


def _relative_to(extends: str, where: str) -> str:
    """A relative `extends` path is read from the including file's folder; a bare name is
    a profile's."""
    if is_profile_name(extends) or Path(extends).is_absolute() or where.startswith("profile "):
        return extends
    return str(Path(where).parent / extends)


def profile_search_path() -> list[tuple[Path, str]]:
    """The folders searched for profiles by name, in order, each with where it came from."""
    folders = [(Path(LOCAL_PROFILES), f"./{LOCAL_PROFILES}")]
    for entry in os.environ.get(PROFILES_ENV, "").split(os.pathsep):
        if entry:
            folders.append((Path(entry), PROFILES_ENV))
    return folders


def _refuse_shadow(name: str) -> None:
    for folder, _ in profile_search_path():
        candidate = folder / f"{name}.toml"
        if candidate.exists():
            raise ConfigError(f"{candidate}: a profile on the search path cannot take the built-in name "
                              f"{name!r}; rename the file")


def find_profile(name: str) -> Path | None:
    """The file of profile `name` on the search path (built-ins aside), or None."""
    for folder, _ in profile_search_path():
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def list_profiles() -> list[tuple[str, str, Path | None]]:
    """(name, where it came from, file) of every profile found by name: the search path's
    first, in search order and by name, then the built-ins (file None)."""
    found: dict[str, tuple[str, str, Path | None]] = {}
    for folder, origin in profile_search_path():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            name = path.stem
            if name in PROFILE_NAMES:
                _refuse_shadow(name)
            if is_profile_name(name) and path.is_file():
                found.setdefault(name, (name, origin, path))
    return [*found.values(), *((name, "built-in", None) for name in PROFILE_NAMES)]


def _read_toml(text: str, where: str) -> dict[str, Any]:
    return parse_toml(text, where)


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
    claimed = meta.get("config_id")
    if claimed is not None and not isinstance(claimed, str):
        raise ConfigError(f"{where}: meta.config_id: expected a string, got {claimed!r}")
    if extends is None:
        values: dict[str, Any] = {}
    else:
        if extends in _seen:
            raise ConfigError(f"{where}: extends: cycle through {extends!r}")
        try:
            values = dict(load_config(_relative_to(extends, where), _seen=(*_seen, extends)).values)
        except InputError as exc:  # a bad file it extends, or one that cannot be read (a FIFO, a folder)
            raise ConfigError(f"{where}: extends: {exc}") from None
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
    config = Config(values, source=where.removeprefix("profile "), extends=extends, meta=meta)
    if claimed is not None and claimed != config.config_id:
        raise ConfigError(f"{where}: [meta] config_id is {claimed}, its values give {config.config_id}: the file "
                          "(or one it extends) was changed after it was written; refusing it")
    return config


def load_config(name_or_path: str | Path = "base", *, _seen: tuple[str, ...] = ()) -> Config:
    """Load a profile by name (the search path, then the built-ins), or a TOML config file
    by path."""
    name = str(name_or_path)
    if name in PROFILE_NAMES:
        _refuse_shadow(name)
        return parse_config(_read_toml(_profile_text(name), f"profile {name}"), f"profile {name}", _seen)
    if is_profile_name(name):
        found = find_profile(name)
        if found is not None:
            return _load_applied_profile(found, _seen)
    path = Path(name)
    if not _exists(path):
        known = ", ".join(PROFILE_NAMES)
        folders = ", ".join(str(folder) for folder, _ in profile_search_path())
        raise ConfigError(f"{name}: no such profile (built-in: {known}; searched {folders}) or config file")
    return parse_config(_read_toml(read_toml_text(config_file(path)), name), name, _seen)


_ONE_READ: ContextVar[dict[str, InMemoryFile] | None] = ContextVar("ami_engine_config_reads", default=None)


@contextmanager
def one_read_per_file() -> Iterator[None]:
    """Inside, each config file is read from disk once, and every later load of the same
    path gets those bytes: the gate checks a file's SHA-256 and parses it, walks its
    `extends` chain for the baseline and again for the yardstick, and all of them see one
    version of it, however the file is replaced meanwhile."""
    if _ONE_READ.get() is not None:
        yield
        return
    token = _ONE_READ.set({})
    try:
        yield
    finally:
        _ONE_READ.reset(token)


def config_file(path: str | Path) -> InMemoryFile:
    """The raw bytes of a config file, read once inside one_read_per_file (else each time)."""
    files = _ONE_READ.get()
    key = os.path.abspath(path)
    if files is not None and key in files:
        return files[key]
    # A config is a few kilobytes: a file far larger is refused before it is read whole.
    if os.path.isfile(path) and os.path.getsize(path) > MAX_TOML_BYTES:
        raise InputError(str(path), None, None, f"larger than {MAX_TOML_BYTES >> 20} MiB: too large for a config")
    found = read_once(path)
    if files is not None:
        files[key] = found
    return found


def _exists(path: Path) -> bool:
    """Whether `path` names something (which the reading then refuses unless it is a
    regular file); a name the system cannot even look up (too long) does not."""
    try:
        return path.exists()
    except OSError:
        return False


def _load_applied_profile(path: Path, _seen: tuple[str, ...]) -> Config:
    where = str(path)
    data = _read_toml(read_toml_text(config_file(path)), where)
    meta = data.get("meta")
    if not isinstance(meta, dict) or "config_id" not in meta:
        raise ConfigError(f"{where}: a profile on the search path is an applied profile and carries its "
                          "[meta] config_id; this file has none (write it with `ami-engine apply`, or pass "
                          "it with --config)")
    return parse_config(data, where, _seen)


def profile_text(name: str) -> str:
    """The TOML source of a profile found by name (search path, then built-ins)."""
    if name in PROFILE_NAMES:
        _refuse_shadow(name)
        return _profile_text(name)
    found = find_profile(name) if is_profile_name(name) else None
    if found is None:
        raise ConfigError(f"{name}: no such profile ({', '.join(PROFILE_NAMES)}, or on the search path)")
    return read_toml_text(found)
