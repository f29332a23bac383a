"""The engine's parameters: names, kinds, domains and the learning bounds.

This module is the one place that knows which parameters exist. Defaults live in the
`base` profile (profiles/base.toml); the seven learned parameters and their safety bounds
live in LEARNED_BOUNDS below. Everything else reads these two.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

# The seven parameters the offline loop may change, with the bounds it must respect
# (docs/engine.md §14). Order is the canonical order used in files and arrays.
LEARNED_BOUNDS: dict[str, tuple[float, float]] = {
    "J_MIN": (0.50, 0.95),
    "H_MAX": (0.15, 0.50),
    "SOFT_CLAMP_ALPHA": (0.3, 0.9),
    "SOFT_CLAMP_BETA": (0.3, 0.9),
    "SOFT_CLAMP_GAMMA": (0.2, 0.6),
    "DELTA_CUS_THRESHOLD": (0.05, 0.25),
    "CUS_MEAN_THRESHOLD": (0.50, 0.85),
}
LEARNED_PARAMS: tuple[str, ...] = tuple(LEARNED_BOUNDS)


class ConfigError(InputError):
    """A config value is unknown, of the wrong type or outside its domain."""


def _unit(name: str, v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name}: {v!r} is outside its domain [0, 1]")


def _positive(name: str, v: float) -> None:
    if not v > 0.0:
        raise ConfigError(f"{name}: {v!r} must be > 0")


def _cus_weights(name: str, v: tuple[float, ...]) -> None:
    if len(v) != 3 or any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-9:
        raise ConfigError(f"{name}: {list(v)!r} must be three non-negative numbers summing to 1")


def _score_weights(name: str, v: tuple[float, ...]) -> None:
    if len(v) != 4 or any(x < 0 for x in v):
        raise ConfigError(f"{name}: {list(v)!r} must be four non-negative numbers")


def _window(name: str, v: int) -> None:
    # No upper bound: the engine keeps at most as many values per stream as the stream has
    # decisions, so a window longer than any stream costs nothing more.
    if v < 1:
        raise ConfigError(f"{name}: {v!r} must be an integer >= 1")


def _grid(name: str, v: tuple[float, ...]) -> None:
    if not v or any(not 0.0 <= x <= 1.0 for x in v) or any(b <= a for a, b in zip(v, v[1:])):
        raise ConfigError(f"{name}: {list(v)!r} must be strictly increasing values in [0, 1]")


def _action(name: str, v: tuple[float, ...]) -> None:
    if len(v) != 4 or any(not 0.0 <= x <= 1.0 for x in v):
        raise ConfigError(f"{name}: {list(v)!r} must be four values in [0, 1]")


@dataclass(frozen=True)
class ParamSpec:
    kind: str  # "float", "int", "floats"
    check: Any  # callable(name, value) raising ConfigError


PARAMS: dict[str, ParamSpec] = {
    "J_MIN": ParamSpec("float", _unit),
    "H_MAX": ParamSpec("float", _unit),
    "C_MIN": ParamSpec("float", _unit),
    "C_MAX": ParamSpec("float", _unit),
    "J_CRITICAL": ParamSpec("float", _unit),
    "H_CRITICAL": ParamSpec("float", _unit),
    "CONFIDENCE_ESCALATION_FORCE": ParamSpec("float", _unit),
    "DIVERGENCE_HARD_THRESHOLD": ParamSpec("float", _unit),
    "AS_SOFT_THRESHOLD": ParamSpec("float", _unit),
    "SIGMA_MAX": ParamSpec("float", _positive),
    "CONFIDENCE_MARGIN_K": ParamSpec("float", _positive),
    "UNCERTAINTY_MARGIN_K": ParamSpec("float", _positive),
    "UNCERTAINTY_AS_LAMBDA": ParamSpec("float", _positive),
    "DE_TEMPERATURE": ParamSpec("float", _positive),
    "CUS_WEIGHTS": ParamSpec("floats", _cus_weights),
    "SCORE_WEIGHTS": ParamSpec("floats", _score_weights),
    "SOFT_CLAMP_ALPHA": ParamSpec("float", _unit),
    "SOFT_CLAMP_BETA": ParamSpec("float", _unit),
    "SOFT_CLAMP_GAMMA": ParamSpec("float", _unit),
    "DELTA_CUS_THRESHOLD": ParamSpec("float", _unit),
    "CUS_MEAN_WINDOW": ParamSpec("int", _window),
    "CUS_MEAN_THRESHOLD": ParamSpec("float", _unit),
    "ACTION_GRID": ParamSpec("floats", _grid),
    "SAFE_ACTION": ParamSpec("floats", _action),
}

# The config row the engine's compiled kernels read (Config.kernel_row writes it): each
# parameter with the number of floats it takes, in row order. ROW_OFFSET[name] is where a
# parameter starts; ROW_LEN is the row's length. The one definition of the layout.
KERNEL_ROW: tuple[tuple[str, int], ...] = (
    ("J_MIN", 1),
    ("H_MAX", 1),
    ("C_MIN", 1),
    ("C_MAX", 1),
    ("J_CRITICAL", 1),
    ("H_CRITICAL", 1),
    ("CONFIDENCE_ESCALATION_FORCE", 1),
    ("DIVERGENCE_HARD_THRESHOLD", 1),
    ("AS_SOFT_THRESHOLD", 1),
    ("SIGMA_MAX", 1),
    ("CONFIDENCE_MARGIN_K", 1),
    ("UNCERTAINTY_MARGIN_K", 1),
    ("UNCERTAINTY_AS_LAMBDA", 1),
    ("DE_TEMPERATURE", 1),
    ("SOFT_CLAMP_ALPHA", 1),
    ("SOFT_CLAMP_BETA", 1),
    ("SOFT_CLAMP_GAMMA", 1),
    ("DELTA_CUS_THRESHOLD", 1),
    ("CUS_MEAN_THRESHOLD", 1),
    ("CUS_MEAN_WINDOW", 1),
    ("CUS_WEIGHTS", 3),
    ("SAFE_ACTION", 4),
)
ROW_OFFSET: dict[str, int] = dict(zip([name for name, _ in KERNEL_ROW],
                                      itertools.accumulate([width for _, width in KERNEL_ROW], initial=0)))
ROW_LEN: int = sum(width for _, width in KERNEL_ROW)


def coerce_value(name: str, raw: Any) -> Any:
    """Turn a TOML/JSON value into the parameter's canonical Python type, or raise."""
    spec = PARAMS.get(name)
    if spec is None:
        raise ConfigError(f"{name}: unknown parameter")

    def number(x: Any) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {x!r}")
        v = float(x)
        if not math.isfinite(v):
            raise ConfigError(f"{name}: {x!r} is not a finite number")
        return v

    if spec.kind == "float":
        value: Any = number(raw)
    elif spec.kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        value = int(raw)
    else:
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{name}: expected a list of numbers, got {raw!r}")
        value = tuple(number(x) for x in raw)
    spec.check(name, value)
    return value
