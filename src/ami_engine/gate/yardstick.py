"""What a baseline is judged against: a suggestion never chooses its own yardstick.

The gate's bounds check holds every parameter learning does not touch to the baseline's
value. The baseline itself may be any config file, so its own non-learned parameters are
judged against a trusted config: the nearest one along its `extends` chain that is a
built-in profile (shipped with the tool) or an applied profile whose audit record matches
its bytes (audit.py) and that is no weaker than some built-in (a log line alone could be
forged); `base` when there is none. A baseline that is weaker than that
config in any of them is refused by name (BaselineRefused, exit code 2). The yardstick's
figures on the critical set also bound the critical floor (CriticalFloor.anchor), so a
baseline with loose learned thresholds cannot lower it either.

`chaos_tuning`, a built-in made permissive on purpose for chaos experiments (its hard
floors are below every other profile's), is no yardstick: a baseline that extends it is
judged against the profile it extends, `base`, and so refused.

"Weaker" per parameter (docs/engine.md §4-8): a lower J_CRITICAL,
CONFIDENCE_ESCALATION_FORCE, AS_SOFT_THRESHOLD or C_MIN, or a higher H_CRITICAL,
DIVERGENCE_HARD_THRESHOLD, C_MAX or SIGMA_MAX, lets more decisions through without an
escalation. The other non-learned parameters (SAFE_ACTION, ACTION_GRID, the weights, the
margins, the temperature, the drift window) have no safer side: any change is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import LEARNED_BOUNDS, PARAMS, PROFILE_NAMES, Config, ConfigError, load_config
from ..config.loader import _relative_to
from .audit import audit_record

# parameter -> the side that is at least as safe: "min" = must be >= the yardstick's,
# "max" = must be <= it. Every other non-learned parameter must be equal.
SAFER_SIDE: dict[str, str] = {
    "J_CRITICAL": "min",
    "H_CRITICAL": "max",
    "CONFIDENCE_ESCALATION_FORCE": "min",
    "DIVERGENCE_HARD_THRESHOLD": "max",
    "AS_SOFT_THRESHOLD": "min",
    "C_MIN": "min",
    "C_MAX": "max",
    "SIGMA_MAX": "max",
}
_MAX_DEPTH = 64
# Built-in profiles for experiments, never a yardstick (see the module's text).
NOT_YARDSTICKS = frozenset({"chaos_tuning"})


class BaselineRefused(ConfigError):
    """The baseline weakens a parameter learning never touches (exit code 2)."""


@dataclass(frozen=True)
class Yardstick:
    config: Config
    label: str  # "built-in profile base", "applied profile FILE (audited in LOG)"


def yardstick_for(baseline: Config) -> Yardstick:
    """The trusted config the baseline is judged against (see the module's text)."""
    current = baseline
    for _ in range(_MAX_DEPTH):
        source = current.source
        if source in PROFILE_NAMES and source not in NOT_YARDSTICKS:
            return Yardstick(load_config(source), f"built-in profile {source}")
        if source in PROFILE_NAMES:  # one for experiments: the profile it extends judges it
            current = load_config(current.extends or "base")
            continue
        path = Path(source)
        if not path.is_file():  # a config made in memory: judged against base
            break
        found = audit_record(path)
        if found is not None:
            applied = load_config(str(path))
            if _within_a_built_in(applied):
                return Yardstick(applied, f"applied profile {path} (audited in {found[1]})")
        if current.extends is None:
            break
        current = load_config(_relative_to(current.extends, source))
    return Yardstick(load_config("base"), "built-in profile base")


def weakened(baseline: Config, reference: Config) -> list[str]:
    """Each non-learned parameter in which the baseline is weaker than the reference."""
    problems = []
    for name in PARAMS:
        if name in LEARNED_BOUNDS:
            continue
        ours, theirs = baseline[name], reference[name]
        side = SAFER_SIDE.get(name)
        if side == "min" and ours < theirs:
            problems.append(f"{name} = {_plain(ours)} is lower than {_plain(theirs)}")
        elif side == "max" and ours > theirs:
            problems.append(f"{name} = {_plain(ours)} is higher than {_plain(theirs)}")
        elif side is None and ours != theirs:
            problems.append(f"{name} = {_plain(ours)} differs from {_plain(theirs)}")
    return problems


def _within_a_built_in(applied: Config) -> bool:
    """An audit log is a file like any other, so a matching line alone could be forged.
    What `apply` guarantees is transitive: a profile it wrote keeps its baseline's
    non-learned parameters, and that baseline was no weaker than its own yardstick, down
    to a built-in profile. So a genuine applied profile is no weaker than some built-in;
    one that is weaker in a parameter than every built-in is no yardstick, whatever its
    log says."""
    return any(not weakened(applied, load_config(name)) for name in PROFILE_NAMES if name not in NOT_YARDSTICKS)


def check_baseline(baseline: Config) -> Yardstick:
    """The yardstick of an acceptable baseline; BaselineRefused naming every weakened
    parameter otherwise."""
    stick = yardstick_for(baseline)
    problems = weakened(baseline, stick.config)
    if problems:
        raise BaselineRefused(f"baseline {baseline.source}: weaker than the {stick.label} it is judged against: "
                              + "; ".join(problems) + " (the hard floors and other parameters learning never "
                              "touches may not be weakened)")
    return stick


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
